//! JavaScript's view of JSON values, where the original platform's behaviour
//! depends on it: `String(value)` for query parameters and `JSON.stringify`
//! for the request identities recorded mocks are named by.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// A number as JavaScript prints it (`1`, `1.5`, `1e+21`, `1e-7`).
pub fn number(n: &Number) -> String {
    // Past 2^53 JavaScript only has the nearest double.
    const EXACT: u64 = 1 << 53;
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT) {
        return i.to_string();
    }
    if let Some(i) = n.as_i64() {
        return format_f64(i as f64);
    }
    if let Some(u) = n.as_u64() {
        // Past 2^53 JavaScript only has the nearest double.
        return format_f64(u as f64);
    }
    format_f64(n.as_f64().unwrap_or(f64::NAN))
}

fn format_f64(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    let mut buffer = ryu_js::Buffer::new();
    buffer.format(f).to_string()
}

/// `String(value)`: strings as they are, numbers as JavaScript prints them,
/// arrays joined with `,`, objects as `[object Object]`.
pub fn to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => s.clone(),
        // Array.prototype.join prints null (and undefined) as nothing.
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => to_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// `JSON.stringify(value)` without spacing. Object keys keep their order
/// (serde_json's `preserve_order`); strings are escaped as JavaScript does,
/// which is also serde_json's escaping.
pub fn stringify(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => out.push_str(&number(n)),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A string's `.length`: UTF-16 code units.
pub fn length(s: &str) -> usize {
    s.encode_utf16().count()
}

/// JavaScript's `a < b` on strings: UTF-16 code unit order.
pub fn compare(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_like_javascript() {
        let cases = [
            (json!(1), "1"),
            (json!(-3), "-3"),
            (json!(1.5), "1.5"),
            (json!(1e21), "1e+21"),
            (json!(1e20), "100000000000000000000"),
            (json!(1e-7), "1e-7"),
            (json!(0.000001), "0.000001"),
            (json!(100.0), "100"),
            (json!(9007199254740993_i64), "9007199254740992"),
            (json!(-9007199254740993_i64), "-9007199254740992"),
            (json!(1234567890123456789_u64), "1234567890123456800"),
        ];
        for (v, expected) in cases {
            assert_eq!(to_string(&v), expected, "{v}");
        }
    }

    #[test]
    fn string_of_arrays_and_objects() {
        assert_eq!(to_string(&json!(["a", 1, null, true])), "a,1,,true");
        assert_eq!(to_string(&json!({"a": 1})), "[object Object]");
    }

    #[test]
    fn stringify_keeps_key_order_and_escapes() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":[1.0,"x\n\"y\"",null],"é":{"z":2e21}}"#).unwrap();
        assert_eq!(
            stringify(&v),
            r#"{"b":1,"a":[1,"x\n\"y\"",null],"é":{"z":2e+21}}"#
        );
    }

    #[test]
    fn length_and_order_are_utf16() {
        assert_eq!(length("a😀"), 3);
        // U+FF5E sorts after U+1F600 by code point, before it in UTF-16.
        assert_eq!(compare("\u{FF5E}", "😀"), Ordering::Greater);
        assert_eq!(compare("a", "b"), Ordering::Less);
    }
}
