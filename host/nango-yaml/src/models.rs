//! The models grammar of nango.yaml: field values resolved into types with
//! the original's rules, `__extends`, `__string`, anonymous models.

use std::collections::{BTreeSet, HashMap};

use serde_norway::Value as Yaml;

use crate::{Diagnostic, Diagnostics};

/// A field's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    String,
    Number,
    Boolean,
    BigInt,
    /// `date`: a `Date` in TypeScript, an ISO string in JSON.
    Date,
    Any,
    Undefined,
    Null,
    /// `object`: `Record<string, any>`.
    Record,
    StringLiteral(String),
    /// Kept as written (`12`, `1.5`).
    NumberLiteral(String),
    BooleanLiteral(bool),
    /// Another model, by name.
    Ref(String),
    Array(Box<Type>),
    Union(Vec<Type>),
    /// An inline object: its fields, and the type of any other key when
    /// it sets `__string`.
    Inline(Vec<Field>, Option<Box<Type>>),
}

/// A field of a model (or of an inline object).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub optional: bool,
    pub ty: Type,
}

/// A model: named fields, and the type of any other key when `__string` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub fields: Vec<Field>,
    /// `__string: T`: `[key: string]: T`.
    pub dynamic: Option<Type>,
    /// A model made for an `input` or `output` that named no model; `Some`
    /// holds its type (the original emits a type alias for it).
    pub anonymous: Option<Type>,
}

impl Model {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// The longest model or script name: each goes into the keys of the
/// records and sync states stored under it, which PostgreSQL's indexes
/// bound (a key of about 2,700 bytes at most, with a record id of up to
/// 1,020): a name that works on one store works on every store.
pub const MAX_NAME_LEN: usize = 255;

/// Model names: `^[a-zA-Z0-9_]+$`, at most [`MAX_NAME_LEN`] characters.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What is wrong with a script name (of a sync, an action or an on-event
/// script; in a zero-yaml project, its file's name), as nango.yaml's check
/// says it; `None` for a good one: `^[a-zA-Z0-9_-]+$`, at most
/// [`MAX_NAME_LEN`] characters. A name is a path segment (`<script>.ts`,
/// `mocks/…/<script>/`) and part of stored keys.
pub fn script_name_problem(name: &str) -> Option<String> {
    let pattern = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !pattern {
        Some(format!(
            "script name \"{name}\" must match ^[a-zA-Z0-9_-]+$"
        ))
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "script name \"{name}\" is longer than {MAX_NAME_LEN} characters"
        ))
    } else {
        None
    }
}

/// Resolves the `models:` section. `defined` are all model names (for
/// references); `path` prefixes diagnostics.
pub(crate) struct Resolver<'a> {
    pub defined: &'a BTreeSet<String>,
    pub diagnostics: &'a mut Diagnostics,
}

impl Resolver<'_> {
    /// A field map (a model's body or an inline object).
    pub fn fields(
        &mut self,
        map: &serde_norway::Mapping,
        path: &[String],
    ) -> (Vec<Field>, Option<Type>, Vec<String>) {
        let mut fields: Vec<Field> = Vec::new();
        let mut dynamic = None;
        let mut extends = Vec::new();
        if map.len() > MAX_FIELDS {
            self.diagnostics.push(Diagnostic::error(
                "too_many_fields",
                format!(
                    "a model has {} fields, more than the {MAX_FIELDS} it may",
                    map.len()
                ),
                path,
            ));
            return (fields, dynamic, extends);
        }
        for (key, value) in map {
            let Some(key) = scalar_text(key) else {
                continue;
            };
            let here = [path, std::slice::from_ref(&key)].concat();
            if key == "__extends" {
                let list = scalar_text(value).unwrap_or_default();
                extends.extend(
                    list.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
                continue;
            }
            if key == "__string" {
                dynamic = Some(self.value(value, &here));
                continue;
            }
            let (name, optional) = match key.strip_suffix('?') {
                Some(n) => (n.to_string(), true),
                None => (key.clone(), false),
            };
            let ty = self.value(value, &here);
            match fields.iter_mut().find(|f| f.name == name) {
                Some(existing) => {
                    existing.optional = optional;
                    existing.ty = ty;
                }
                None => fields.push(Field { name, optional, ty }),
            }
        }
        (fields, dynamic, extends)
    }

    /// A field value, by the original's rules in order.
    pub fn value(&mut self, value: &Yaml, path: &[String]) -> Type {
        match value {
            Yaml::Sequence(items) => {
                let members: Vec<Type> = items
                    .iter()
                    .map(|item| match item {
                        Yaml::String(s) => self.text(s, path),
                        other => self.value(other, path),
                    })
                    .collect();
                Type::Array(Box::new(union(members)))
            }
            Yaml::Bool(b) => Type::BooleanLiteral(*b),
            Yaml::Number(n) => Type::NumberLiteral(n.to_string()),
            Yaml::Null => Type::Null,
            Yaml::Mapping(map) => {
                let (fields, dynamic, _) = self.fields(map, path);
                Type::Inline(fields, dynamic.map(Box::new))
            }
            Yaml::String(s) => self.text(s, path),
            Yaml::Tagged(t) => self.value(&t.value, path),
        }
    }

    /// A type written as text.
    pub fn text(&mut self, raw: &str, path: &[String]) -> Type {
        let s = raw.trim();
        if s.contains('|') {
            let members: Vec<Type> = s.split('|').map(|m| self.text(m, path)).collect();
            return union(members);
        }
        if s.ends_with("[]") {
            // `T[]`, `(a | b)[]`, `T[][]`: counted in a loop, not by
            // recursion, and at most MAX_ARRAY_DEPTH deep.
            let mut depth = 0;
            let mut inner = s;
            while let Some(i) = inner.strip_suffix("[]") {
                let i = i.trim();
                if i.is_empty() || depth == MAX_ARRAY_DEPTH {
                    self.syntax_error(s, path);
                    return Type::Any;
                }
                depth += 1;
                inner = i
                    .strip_prefix('(')
                    .and_then(|i| i.strip_suffix(')'))
                    .unwrap_or(i)
                    .trim();
            }
            let mut ty = self.text(inner, path);
            for _ in 0..depth {
                ty = Type::Array(Box::new(ty));
            }
            return ty;
        }
        match s.to_ascii_lowercase().as_str() {
            "integer" | "int" | "float" | "number" => return Type::Number,
            "char" | "varchar" | "string" => return Type::String,
            "bool" | "boolean" => return Type::Boolean,
            "bigint" => return Type::BigInt,
            "date" => return Type::Date,
            "object" => return Type::Record,
            "any" => return Type::Any,
            "array" => return Type::Array(Box::new(Type::Any)),
            "undefined" => return Type::Undefined,
            _ => {}
        }
        if let Some(n) = parse_int_prefix(s) {
            return Type::NumberLiteral(n);
        }
        match s {
            "true" => return Type::BooleanLiteral(true),
            "false" => return Type::BooleanLiteral(false),
            "null" => return Type::Null,
            _ => {}
        }
        if s.contains('<') || s.contains('>') || s.contains('{') {
            self.syntax_error(s, path);
            return Type::Any;
        }
        if self.defined.contains(s) {
            return Type::Ref(s.to_string());
        }
        self.diagnostics.push(Diagnostic::warning(
            "model_not_found_fallback",
            format!("Model \"{s}\" is not defined, using as string literal"),
            path,
        ));
        Type::StringLiteral(s.to_string())
    }

    fn syntax_error(&mut self, s: &str, path: &[String]) {
        self.diagnostics.push(Diagnostic::error(
            "type_syntax_error",
            format!(
                "Type \"{s}\" contains some unsupported typescript syntax, please use allowed syntax. Documentation: https://docs.nango.dev/reference/integration-configuration#model-types"
            ),
            path,
        ));
    }
}

fn union(mut members: Vec<Type>) -> Type {
    if members.len() == 1 {
        members.remove(0)
    } else {
        Type::Union(members)
    }
}

/// JavaScript's `parseInt(s)` when it gives a number: optional sign, then
/// leading digits (`"12abc"` is 12).
fn parse_int_prefix(s: &str) -> Option<String> {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", s.strip_prefix('+').unwrap_or(s)),
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    let digits = if trimmed.is_empty() { "0" } else { trimmed };
    Some(format!("{sign}{digits}"))
}

/// The text of a YAML scalar key or value.
pub(crate) fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Null => Some("null".into()),
        Yaml::Tagged(t) => scalar_text(&t.value),
        _ => None,
    }
}

/// Most models one nango.yaml may declare.
pub(crate) const MAX_MODELS: usize = 5_000;

/// Most fields one model (or inline object) may declare.
const MAX_FIELDS: usize = 5_000;

/// Most fields all models together may declare, inline objects' included,
/// with each alias (`*name`) counted as the copy of its anchor it makes.
/// Every field is a line of `models.ts` and an entry of the JSON schema: a
/// 33 KB file of 1,400 models aliasing one map of 1,400 fields made 2
/// million (a 166 MB schema). A large real nango.yaml declares thousands.
pub(crate) const MAX_TOTAL_FIELDS: usize = 100_000;

/// Counts the fields of a model's body (the entries of its maps, nested
/// ones included) into `count`; false, and stops, once it passes
/// [`MAX_TOTAL_FIELDS`].
pub(crate) fn count_fields(body: &Yaml, count: &mut usize) -> bool {
    match body {
        Yaml::Mapping(map) => {
            *count += map.len();
            if *count > MAX_TOTAL_FIELDS {
                return false;
            }
            map.values().all(|v| count_fields(v, count))
        }
        Yaml::Sequence(items) => items.iter().all(|v| count_fields(v, count)),
        Yaml::Tagged(t) => count_fields(&t.value, count),
        _ => true,
    }
}

/// Most `[]` on one type (`T[][]…`).
const MAX_ARRAY_DEPTH: usize = 32;

/// Longest chain of `__extends` (a model extending one extending one…).
const MAX_EXTENDS_DEPTH: usize = 64;

/// Most fields `__extends` may copy in all: every model extending one big
/// base would otherwise multiply it.
const MAX_EXTENDED_FIELDS: usize = 1_000_000;

/// Merges `__extends` bases into each model: own fields win, then earlier
/// bases. Reports unknown bases, chains deeper than MAX_EXTENDS_DEPTH and
/// more than MAX_EXTENDED_FIELDS copied fields.
pub(crate) fn apply_extends(
    models: &mut [Model],
    extends: &HashMap<String, Vec<String>>,
    diagnostics: &mut Diagnostics,
) {
    // Resolve in dependency order with a depth cap (cycles are reported
    // elsewhere and simply stop merging).
    let by_name: HashMap<String, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut budget = MAX_EXTENDED_FIELDS;
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        name: &str,
        models: &mut [Model],
        by_name: &HashMap<String, usize>,
        extends: &HashMap<String, Vec<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        budget: &mut usize,
        diagnostics: &mut Diagnostics,
    ) {
        if done.contains(name) || stack.iter().any(|s| s == name) || *budget == 0 {
            return;
        }
        if stack.len() == MAX_EXTENDS_DEPTH {
            diagnostics.push(Diagnostic::error(
                "model_extends_too_deep",
                format!(
                    "Model \"{}\" extends a chain of more than {MAX_EXTENDS_DEPTH} models",
                    stack[0]
                ),
                &["models".to_string(), stack[0].clone()],
            ));
            *budget = 0;
            return;
        }
        stack.push(name.to_string());
        for base in extends.get(name).into_iter().flatten() {
            let Some(&bi) = by_name.get(base) else {
                diagnostics.push(Diagnostic::error(
                    "model_extends_not_found",
                    format!("Model \"{name}\" is extending \"{base}\", but it does not exist"),
                    &["models".to_string(), name.to_string()],
                ));
                continue;
            };
            resolve(
                base,
                models,
                by_name,
                extends,
                done,
                stack,
                budget,
                diagnostics,
            );
            if *budget == 0 {
                break;
            }
            if models[bi].fields.len() > *budget {
                diagnostics.push(Diagnostic::error(
                    "model_extends_too_large",
                    format!(
                        "__extends would copy more than {MAX_EXTENDED_FIELDS} fields into the models"
                    ),
                    &["models".to_string(), name.to_string()],
                ));
                *budget = 0;
                break;
            }
            let base_fields = models[bi].fields.clone();
            let base_dynamic = models[bi].dynamic.clone();
            let Some(&mi) = by_name.get(name) else {
                continue;
            };
            let model = &mut models[mi];
            let mut own: std::collections::HashSet<String> =
                model.fields.iter().map(|f| f.name.clone()).collect();
            for f in base_fields {
                if own.insert(f.name.clone()) {
                    *budget -= 1;
                    model.fields.push(f);
                }
            }
            if model.dynamic.is_none() {
                model.dynamic = base_dynamic;
            }
        }
        stack.pop();
        done.insert(name.to_string());
    }
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    for name in names {
        resolve(
            &name,
            models,
            &by_name,
            extends,
            &mut done,
            &mut Vec::new(),
            &mut budget,
            diagnostics,
        );
    }
}

/// Models that reference themselves through other models (a warning only),
/// in model order: those of a strongly connected component of more than
/// one model, or referring to themselves. One pass over the references
/// ([`on_cycle`]): a search from every model cost the cube of their number.
pub(crate) fn report_cycles(models: &[Model], diagnostics: &mut Diagnostics) {
    let index_of: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = models
        .iter()
        .map(|m| {
            refs(m)
                .into_iter()
                .filter_map(|r| index_of.get(r).copied())
                .collect()
        })
        .collect();
    for (m, cyclic) in models.iter().zip(on_cycle(&edges)) {
        if cyclic {
            diagnostics.push(Diagnostic::warning(
                "cyclic_model",
                format!("Cyclic import {} -> {}", m.name, m.name),
                &["models".to_string(), m.name.clone()],
            ));
        }
    }
}

/// Which nodes of the graph (`edges[v]`: the nodes `v` points to) lie on a
/// cycle: Tarjan's strongly connected components, with an explicit stack
/// (no recursion however deep the chain), each node and edge visited once.
fn on_cycle(edges: &[Vec<usize>]) -> Vec<bool> {
    const UNSEEN: usize = usize::MAX;
    let n = edges.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut out = vec![false; n];
    let mut next = 0;
    for start in 0..n {
        if index[start] != UNSEEN {
            continue;
        }
        // Each node being searched, with the next of its edges to follow.
        let mut work: Vec<(usize, usize)> = vec![(start, 0)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(top) = work.last_mut() {
            let v = top.0;
            let edge = edges[v].get(top.1).copied();
            top.1 += 1;
            match edge {
                Some(w) if index[w] == UNSEEN => {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                }
                Some(w) => {
                    if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                }
                None => {
                    work.pop();
                    if let Some(&(parent, _)) = work.last() {
                        low[parent] = low[parent].min(low[v]);
                    }
                    if low[v] == index[v] {
                        let mut members = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w] = false;
                            members.push(w);
                            if w == v {
                                break;
                            }
                        }
                        if members.len() > 1 || edges[v].contains(&v) {
                            for w in members {
                                out[w] = true;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn refs(m: &Model) -> Vec<&str> {
    let mut out = Vec::new();
    for f in &m.fields {
        collect_refs(&f.ty, &mut out);
    }
    if let Some(d) = &m.dynamic {
        collect_refs(d, &mut out);
    }
    out
}

fn collect_refs<'a>(t: &'a Type, out: &mut Vec<&'a str>) {
    match t {
        Type::Ref(r) => out.push(r),
        Type::Array(i) => collect_refs(i, out),
        Type::Union(m) => m.iter().for_each(|t| collect_refs(t, out)),
        Type::Inline(fields, dynamic) => {
            fields.iter().for_each(|f| collect_refs(&f.ty, out));
            if let Some(d) = dynamic {
                collect_refs(d, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, defined: &[&str]) -> (Type, Diagnostics) {
        let defined: BTreeSet<String> = defined.iter().map(|s| s.to_string()).collect();
        let mut diagnostics = Diagnostics::default();
        let ty = Resolver {
            defined: &defined,
            diagnostics: &mut diagnostics,
        }
        .text(text, &[]);
        (ty, diagnostics)
    }

    #[test]
    fn hostile_models_are_named_errors_not_crashes() {
        let refused = |yaml: &str| match crate::parse(yaml, "nango.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let head = "integrations: {}\nmodels:\n";
        // 100,000 `[]`: a syntax error, not a stack overflow.
        let deep = format!("{head}  M:\n    f: string{}\n", "[]".repeat(100_000));
        assert!(refused(&deep).contains("type_syntax_error"));
        let ok = format!(
            "{head}  M:\n    f: string{}\n",
            "[]".repeat(MAX_ARRAY_DEPTH)
        );
        assert!(crate::parse(&ok, "nango.yaml").is_ok());
        // A chain of 4,000 `__extends`.
        let mut chain = head.to_string();
        for i in 0..4_000 {
            chain += &format!("  M{i}:\n    __extends: M{}\n    f{i}: string\n", i + 1);
        }
        chain += "  M4000:\n    id: string\n";
        assert!(refused(&chain).contains("model_extends_too_deep"));
        // Every model extending one base of 3,000 fields: 6 million copies.
        let mut wide = format!("{head}  B:\n");
        for i in 0..3_000 {
            wide += &format!("    f{i}: string\n");
        }
        for i in 0..2_000 {
            wide += &format!("  M{i}:\n    __extends: B\n");
        }
        assert!(refused(&wide).contains("model_extends_too_large"));
        // More models than any project has.
        let mut many = head.to_string();
        for i in 0..=MAX_MODELS {
            many += &format!("  M{i}:\n    id: string\n");
        }
        assert!(refused(&many).contains("too_many_models"));
    }

    #[test]
    fn models_on_a_cycle_are_warned_of_in_model_order() {
        let yaml = "integrations: {}\nmodels:\n  A:\n    b: B\n  B:\n    a: A[]\n  C:\n    self: C | null\n  D:\n    a: A\n    e: E\n  E:\n    id: string\n  F:\n    g:\n      h: G\n  G:\n    f: F\n    x: Missing\n";
        let loaded = crate::parse(yaml, "nango.yaml").unwrap();
        let cycles: Vec<String> = loaded
            .warnings
            .iter()
            .filter(|d| d.code == "cyclic_model")
            .map(|d| format!("{} @ {}", d.message, d.path.join(" > ")))
            .collect();
        assert_eq!(
            cycles,
            [
                "Cyclic import A -> A @ models > A",
                "Cyclic import B -> B @ models > B",
                "Cyclic import C -> C @ models > C",
                "Cyclic import F -> F @ models > F",
                "Cyclic import G -> G @ models > G",
            ]
        );
        // A chain deeper than any recursion could follow, closed at its end.
        let mut chain = "integrations: {}\nmodels:\n".to_string();
        for i in 0..4_000 {
            chain += &format!("  M{i}:\n    next: M{}\n", (i + 1) % 4_000);
        }
        let loaded = crate::parse(&chain, "nango.yaml").unwrap();
        let n = loaded
            .warnings
            .iter()
            .filter(|d| d.code == "cyclic_model")
            .count();
        assert_eq!(n, 4_000);
        assert_eq!(
            on_cycle(&[vec![1], vec![2], vec![1], vec![]]),
            [false, true, true, false]
        );
    }

    /// 1,400 models, each an alias of one map of 1,400 fields naming every
    /// model: 33 KB that made 2 million fields, a 166 MB schema and a
    /// search of a minute.
    #[test]
    fn aliases_that_copy_too_many_fields_are_refused() {
        let shape = |n: usize| {
            let mut text = "integrations: {}\nmodels:\n  M0: &f\n".to_string();
            for j in 0..n {
                text += &format!("    f{j}: M{j}\n");
            }
            for i in 1..n {
                text += &format!("  M{i}: *f\n");
            }
            text
        };
        let text = shape(1_400);
        assert!(text.len() < 40_000, "{}", text.len());
        let err = crate::parse(&text, "nango.yaml").unwrap_err().to_string();
        assert!(
            err.contains("the models declare more than 100000 fields in all")
                && err.contains("[too_many_fields]"),
            "{err}"
        );
        // The same shape within the bound parses, every model on the cycle.
        let loaded = crate::parse(&shape(300), "nango.yaml").unwrap();
        assert_eq!(loaded.config.models.len(), 300);
        assert_eq!(
            loaded
                .warnings
                .iter()
                .filter(|d| d.code == "cyclic_model")
                .count(),
            300
        );
    }

    #[test]
    fn script_names_follow_nango_yamls_rule() {
        assert_eq!(script_name_problem("get-repo_2"), None);
        assert_eq!(
            script_name_problem("get#repo").as_deref(),
            Some("script name \"get#repo\" must match ^[a-zA-Z0-9_-]+$")
        );
        assert!(script_name_problem("").is_some());
        assert!(script_name_problem(&"a".repeat(MAX_NAME_LEN)).is_none());
        assert!(
            script_name_problem(&"a".repeat(MAX_NAME_LEN + 1))
                .unwrap()
                .ends_with("is longer than 255 characters")
        );
    }

    #[test]
    fn aliases_literals_arrays_unions_refs() {
        assert_eq!(resolve("Integer", &[]).0, Type::Number);
        assert_eq!(resolve("varchar", &[]).0, Type::String);
        assert_eq!(resolve("date", &[]).0, Type::Date);
        assert_eq!(resolve("12abc", &[]).0, Type::NumberLiteral("12".into()));
        assert_eq!(
            resolve("string[]", &[]).0,
            Type::Array(Box::new(Type::String))
        );
        assert_eq!(
            resolve("User | null", &["User"]).0,
            Type::Union(vec![Type::Ref("User".into()), Type::Null])
        );
        let (ty, d) = resolve("open", &[]);
        assert_eq!(ty, Type::StringLiteral("open".into()));
        assert_eq!(d.items[0].code, "model_not_found_fallback");
        let (_, d) = resolve("Record<string, any>", &[]);
        assert_eq!(d.items[0].code, "type_syntax_error");
        assert!(d.has_errors());
        let (_, d) = resolve("[]", &[]);
        assert!(d.has_errors());
    }
}
