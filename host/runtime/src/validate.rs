//! Validation of records and action input/output against the models' JSON
//! schema: the draft-07 keywords nango.yaml's models generate (`type`,
//! `properties`, `required`, `additionalProperties`, `items`, `anyOf`,
//! `const`, `not`, `format: date-time`, local `$ref`s) and those zod 4's
//! conversion adds for zero-yaml models (`enum`, `allOf`, `oneOf`, type
//! lists, tuples, `propertyNames`, numeric and length bounds, `pattern`,
//! the formats `date`, `email` and `uuid`), with ajv's messages. A keyword
//! it does not know, or a `pattern` the `regex` crate cannot compile
//! (look-around), is not checked: it never reports a value the original
//! would accept.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

/// The models' schemas and whether a violation fails the call.
#[derive(Debug, Clone)]
pub struct Validation {
    /// `definitions` of the generated schema, by model name.
    definitions: Map<String, Value>,
    /// Every `pattern` in them, compiled once (`None`: not checked).
    patterns: HashMap<String, Option<Regex>>,
    /// Violations are errors (`--validation`) instead of warnings.
    pub strict: bool,
}

/// How deep `$ref`s may nest before a schema counts as cyclic for a value.
const MAX_DEPTH: usize = 64;

/// A check's work is bounded by the value's size: schema steps per JSON
/// value in it, plus a floor. Without a bound, `anyOf` options that refer
/// back to their own model (`next: Node | Node | Node`) try every option at
/// every level, 3^depth steps, and one record would hold a thread for
/// hours; a model's schema costs a step or a few per value.
const STEPS_PER_VALUE: usize = 64;
const MIN_STEPS: usize = 4_096;

/// What a check may still spend, and whether it ran out.
struct Steps {
    left: usize,
    ran_out: bool,
    /// [`MAX_ERRORS`] were found with values left to check.
    capped: bool,
    /// A part of the schema was not checked (a keyword or format this
    /// validator does not know, a pattern it cannot compile, the depth
    /// cap): a probe that found no violation then decides nothing.
    unsure: bool,
}

/// The number of JSON values in `value` (itself included), without
/// recursion.
fn value_count(value: &Value) -> usize {
    let mut count = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    count
}

impl Validation {
    /// From a generated schema document (its `definitions`).
    pub fn new(schema: &Value, strict: bool) -> Self {
        let definitions = schema
            .get("definitions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut patterns = HashMap::new();
        let mut stack: Vec<&Value> = definitions.values().collect();
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(p)) = o.get("pattern") {
                        patterns
                            .entry(p.clone())
                            .or_insert_with(|| compile_pattern(p));
                    }
                    stack.extend(o.values());
                }
                Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        Self {
            definitions,
            patterns,
            strict,
        }
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.definitions.contains_key(model)
    }

    /// The violations of `value` against `model` (empty when it is valid or
    /// the model has no schema), each as `<path> <problem>`: the first
    /// [`MAX_ERRORS`], then a line saying checking stopped.
    pub fn check(&self, model: &str, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(schema) = self.definitions.get(model) {
            let budget = STEPS_PER_VALUE
                .saturating_mul(value_count(value))
                .saturating_add(MIN_STEPS);
            let mut steps = Steps {
                left: budget,
                ran_out: false,
                capped: false,
                unsure: false,
            };
            self.visit(
                schema,
                value,
                &Path::Root,
                0,
                false,
                &mut steps,
                &mut errors,
            );
            if steps.capped || errors.len() > MAX_ERRORS {
                errors.truncate(MAX_ERRORS);
                errors.push(format!(
                    "/ has at least {MAX_ERRORS} violations: checking stopped there"
                ));
            } else if steps.ran_out {
                errors.push(format!(
                    "/ could not be checked: the schema is too complex for this value \
                     (more than {budget} steps; `anyOf` options within `anyOf` options)"
                ));
            }
        }
        errors
    }

    /// Checks `value` against `schema`. A `probe` (an `anyOf`, `oneOf` or
    /// `not` option being tried) stops at its first violation: only
    /// whether it has any counts.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &self,
        schema: &Value,
        value: &Value,
        path: &Path<'_>,
        depth: usize,
        probe: bool,
        steps: &mut Steps,
        out: &mut Vec<String>,
    ) {
        let Some(schema) = schema.as_object() else {
            return;
        };
        if probe && !out.is_empty() {
            return;
        }
        if out.len() >= MAX_ERRORS {
            steps.capped = true;
            return;
        }
        if depth > MAX_DEPTH {
            steps.unsure = true;
            return;
        }
        if steps.left == 0 {
            steps.ran_out = true;
            steps.unsure = true;
            return;
        }
        steps.left -= 1;
        // One pass over the schema's keys (most have one to four).
        let k = Keywords::of(schema);
        if k.unknown {
            steps.unsure = true;
        }
        let at = |p: &Path<'_>| p.at();
        if let Some(Value::String(r)) = k.reference {
            if let Some(target) = r
                .strip_prefix("#/definitions/")
                .and_then(|name| self.definitions.get(name))
            {
                self.visit(target, value, path, depth + 1, probe, steps, out);
            }
            return;
        }
        if let Some(Value::Array(options)) = k.any_of {
            let fits = options
                .iter()
                .any(|o| self.fits(o, value, path, depth, steps) != Some(false));
            if !fits {
                out.push(format!("{} must match a schema in anyOf", at(path)));
            }
            return;
        }
        if let Some(not) = k.not
            && self.fits(not, value, path, depth, steps) == Some(true)
        {
            out.push(format!("{} must NOT be valid", at(path)));
            return;
        }
        match k.kind {
            Some(Value::String(t)) if !has_type(value, t) => {
                out.push(format!("{} must be {t}", at(path)));
                return;
            }
            Some(Value::Array(types))
                if !types
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|t| has_type(value, t)) =>
            {
                let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                out.push(format!("{} must be {}", at(path), names.join(",")));
                return;
            }
            _ => {}
        }
        if let Some(c) = k.constant
            && !same(c, value)
        {
            out.push(format!("{} must be equal to constant {c}", at(path)));
        }
        if let Some(Value::Array(allowed)) = k.allowed
            && !allowed.iter().any(|a| same(a, value))
        {
            out.push(format!(
                "{} must be equal to one of the allowed values",
                at(path)
            ));
        }
        if let Some(n) = value.as_f64() {
            check_number(&k, n, path, out);
        }
        if let Some(s) = value.as_str() {
            self.check_string(&k, s, path, steps, out);
        }
        if let Some(Value::Array(all)) = k.all_of {
            for s in all {
                self.visit(s, value, path, depth + 1, probe, steps, out);
            }
        }
        if let Some(Value::Array(options)) = k.one_of {
            let mut fitting = 0;
            let mut unsure = false;
            for o in options {
                match self.fits(o, value, path, depth, steps) {
                    Some(true) => fitting += 1,
                    Some(false) => {}
                    None => unsure = true,
                }
            }
            // An option that could not be told apart might be the one.
            if fitting > 1 || (fitting == 0 && !unsure) {
                out.push(format!(
                    "{} must match exactly one schema in oneOf",
                    at(path)
                ));
            }
        }
        if probe && !out.is_empty() {
            return;
        }
        if let Value::Array(values) = value {
            let count = values.len() as f64;
            if let Some(min) = k.min_items.and_then(Value::as_f64)
                && count < min
            {
                out.push(format!(
                    "{} must NOT have fewer than {} items",
                    at(path),
                    number(min)
                ));
            }
            if let Some(max) = k.max_items.and_then(Value::as_f64)
                && count > max
            {
                out.push(format!(
                    "{} must NOT have more than {} items",
                    at(path),
                    number(max)
                ));
            }
            // `items` is one schema for every element, or (a tuple) one
            // per position, the rest checked against `additionalItems`.
            for (i, v) in values.iter().enumerate() {
                let item = match k.items {
                    Some(Value::Array(positions)) => match positions.get(i) {
                        Some(s) => Some(s),
                        None => match k.additional_items {
                            Some(Value::Bool(false)) => {
                                out.push(format!(
                                    "{} must NOT have more than {} items",
                                    at(path),
                                    positions.len()
                                ));
                                break;
                            }
                            extra => extra,
                        },
                    },
                    items => items,
                };
                if let Some(item) = item {
                    self.visit(item, v, &Path::Index(path, i), depth + 1, probe, steps, out);
                }
                if probe && !out.is_empty() {
                    return;
                }
                if out.len() >= MAX_ERRORS {
                    steps.capped |= i + 1 < values.len();
                    return;
                }
            }
        }
        if let Value::Object(fields) = value {
            if let Some(names) = k.property_names {
                for name in fields.keys() {
                    let key = Value::String(name.clone());
                    if self.fits(names, &key, path, depth, steps) == Some(false) {
                        out.push(format!(
                            "{} property name '{}' must be valid",
                            at(path),
                            shown_key(name)
                        ));
                        if probe {
                            return;
                        }
                        if out.len() >= MAX_ERRORS {
                            steps.capped = true;
                            return;
                        }
                    }
                }
            }
            let properties = k.properties.and_then(Value::as_object);
            if let Some(Value::Array(required)) = k.required {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        out.push(format!("{} must have required property '{name}'", at(path)));
                    }
                }
            }
            for (n, (key, v)) in fields.iter().enumerate() {
                let here = Path::Key(path, key);
                match properties.and_then(|p| p.get(key)) {
                    Some(s) => self.visit(s, v, &here, depth + 1, probe, steps, out),
                    None => match k.additional_properties {
                        Some(Value::Bool(false)) => out.push(format!(
                            "{} must NOT have additional properties: '{}'",
                            at(path),
                            shown_key(key)
                        )),
                        Some(extra @ Value::Object(_)) => {
                            self.visit(extra, v, &here, depth + 1, probe, steps, out)
                        }
                        _ => {}
                    },
                }
                if probe && !out.is_empty() {
                    return;
                }
                if out.len() >= MAX_ERRORS {
                    steps.capped |= n + 1 < fields.len();
                    return;
                }
            }
        }
    }

    /// Whether `value` fits `schema`: `None` when a part of the schema this
    /// validator does not check decided nothing (so the caller neither
    /// counts it as a match nor as a mismatch).
    fn fits(
        &self,
        schema: &Value,
        value: &Value,
        path: &Path<'_>,
        depth: usize,
        steps: &mut Steps,
    ) -> Option<bool> {
        let outer = std::mem::take(&mut steps.unsure);
        let mut e = Vec::new();
        self.visit(schema, value, path, depth + 1, true, steps, &mut e);
        let unsure = std::mem::replace(&mut steps.unsure, outer);
        if !e.is_empty() {
            Some(false)
        } else if unsure {
            steps.unsure = true;
            None
        } else {
            Some(true)
        }
    }

    /// `minLength`/`maxLength` (in code points, as ajv counts), `pattern`
    /// and `format`.
    fn check_string(
        &self,
        k: &Keywords<'_>,
        s: &str,
        path: &Path<'_>,
        steps: &mut Steps,
        out: &mut Vec<String>,
    ) {
        let min = k.min_length.and_then(Value::as_f64);
        let max = k.max_length.and_then(Value::as_f64);
        if min.is_some() || max.is_some() {
            let len = s.chars().count() as f64;
            if let Some(min) = min
                && len < min
            {
                out.push(format!(
                    "{} must NOT have fewer than {} characters",
                    path.at(),
                    number(min)
                ));
            }
            if let Some(max) = max
                && len > max
            {
                out.push(format!(
                    "{} must NOT have more than {} characters",
                    path.at(),
                    number(max)
                ));
            }
        }
        if let Some(Value::String(p)) = k.pattern {
            match self.patterns.get(p) {
                Some(Some(re)) if !re.is_match(s) => {
                    out.push(format!("{} must match pattern \"{p}\"", path.at()));
                }
                Some(Some(_)) => {}
                _ => steps.unsure = true,
            }
        }
        let Some(format) = k.format.and_then(Value::as_str) else {
            return;
        };
        let valid = match format {
            "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            "date" => s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            "email" => EMAIL.as_ref().is_none_or(|re| re.is_match(s)),
            "uuid" => UUID.as_ref().is_none_or(|re| re.is_match(s)),
            _ => {
                steps.unsure = true;
                true
            }
        };
        if !valid {
            out.push(format!("{} must match format \"{format}\"", path.at()));
        }
    }
}

/// The keywords of one schema object, found in one pass over its keys.
#[derive(Default)]
struct Keywords<'a> {
    reference: Option<&'a Value>,
    any_of: Option<&'a Value>,
    all_of: Option<&'a Value>,
    one_of: Option<&'a Value>,
    not: Option<&'a Value>,
    kind: Option<&'a Value>,
    constant: Option<&'a Value>,
    allowed: Option<&'a Value>,
    items: Option<&'a Value>,
    additional_items: Option<&'a Value>,
    min_items: Option<&'a Value>,
    max_items: Option<&'a Value>,
    properties: Option<&'a Value>,
    required: Option<&'a Value>,
    additional_properties: Option<&'a Value>,
    property_names: Option<&'a Value>,
    minimum: Option<&'a Value>,
    maximum: Option<&'a Value>,
    exclusive_minimum: Option<&'a Value>,
    exclusive_maximum: Option<&'a Value>,
    multiple_of: Option<&'a Value>,
    min_length: Option<&'a Value>,
    max_length: Option<&'a Value>,
    pattern: Option<&'a Value>,
    format: Option<&'a Value>,
    /// A keyword that constrains values and is not checked here
    /// (`uniqueItems`, `patternProperties`, `if`, …).
    unknown: bool,
}

impl<'a> Keywords<'a> {
    fn of(schema: &'a Map<String, Value>) -> Self {
        let mut k = Keywords::default();
        for (name, v) in schema {
            let slot = match name.as_str() {
                "$ref" => &mut k.reference,
                "anyOf" => &mut k.any_of,
                "allOf" => &mut k.all_of,
                "oneOf" => &mut k.one_of,
                "not" => &mut k.not,
                "type" => &mut k.kind,
                "const" => &mut k.constant,
                "enum" => &mut k.allowed,
                "items" => &mut k.items,
                "additionalItems" => &mut k.additional_items,
                "minItems" => &mut k.min_items,
                "maxItems" => &mut k.max_items,
                "properties" => &mut k.properties,
                "required" => &mut k.required,
                "additionalProperties" => &mut k.additional_properties,
                "propertyNames" => &mut k.property_names,
                "minimum" => &mut k.minimum,
                "maximum" => &mut k.maximum,
                "exclusiveMinimum" => &mut k.exclusive_minimum,
                "exclusiveMaximum" => &mut k.exclusive_maximum,
                "multipleOf" => &mut k.multiple_of,
                "minLength" => &mut k.min_length,
                "maxLength" => &mut k.max_length,
                "pattern" => &mut k.pattern,
                "format" => &mut k.format,
                // Annotations: they constrain nothing.
                "description" | "title" | "default" | "examples" | "$schema" | "$id"
                | "$comment" | "readOnly" | "writeOnly" | "deprecated" | "definitions"
                | "$defs" | "nullable" => continue,
                _ => {
                    k.unknown = true;
                    continue;
                }
            };
            *slot = Some(v);
        }
        k
    }
}

/// `minimum`, `maximum`, their exclusive forms (draft-07: numbers) and
/// `multipleOf`.
fn check_number(k: &Keywords<'_>, n: f64, path: &Path<'_>, out: &mut Vec<String>) {
    let bound = |v: Option<&Value>| v.and_then(Value::as_f64);
    if let Some(min) = bound(k.minimum)
        && n < min
    {
        out.push(format!("{} must be >= {}", path.at(), number(min)));
    }
    if let Some(max) = bound(k.maximum)
        && n > max
    {
        out.push(format!("{} must be <= {}", path.at(), number(max)));
    }
    if let Some(min) = bound(k.exclusive_minimum)
        && n <= min
    {
        out.push(format!("{} must be > {}", path.at(), number(min)));
    }
    if let Some(max) = bound(k.exclusive_maximum)
        && n >= max
    {
        out.push(format!("{} must be < {}", path.at(), number(max)));
    }
    if let Some(m) = bound(k.multiple_of)
        && m > 0.0
        && (n / m).fract() != 0.0
    {
        out.push(format!("{} must be multiple of {}", path.at(), number(m)));
    }
}

/// A schema's `pattern` as a regular expression, or `None` when the
/// `regex` crate cannot take it (JavaScript's look-around and
/// back-references) or it is too big.
fn compile_pattern(pattern: &str) -> Option<Regex> {
    regex::RegexBuilder::new(&ascii_classes(pattern)?)
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// `pattern` with `\d`, `\w` and their negations as JavaScript reads them
/// (ASCII, where the `regex` crate's are Unicode), or `None` for a negated
/// class inside brackets, which has no such spelling.
fn ascii_classes(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push(c);
                    break;
                };
                match (next, in_class) {
                    ('d', false) => out.push_str("[0-9]"),
                    ('d', true) => out.push_str("0-9"),
                    ('w', false) => out.push_str("[A-Za-z0-9_]"),
                    ('w', true) => out.push_str("A-Za-z0-9_"),
                    ('D', false) => out.push_str("[^0-9]"),
                    ('W', false) => out.push_str("[^A-Za-z0-9_]"),
                    ('D' | 'W', true) => return None,
                    _ => {
                        out.push(c);
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// ajv-formats' `email` (its full mode) and `uuid`.
static EMAIL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile_pattern(
        r"(?i)^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    )
});
static UUID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile_pattern(r"(?i)^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$")
});

/// A bound as JavaScript prints it (`1`, not `1.0`).
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_991.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// The most violations [`Validator::check`] lists: a value with thousands
/// (a long array of the wrong type) is told apart by the first few, and
/// listing them all would cost the host far more than the value.
pub const MAX_ERRORS: usize = 20;

/// The most characters of a key a violation shows (keys are the record's
/// own data in a map model, and may be as long as the record).
const MAX_KEY_SHOWN: usize = 100;

/// `key`, cut to [`MAX_KEY_SHOWN`] characters (with `…`).
fn shown_key(key: &str) -> std::borrow::Cow<'_, str> {
    match key.char_indices().nth(MAX_KEY_SHOWN) {
        Some((end, _)) => format!("{}…", &key[..end]).into(),
        None => key.into(),
    }
}

/// Where a value is in the record, written out only for a violation.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    /// `/a/0/b`, or `/` for the record itself.
    fn at(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, k) => {
                parent.write(out);
                out.push('/');
                out.push_str(&shown_key(k));
            }
            Path::Index(parent, i) => {
                parent.write(out);
                out.push('/');
                out.push_str(&i.to_string());
            }
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validation() -> Validation {
        Validation::new(
            &json!({"definitions": {
                "User": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "age": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                    "kind": {"type": "string", "const": "admin"},
                    "seen": {"type": "string", "format": "date-time"},
                    "team": {"$ref": "#/definitions/Team"},
                    "tags": {"type": "array", "items": {"type": "string"}}
                }, "required": ["id", "kind"], "additionalProperties": false},
                "Team": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": {}}
            }}),
            false,
        )
    }

    #[test]
    fn valid_records_pass() {
        let v = validation();
        let ok = json!({"id": "1", "kind": "admin", "age": null, "seen": "2024-01-01T00:00:00.000Z", "team": {"name": "x", "extra": 1}, "tags": ["a"]});
        assert_eq!(v.check("User", &ok), Vec::<String>::new());
        assert!(v.check("Unknown", &json!(1)).is_empty());
    }

    #[test]
    fn violations_name_their_path() {
        let v = validation();
        let bad = json!({"id": 1, "kind": "user", "age": "old", "seen": "yesterday", "team": {}, "tags": [1], "x": true});
        let errors = v.check("User", &bad);
        for expected in [
            "/id must be string",
            "/kind must be equal to constant \"admin\"",
            "/age must match a schema in anyOf",
            "/seen must match format \"date-time\"",
            "/team must have required property 'name'",
            "/tags/0 must be string",
            "/ must NOT have additional properties: 'x'",
        ] {
            assert!(
                errors.iter().any(|e| e == expected),
                "{expected} not in {errors:?}"
            );
        }
        assert_eq!(
            v.check("User", &json!({})),
            vec![
                "/ must have required property 'id'".to_string(),
                "/ must have required property 'kind'".to_string()
            ]
        );
    }

    /// What zod 4's conversion writes for zero-yaml models, with ajv's
    /// messages; what the `regex` crate cannot compile is not checked.
    /// A value with violations by the thousand (a long array of the wrong
    /// type under long keys of a map model) is told by its first ones,
    /// each naming its place in a bounded line.
    #[test]
    fn a_value_with_many_violations_lists_the_first_ones() {
        let v = Validation::new(
            &json!({"definitions": {"Input": {"type": "object", "properties": {
                "m": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            }}}}),
            false,
        );
        let key = "k".repeat(50_000);
        let bad = json!({"m": {key.clone(): vec![0; 20_000]}});
        let errors = v.check("Input", &bad);
        assert_eq!(errors.len(), MAX_ERRORS + 1, "{errors:?}");
        let shown = format!("/m/{}…/0 must be string", "k".repeat(MAX_KEY_SHOWN));
        assert_eq!(errors[0], shown);
        assert!(
            errors[MAX_ERRORS - 1].ends_with("/19 must be string"),
            "{errors:?}"
        );
        assert_eq!(
            errors[MAX_ERRORS],
            format!("/ has at least {MAX_ERRORS} violations: checking stopped there")
        );
        // Many violations of one value's keywords (required properties).
        let required: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
        let strict = Validation::new(
            &json!({"definitions": {"Many": {"type": "object", "required": required}}}),
            false,
        );
        assert_eq!(strict.check("Many", &json!({})).len(), MAX_ERRORS + 1);
        // Exactly as many as the cap: every one, nothing said stopped.
        let twenty = json!({"m": {"a": vec![0; MAX_ERRORS]}});
        assert_eq!(v.check("Input", &twenty).len(), MAX_ERRORS);
        // Fewer than the cap: every one, as before.
        let few = json!({"m": {"a": [0, "x", 1]}});
        assert_eq!(
            v.check("Input", &few),
            ["/m/a/0 must be string", "/m/a/2 must be string"]
        );
    }

    #[test]
    fn zod_keywords_are_checked() {
        let v = Validation::new(
            &json!({"definitions": {"Input": {"type": "object", "properties": {
                "count": {"type": "integer", "minimum": 1, "maximum": 9_007_199_254_740_991_u64},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25},
                "name": {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-zé]+$"},
                "mail": {"type": "string", "format": "email", "pattern": "^(?!\\.)(?!.*\\.\\.)[^@]+@.+$"},
                "id": {"type": "string", "format": "uuid"},
                "day": {"type": "string", "format": "date"},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "either": {"type": ["string", "null"]},
                "pair": {"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": false},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
                "labels": {"type": "object", "propertyNames": {"enum": ["x", "y"]}, "additionalProperties": {"type": "string"}},
                "both": {"allOf": [{"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]},
                "one": {"oneOf": [{"type": "string"}, {"type": "string", "minLength": 1}]},
                "never": {"not": {"type": "string"}}
            }}}}),
            false,
        );
        let good = json!({"count": 3, "ratio": 0.5, "name": "été", "mail": "a.b@example.com",
            "id": "123e4567-e89b-12d3-a456-426614174000", "day": "2024-02-29", "kind": "b",
            "either": null, "pair": ["a", 1], "tags": ["t"], "labels": {"x": "1"},
            "both": {"a": 1, "b": 2}, "one": "", "never": 1});
        assert_eq!(v.check("Input", &good), Vec::<String>::new());
        let bad = json!({"count": 0, "ratio": 1, "name": "ABCDE", "mail": "not-mail",
            "id": "123", "day": "2023-02-29", "kind": "c", "either": 1, "pair": ["a", 1, 2],
            "tags": [], "labels": {"z": "1"}, "both": {"a": 1}, "one": "x", "never": "s"});
        let errors = v.check("Input", &bad);
        for expected in [
            "/count must be >= 1",
            "/ratio must be < 1",
            "/name must NOT have more than 4 characters",
            "/name must match pattern \"^[a-zé]+$\"",
            "/mail must match format \"email\"",
            "/id must match format \"uuid\"",
            "/day must match format \"date\"",
            "/kind must be equal to one of the allowed values",
            "/either must be string,null",
            "/pair must NOT have more than 2 items",
            "/tags must NOT have fewer than 1 items",
            "/labels property name 'z' must be valid",
            "/both must have required property 'b'",
            "/one must match exactly one schema in oneOf",
            "/never must NOT be valid",
        ] {
            assert!(
                errors.iter().any(|e| e == expected),
                "{expected} not in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 15, "{errors:#?}");
        let more = v.check("Input", &json!({"count": 1.5, "ratio": 0.3, "name": "a"}));
        assert_eq!(
            more,
            vec![
                "/count must be integer".to_string(),
                "/ratio must be multiple of 0.25".to_string(),
                "/name must NOT have fewer than 2 characters".to_string(),
            ]
        );
    }

    #[test]
    fn digit_and_word_classes_are_javascripts() {
        assert_eq!(
            ascii_classes(r"^\d+[\w-]$").as_deref(),
            Some(r"^[0-9]+[A-Za-z0-9_-]$")
        );
        assert_eq!(ascii_classes(r"\D\\d").as_deref(), Some(r"[^0-9]\\d"));
        assert_eq!(ascii_classes(r"[\D]"), None);
        let re = compile_pattern(r"^\d+$").unwrap();
        assert!(
            re.is_match("123") && !re.is_match("١٢٣"),
            "Arabic-Indic digits are not \\d in JS"
        );
    }

    /// `not` and `oneOf` decide nothing on what this validator cannot
    /// check: no violation is reported that ajv might not report.
    #[test]
    fn what_is_not_checked_reports_nothing_through_not_and_one_of() {
        let v = Validation::new(
            &json!({"definitions": {"M": {"type": "object", "properties": {
                "a": {"not": {"type": "string", "pattern": "(?=x)"}},
                "b": {"not": {"type": "array", "uniqueItems": true}},
                "c": {"oneOf": [{"type": "string", "format": "hostname"}, {"type": "string", "minLength": 1}]},
                "d": {"not": {"type": "string"}},
                "e": {"oneOf": [{"type": "string"}, {"type": "string", "minLength": 1}]}
            }}}}),
            true,
        );
        assert_eq!(
            v.check(
                "M",
                &json!({"a": "x", "b": [1, 2], "c": "host", "d": 1, "e": ""})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            v.check("M", &json!({"d": "s", "e": "two"})),
            vec![
                "/d must NOT be valid".to_string(),
                "/e must match exactly one schema in oneOf".to_string()
            ]
        );
    }

    #[test]
    fn a_schema_whose_options_branch_at_every_level_is_cut_off() {
        let v = Validation::new(
            &json!({"definitions": {
                "Node": {"type": "object", "properties": {
                    "v": {"type": "string"},
                    "next": {"anyOf": [
                        {"$ref": "#/definitions/Node"},
                        {"$ref": "#/definitions/Node"},
                        {"$ref": "#/definitions/Node"}
                    ]}
                }},
                "List": {"type": "array", "items": {"$ref": "#/definitions/Node"}}
            }}),
            false,
        );
        // 20 levels, the bottom one wrong: every option of every level is
        // tried (3^20 steps) unless the check is bounded.
        let mut deep = json!({"v": 1});
        for _ in 0..20 {
            deep = json!({"v": "x", "next": deep});
        }
        let errors = v.check("Node", &deep);
        assert!(
            errors.iter().any(|e| e.contains("too complex")),
            "{errors:?}"
        );
        // A valid deep value whose every level tries options that fail
        // early (on their type) is checked in full.
        let v2 = Validation::new(
            &json!({"definitions": {
                "Doc": {"type": "object", "properties": {
                    "content": {"type": "array", "items": {"anyOf": [
                        {"type": "string"},
                        {"type": "number"},
                        {"$ref": "#/definitions/Doc"}
                    ]}}
                }, "required": ["content"]}
            }}),
            false,
        );
        let mut doc = json!({"content": ["leaf"]});
        for _ in 0..40 {
            doc = json!({"content": [doc, "x", 1]});
        }
        assert_eq!(v2.check("Doc", &doc), Vec::<String>::new());
        // A big value checked in proportion to its size is not cut off.
        let nodes: Vec<Value> = (0..5_000)
            .map(|i| json!({"v": i.to_string(), "next": {"v": "y"}}))
            .collect();
        assert_eq!(v.check("List", &Value::Array(nodes)), Vec::<String>::new());
    }
}
