//! A connection's end user and tags, as the original's public API takes
//! them (`end_user` and `tags` on `POST /connections`, `PATCH
//! /connections/:id`) and filters on them (`GET /connections?endUserId=`,
//! `tags[key]=value`). The end user is kept on its connection (the
//! original keeps end users apart and links them); the tags are what the
//! original's are: at most ten, keys lowercased, and an end user's fields
//! made into tags (`end_user_id`, `end_user_email`,
//! `end_user_display_name`, then the end user's own tags).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub type Tags = BTreeMap<String, String>;

const TAG_MAX_COUNT: usize = 10;
const TAG_KEY_MAX: usize = 64;
const TAG_VALUE_MAX: usize = 255;

/// The original's rule for a tag key; the message is its own.
pub(crate) fn key_problem(key: &str) -> Option<String> {
    let mut chars = key.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter || !chars.all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c)) {
        return Some(format!(
            "tag key `{key}`: Tag keys must start with a letter and contain only alphanumerics, underscores, hyphens, periods, or slashes"
        ));
    }
    if key.chars().count() > TAG_KEY_MAX {
        return Some(format!(
            "tag key `{key}`: Tag keys must be at most {TAG_KEY_MAX} characters"
        ));
    }
    None
}

/// An address as the original's (zod's) check takes one, near enough: one
/// `@`, no spaces, a dotted domain.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.chars().count() >= 5
        && !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
}

/// The checks both tag sets share: the count, keys equal but for case,
/// and `end_user_email` an address.
fn case_insensitive_problems(tags: &Map<String, Value>, what: &str) -> Result<(), String> {
    if tags.len() > TAG_MAX_COUNT {
        return Err(format!(
            "{what}: Tags cannot contain more than {TAG_MAX_COUNT} keys"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (key, value) in tags {
        let lower = key.to_lowercase();
        if !seen.insert(lower.clone()) {
            return Err(format!(
                "{what}: Duplicate tag key after case normalization: \"{lower}\""
            ));
        }
        if lower == "end_user_email" && !value.as_str().is_some_and(is_email) {
            return Err(format!(
                "{what}: Tag \"end_user_email\" must be a valid email"
            ));
        }
    }
    Ok(())
}

/// A connection's `tags`: an object of at most ten keys, each a letter
/// then letters, digits and `_-./` (64 at most), each value a string of 1
/// to 255 characters. Keys are kept lowercase, as the original keeps them.
pub fn parse_tags(value: &Value) -> Result<Tags, String> {
    let Value::Object(map) = value else {
        return Err(format!("`tags` must be an object of strings, got {value}"));
    };
    for (key, v) in map {
        if let Some(problem) = key_problem(key) {
            return Err(format!("`tags`: {problem}"));
        }
        match v {
            Value::String(s) if (1..=TAG_VALUE_MAX).contains(&s.chars().count()) => {}
            Value::String(_) => {
                return Err(format!(
                    "`tags`: the value of `{key}` must be 1 to {TAG_VALUE_MAX} characters"
                ));
            }
            other => {
                return Err(format!(
                    "`tags`: the value of `{key}` must be a string, got {other}"
                ));
            }
        }
    }
    case_insensitive_problems(map, "`tags`")?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap_or_default().to_string()))
        .collect())
}

/// An `end_user`: `{id, email?, display_name?, tags?}` and nothing else;
/// `id` 1 to 255 characters, `email` an address, `display_name` at most
/// 255, `tags` as a connection's but values up to 255 characters, empty
/// allowed, and keys kept as given. Returned as given.
pub fn parse_end_user(value: &Value) -> Result<Value, String> {
    let Value::Object(map) = value else {
        return Err(format!("`end_user` must be an object, got {value}"));
    };
    let string = |field: &str| -> Result<Option<&str>, String> {
        match map.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("`end_user.{field}` must be a string, got {other}")),
        }
    };
    for key in map.keys() {
        if !["id", "email", "display_name", "tags"].contains(&key.as_str()) {
            return Err(format!(
                "`end_user` has an unknown field `{key}` (it takes id, email, display_name and tags)"
            ));
        }
    }
    match string("id")? {
        Some(id) if (1..=255).contains(&id.chars().count()) => {}
        Some(_) => return Err("`end_user.id` must be 1 to 255 characters".into()),
        None => return Err("`end_user.id` is required".into()),
    }
    if let Some(email) = string("email")?
        && !is_email(email)
    {
        return Err(format!(
            "`end_user.email` must be a valid email, got `{email}`"
        ));
    }
    if let Some(name) = string("display_name")?
        && name.chars().count() > 255
    {
        return Err("`end_user.display_name` must be at most 255 characters".into());
    }
    match map.get("tags") {
        None => {}
        Some(Value::Object(tags)) => {
            for (key, v) in tags {
                if let Some(problem) = key_problem(key) {
                    return Err(format!("`end_user.tags`: {problem}"));
                }
                match v {
                    Value::String(s) if s.chars().count() <= TAG_VALUE_MAX => {}
                    _ => {
                        return Err(format!(
                            "`end_user.tags`: the value of `{key}` must be a string of at most {TAG_VALUE_MAX} characters"
                        ));
                    }
                }
            }
            case_insensitive_problems(tags, "`end_user.tags`")?;
        }
        Some(other) => {
            return Err(format!(
                "`end_user.tags` must be an object of strings, got {other}"
            ));
        }
    }
    Ok(value.clone())
}

fn truncated(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The tags the original makes from an end user: its id, email and
/// display name, then its own tags (lowercased and cut to length; those
/// whose key is not a tag key, or whose value is not a string, are
/// skipped; they may replace the first three). When those would be more
/// than ten, or are not valid tags (an empty value, an `end_user_email`
/// that is not an address), the first three only.
pub fn tags_from_end_user(end_user: &Value) -> Tags {
    let mut base = Tags::new();
    for (field, tag) in [
        ("id", "end_user_id"),
        ("email", "end_user_email"),
        ("display_name", "end_user_display_name"),
    ] {
        if let Some(v) = end_user.get(field).and_then(Value::as_str)
            && !v.is_empty()
        {
            base.insert(tag.into(), truncated(v, TAG_VALUE_MAX));
        }
    }
    let mut all = base.clone();
    if let Some(own) = end_user.get("tags").and_then(Value::as_object) {
        for (key, v) in own {
            let key = truncated(&key.to_lowercase(), TAG_KEY_MAX);
            let Some(v) = v.as_str() else {
                continue;
            };
            if key_problem(&key).is_none() {
                all.insert(key, truncated(v, TAG_VALUE_MAX));
            }
        }
    }
    let valid = all.len() <= TAG_MAX_COUNT
        && all.values().all(|v| !v.is_empty())
        && all.get("end_user_email").is_none_or(|e| is_email(e));
    if valid { all } else { base }
}

/// What a request gives: the end user's tags, then its own on top, as
/// the original merges them; more than ten in all is refused.
pub fn merged(end_user: Option<&Value>, tags: Option<Tags>) -> Result<Tags, String> {
    let mut all = end_user.map(tags_from_end_user).unwrap_or_default();
    all.extend(tags.unwrap_or_default());
    if all.len() > TAG_MAX_COUNT {
        return Err(format!(
            "`tags`: with those made from `end_user` there would be {} tags, more than {TAG_MAX_COUNT}",
            all.len()
        ));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_are_checked_and_lowercased() {
        let t = parse_tags(&json!({"Team": "Core", "region.eu/1": "x"})).unwrap();
        assert_eq!(t["team"], "Core");
        assert_eq!(t["region.eu/1"], "x");
        for bad in [
            json!({"1abc": "x"}),
            json!({"a b": "x"}),
            json!({"a": ""}),
            json!({"a": 1}),
            json!({"a": "x", "A": "y"}),
            json!({"end_user_email": "nope"}),
            json!(
                (0..11)
                    .map(|i| (format!("k{i}"), json!("v")))
                    .collect::<Map<_, _>>()
            ),
            json!({"k".repeat(65): "v"}),
            json!(["a"]),
        ] {
            assert!(parse_tags(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_end_user_is_checked() {
        assert!(parse_end_user(&json!({"id": "u1", "email": "u@example.com", "display_name": "U", "tags": {"Plan": ""}})).is_ok());
        for bad in [
            json!({}),
            json!({"id": ""}),
            json!({"id": "u", "email": "u@x"}),
            json!({"id": "u", "organization": {"id": "o"}}),
            json!({"id": "u", "tags": {"9": "x"}}),
            json!({"id": 3}),
        ] {
            assert!(parse_end_user(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_end_user_makes_tags_as_the_original() {
        let u = json!({"id": "u1", "email": "u@example.com", "tags": {"Plan": "pro", "end_user_id": "other", "9bad": "x"}});
        let t = tags_from_end_user(&u);
        assert_eq!(
            t,
            Tags::from([
                ("end_user_email".into(), "u@example.com".into()),
                ("end_user_id".into(), "other".into()),
                ("plan".into(), "pro".into()),
            ])
        );
        // An empty value, or an address that is not one: the first ones
        // only.
        let base = Tags::from([
            ("end_user_email".into(), "u@example.com".into()),
            ("end_user_id".into(), "u1".into()),
        ]);
        for own in [json!({"plan": ""}), json!({"end_user_email": "nope"})] {
            let u = json!({"id": "u1", "email": "u@example.com", "tags": own});
            assert_eq!(tags_from_end_user(&u), base, "{own}");
        }
        // Too many with its own: the first ones only.
        let many: Map<String, Value> = (0..9).map(|i| (format!("k{i}"), json!("v"))).collect();
        let u = json!({"id": "u1", "email": "u@example.com", "tags": many});
        assert_eq!(tags_from_end_user(&u).len(), 2);
        // The request's tags win over the end user's.
        let t = merged(
            Some(&json!({"id": "u1"})),
            Some(Tags::from([("end_user_id".into(), "mine".into())])),
        )
        .unwrap();
        assert_eq!(t["end_user_id"], "mine");
    }
}
