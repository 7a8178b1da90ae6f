//! Validation of records and action input/output against the models' JSON
//! schema (the draft-07 subset nango.yaml's models generate: `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `anyOf`,
//! `const`, `not`, `format: date-time`, local `$ref`s).

use serde_json::{Map, Value};

/// The models' schemas and whether a violation fails the call.
#[derive(Debug, Clone)]
pub struct Validation {
    /// `definitions` of the generated schema, by model name.
    definitions: Map<String, Value>,
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
        Self {
            definitions: schema
                .get("definitions")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            strict,
        }
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.definitions.contains_key(model)
    }

    /// The violations of `value` against `model` (empty when it is valid or
    /// the model has no schema), each as `<path> <problem>`.
    pub fn check(&self, model: &str, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(schema) = self.definitions.get(model) {
            let budget = STEPS_PER_VALUE
                .saturating_mul(value_count(value))
                .saturating_add(MIN_STEPS);
            let mut steps = Steps {
                left: budget,
                ran_out: false,
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
            if steps.ran_out {
                errors.push(format!(
                    "/ could not be checked: the schema is too complex for this value \
                     (more than {budget} steps; `anyOf` options within `anyOf` options)"
                ));
            }
        }
        errors
    }

    /// Checks `value` against `schema`. A `probe` (an `anyOf` option being
    /// tried) stops at its first violation: only whether it has any counts.
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
        if depth > MAX_DEPTH || (probe && !out.is_empty()) {
            return;
        }
        if steps.left == 0 {
            steps.ran_out = true;
            return;
        }
        steps.left -= 1;
        let at = |p: &Path<'_>| p.at();
        if let Some(Value::String(r)) = schema.get("$ref") {
            if let Some(target) = r
                .strip_prefix("#/definitions/")
                .and_then(|name| self.definitions.get(name))
            {
                self.visit(target, value, path, depth + 1, probe, steps, out);
            }
            return;
        }
        if let Some(Value::Array(options)) = schema.get("anyOf") {
            let fits = options.iter().any(|o| {
                let mut e = Vec::new();
                self.visit(o, value, path, depth + 1, true, steps, &mut e);
                e.is_empty()
            });
            if !fits {
                out.push(format!("{} must match a schema in anyOf", at(path)));
            }
            return;
        }
        if schema
            .get("not")
            .is_some_and(|n| n.as_object().is_some_and(Map::is_empty))
        {
            out.push(format!("{} must NOT be valid", at(path)));
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str)
            && !has_type(value, t)
        {
            out.push(format!("{} must be {t}", at(path)));
            return;
        }
        if let Some(c) = schema.get("const")
            && !same(c, value)
        {
            out.push(format!("{} must be equal to constant {c}", at(path)));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && let Some(s) = value.as_str()
            && chrono::DateTime::parse_from_rfc3339(s).is_err()
        {
            out.push(format!("{} must match format \"date-time\"", at(path)));
        }
        if let (Some(items), Value::Array(values)) = (schema.get("items"), value) {
            for (i, v) in values.iter().enumerate() {
                self.visit(
                    items,
                    v,
                    &Path::Index(path, i),
                    depth + 1,
                    probe,
                    steps,
                    out,
                );
                if probe && !out.is_empty() {
                    return;
                }
            }
        }
        if let Value::Object(fields) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        out.push(format!("{} must have required property '{name}'", at(path)));
                    }
                }
            }
            for (k, v) in fields {
                let here = Path::Key(path, k);
                match properties.and_then(|p| p.get(k)) {
                    Some(s) => self.visit(s, v, &here, depth + 1, probe, steps, out),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => out.push(format!(
                            "{} must NOT have additional properties: '{k}'",
                            at(path)
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
            }
        }
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
                out.push_str(k);
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
