//! nango.yaml: the original's configuration format (v1 and v2), parsed with
//! its defaults and checks, and the files generated from it (`models.ts`,
//! JSON schemas of the models).
//!
//! [`parse`] gives a [`NangoYaml`] and its warnings, or every error found,
//! each with the path and code the original prints
//! (`error Model "X" doesn't have an id field … [model_missing_id]`).

mod config;
pub mod generate;
pub mod models;
mod runs;

use std::path::Path;

pub use config::{
    ActionConfig, Endpoint, EventKind, HttpMethod, Integration, NangoYaml, OnEventConfig,
    ScriptKind, SyncConfig, SyncType, YamlVersion,
};
pub use models::{Field, Model, Type};
pub use runs::{MAX_API_INTERVAL, api_frequency_shape, interval_text, parse_interval};

/// How serious a finding is: errors stop a compile, warnings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, with where it is and the original's code for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `model_missing_id`, `invalid_runs`, ... or, for schema checks, the
    /// JSON-schema keyword (`required`, `additionalProperties`, `type`, ...).
    pub code: String,
    pub message: String,
    /// Keys from the root, e.g. `integrations > hubspot > syncs > contacts`.
    pub path: Vec<String>,
    /// Found by the schema check (printed under `nango.yaml validation failed`).
    pub schema: bool,
}

impl Diagnostic {
    pub fn error(code: &str, message: impl Into<String>, path: &[String]) -> Self {
        Self {
            severity: Severity::Error,
            code: code.into(),
            message: message.into(),
            path: path.to_vec(),
            schema: false,
        }
    }

    pub fn warning(code: &str, message: impl Into<String>, path: &[String]) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message, path)
        }
    }

    pub(crate) fn schema(keyword: &str, message: impl Into<String>, path: &[String]) -> Self {
        Self {
            schema: true,
            ..Self::error(keyword, message, path)
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if !self.path.is_empty() {
            writeln!(f, "  {}", self.path.join(" > "))?;
        }
        write!(f, "  {level} {} [{}]", self.message, self.code)
    }
}

/// Findings in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}

impl std::fmt::Display for Diagnostics {
    /// The original's report: schema errors under `nango.yaml validation
    /// failed`, then the parser's errors and warnings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (schema, parser): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
            self.items.iter().partition(|d| d.schema);
        if !schema.is_empty() {
            writeln!(f, "nango.yaml validation failed")?;
            for d in schema {
                writeln!(f, "{d}")?;
            }
        }
        for d in parser {
            writeln!(f, "{d}")?;
        }
        if self.has_errors() {
            write!(f, "Your nango.yaml contains some errors")?;
        }
        Ok(())
    }
}

/// Why nango.yaml could not be used.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("no nango.yaml config found at {path}")]
    NotFound { path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}:\n{diagnostics}")]
    Invalid {
        path: String,
        diagnostics: Diagnostics,
    },
}

/// A parsed file with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: NangoYaml,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and checks `<dir>/nango.yaml`. An integration key written
/// `${PWD}` (as in Nango's template repository) stands for the name of
/// `dir`.
pub fn load(dir: &Path) -> Result<Loaded, YamlError> {
    let path = dir.join("nango.yaml");
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(YamlError::NotFound { path: shown });
        }
        Err(source) => {
            return Err(YamlError::Read {
                path: shown,
                source,
            });
        }
    };
    let dir_name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    parse_named(&text, &shown, dir_name.as_deref(), true)
}

/// Parses nango.yaml text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Loaded, YamlError> {
    parse_named(text, origin, None, true)
}

/// Parses nango.yaml text read from a folder named `dir_name` (what
/// `${PWD}` integration keys stand for), as it was accepted when stored:
/// integration keys are not checked (a deployment an earlier version took
/// still loads). [`parse_new`] checks them.
pub fn parse_in(text: &str, origin: &str, dir_name: Option<&str>) -> Result<Loaded, YamlError> {
    parse_named(text, origin, dir_name, false)
}

/// [`parse_in`] for a new file (a new deploy): integration keys must be
/// ones the API takes, as [`load`] requires.
pub fn parse_new(text: &str, origin: &str, dir_name: Option<&str>) -> Result<Loaded, YamlError> {
    parse_named(text, origin, dir_name, true)
}

/// How deep `[`/`{` may nest in nango.yaml: the YAML parser's own limit
/// (128) is found only after scanning the whole text, at a cost that grows
/// with the square of the nesting.
const MAX_FLOW_DEPTH: usize = 128;

/// The most alias uses (`*name`) times the text's length: each use copies
/// what its anchor holds, so a list of N items named N times makes N²
/// values (a 20 KB file took a gigabyte).
const MAX_ALIAS_WEIGHT: usize = 20_000_000;

/// What the YAML parser would take too long or too much memory to find
/// wrong, checked in one pass over the text: flow collections (`[`, `{`)
/// nested past [`MAX_FLOW_DEPTH`], and alias uses past
/// [`MAX_ALIAS_WEIGHT`]. Quoted scalars and comments are skipped; a plain
/// scalar's brackets count (a file near the limits is not a nango.yaml).
pub fn check_size(text: &str) -> Result<(), String> {
    let (mut depth, mut deepest, mut aliases) = (0usize, 0usize, 0usize);
    let mut chars = text.chars().peekable();
    let mut prev = '\n';
    while let Some(c) = chars.next() {
        match c {
            '#' if prev.is_whitespace() => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                prev = '\n';
                continue;
            }
            '\'' if prev.is_whitespace() || "[{,:".contains(prev) => {
                while let Some(n) = chars.next() {
                    if n == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '"' if prev.is_whitespace() || "[{,:".contains(prev) => {
                while let Some(n) = chars.next() {
                    match n {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            '*' if (prev.is_whitespace() || "[{,:".contains(prev))
                && chars
                    .peek()
                    .is_some_and(|n| n.is_alphanumeric() || *n == '_' || *n == '-') =>
            {
                aliases += 1;
            }
            _ => {}
        }
        prev = c;
    }
    if deepest > MAX_FLOW_DEPTH {
        return Err(format!(
            "`[` and `{{` nest {deepest} levels deep, more than the {MAX_FLOW_DEPTH} YAML takes"
        ));
    }
    if aliases.saturating_mul(text.len()) > MAX_ALIAS_WEIGHT {
        return Err(format!(
            "{aliases} aliases (`*name`) in {} bytes: each copies its anchor, more than a nango.yaml needs",
            text.len()
        ));
    }
    Ok(())
}

fn parse_named(
    text: &str,
    origin: &str,
    dir_name: Option<&str>,
    strict_keys: bool,
) -> Result<Loaded, YamlError> {
    check_size(text).map_err(|message| YamlError::Syntax {
        path: origin.to_string(),
        message,
    })?;
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| YamlError::Syntax {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
    let (config, diagnostics) = config::build(&value, dir_name, strict_keys);
    match config {
        Some(config) if !diagnostics.has_errors() => Ok(Loaded {
            config,
            warnings: diagnostics.warnings().cloned().collect(),
        }),
        _ => Err(YamlError::Invalid {
            path: origin.to_string(),
            diagnostics,
        }),
    }
}

#[cfg(test)]
mod size_tests {
    use super::check_size;

    #[test]
    fn deep_flow_nesting_and_alias_bombs_are_refused_before_parsing() {
        let deep = format!("x: {}{}", "[".repeat(40_000), "]".repeat(40_000));
        let e = super::parse(&deep, "nango.yaml").unwrap_err().to_string();
        assert!(e.contains("nest 40000 levels deep"), "{e}");
        let n = 4000;
        let bomb = format!(
            "big: &b [{}]\nrefs: [{}]\n",
            vec!["1"; n].join(","),
            vec!["*b"; n].join(",")
        );
        let e = check_size(&bomb).unwrap_err();
        assert!(e.contains("4000 aliases"), "{e}");
        // Quoted and commented brackets and stars do not count; a few
        // aliases in a small file pass.
        let fine = "a: &x {k: '[[[ *y'}\nb: *x # [[[[ *z\nc: \"{{{ \\\" *w\"\n";
        assert_eq!(check_size(fine), Ok(()));
        assert_eq!(
            check_size(&format!("d: {}1{}", "[".repeat(128), "]".repeat(128))),
            Ok(())
        );
    }
}

#[cfg(test)]
mod tests {
    const YAML: &str = "integrations:\n  'a/b':\n    actions:\n      go:\n        output: Out\n        endpoint: GET /x\nmodels:\n  Out:\n    id: string\n";

    #[test]
    fn integration_keys_are_checked_in_new_files_not_in_stored_deployments() {
        for err in [
            super::parse(YAML, "nango.yaml").unwrap_err(),
            super::parse_new(YAML, "nango.yaml", None).unwrap_err(),
        ] {
            assert!(
                err.to_string()
                    .contains("integration key \"a/b\" must match"),
                "{err}"
            );
        }
        let stored = super::parse_in(YAML, "nango.yaml", None).unwrap();
        assert_eq!(stored.config.integrations[0].provider_config_key, "a/b");
        let pwd = YAML.replace("'a/b'", "${PWD}");
        let err = super::parse_new(&pwd, "nango.yaml", Some("my folder (2)")).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"my folder (2)\" (the project folder's name, for ${PWD}) must match"),
            "{err}"
        );
    }
}
