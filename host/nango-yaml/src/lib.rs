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

/// The largest nango.yaml read, as the server's deploy takes it (8 MiB):
/// a real one is tens of kilobytes.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// The text of the regular file `path` (a link to one is followed), of at
/// most `max_bytes`. A device, a FIFO or a folder is refused before it is
/// opened (`/dev/zero` would be read for ever, a FIFO never answer); a
/// larger file is refused after `max_bytes + 1` bytes are read. A missing
/// file is `NotFound`, as `std::fs::read_to_string` says it.
pub fn read_text_file(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "not a regular file (it is {})",
                file_kind(&meta.file_type())
            ),
        ));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(max_bytes)).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {} it may be", shown_bytes(max_bytes)),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// What a file that is not a regular one is, for an error.
pub fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// `8 MiB`, `64 KiB`, `100 bytes`.
fn shown_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Reads and checks `<dir>/nango.yaml`. An integration key written
/// `${PWD}` (as in Nango's template repository) stands for the name of
/// `dir`. It is read only if it is a regular file (or a link to one) of at
/// most [`MAX_FILE_BYTES`].
pub fn load(dir: &Path) -> Result<Loaded, YamlError> {
    let path = dir.join("nango.yaml");
    let shown = path.display().to_string();
    let text = match read_text_file(&path, MAX_FILE_BYTES) {
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

/// The most `[` and `{` a nango.yaml may hold, anywhere (in quotes and
/// comments too: counting them all cannot be fooled), but those closed at
/// once (`[]`, `{}`). The YAML parser's
/// cost grows with the square of how deep they nest, and its own limit
/// (128) is found only after scanning the whole text: 100,000 nested
/// brackets (a 200 KB file) took a minute, 10,000 a fifth of a second.
const MAX_BRACKETS: usize = 10_000;

/// The most values a nango.yaml may hold once its aliases are copied
/// (each `*name` copies what its anchor holds: a list of N items named N
/// times, or anchors naming anchors, make millions of values of a few
/// kilobytes). A real nango.yaml holds thousands.
const MAX_NODES: u64 = 4_000_000;

/// What the YAML parser would take too long or too much memory to find
/// wrong: more than [`MAX_BRACKETS`] flow brackets (counted in one pass,
/// before parsing), and more than [`MAX_NODES`] values with its aliases
/// copied (counted by a first parse that builds nothing and stops at the
/// bound). Its syntax errors are left to the real parse.
pub fn check_size(text: &str) -> Result<(), String> {
    // `[]` and `{}` (an empty collection, or a `string[]` type) open
    // nothing that stays open: not counted.
    let bytes = text.as_bytes();
    let brackets = bytes
        .iter()
        .enumerate()
        .filter(|&(i, b)| match b {
            b'[' => bytes.get(i + 1) != Some(&b']'),
            b'{' => bytes.get(i + 1) != Some(&b'}'),
            _ => false,
        })
        .count();
    if brackets > MAX_BRACKETS {
        return Err(format!(
            "{brackets} `[`/`{{` (flow collections), more than the {MAX_BRACKETS} a nango.yaml may have"
        ));
    }
    let nodes = std::cell::Cell::new(0u64);
    let de = serde_norway::Deserializer::from_str(text);
    match serde::de::DeserializeSeed::deserialize(Count(&nodes), de) {
        Err(e) if nodes.get() > MAX_NODES => Err(format!(
            "more than {MAX_NODES} values with its aliases (`*name`) copied, each a copy of its anchor ({e})"
        )),
        _ => Ok(()),
    }
}

/// Counts the values of a YAML document as they are read (aliases
/// copied), building nothing; fails past [`MAX_NODES`].
#[derive(Clone, Copy)]
struct Count<'a>(&'a std::cell::Cell<u64>);

impl Count<'_> {
    fn bump<E: serde::de::Error>(self) -> Result<(), E> {
        let n = self.0.get() + 1;
        self.0.set(n);
        if n > MAX_NODES {
            return Err(E::custom("too many values"));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Count<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.bump()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.bump()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.bump()
    }
    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<(), E> {
        self.bump()
    }
    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<(), E> {
        self.bump()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.bump()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.bump()
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.bump()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.bump()?;
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.bump()?;
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.bump()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.bump()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess as _;
        self.bump()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

fn parse_named(
    text: &str,
    origin: &str,
    dir_name: Option<&str>,
    strict_keys: bool,
) -> Result<Loaded, YamlError> {
    // A new file only: a stored deployment an earlier version took still
    // loads.
    if strict_keys {
        check_size(text).map_err(|message| YamlError::Syntax {
            path: origin.to_string(),
            message,
        })?;
    }
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
    fn bracket_floods_and_alias_copies_are_refused_before_parsing() {
        let deep = format!("x: {}{}", "[".repeat(40_000), "]".repeat(40_000));
        let e = super::parse(&deep, "nango.yaml").unwrap_err().to_string();
        assert!(e.contains("39999 `[`/`{`"), "{e}");
        // Quotes cannot hide them: a plain scalar with a quote mark first.
        let hidden = format!(
            "note: it is 5 \"\nx: {}{}",
            "[".repeat(20_000),
            "]".repeat(20_000)
        );
        assert!(check_size(&hidden).is_err());
        // A list named many times, and anchors naming anchors.
        let n = 4000;
        let wide = format!(
            "big: &b [{}]\nrefs: [{}]\n",
            vec!["1"; n].join(","),
            vec!["*b"; n].join(",")
        );
        let e = check_size(&wide).unwrap_err();
        assert!(e.contains("more than 4000000 values"), "{e}");
        let mut nested = format!("a: &a [{}]\n", vec!["1"; 10_000].join(","));
        for (name, of) in [("b", "a"), ("c", "b"), ("d", "c")] {
            nested.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{of}"); 10].join(",")
            ));
        }
        nested.push_str(&format!("e: [{}]\n", ["*d"; 10].join(",")));
        assert!(check_size(&nested).is_err());
        // A few aliases, a file that does not parse: left to the parser.
        assert_eq!(check_size("a: &x {k: v}\nb: *x\nc: [1, *x]\n"), Ok(()));
        assert_eq!(check_size("a: [\n"), Ok(()));
    }
}

#[cfg(test)]
mod file_tests {
    /// A folder of its own under the system's temporary folder, removed
    /// when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("sluice-nango-yaml-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_nango_yaml_that_is_a_device_or_too_large_is_refused_by_name() {
        let dir = Scratch::new("load");
        let path = dir.0.join("nango.yaml");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
            let err = super::load(&dir.0).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "cannot read {}: not a regular file (it is a device)",
                    path.display()
                )
            );
            std::fs::remove_file(&path).unwrap();
        }
        let big = format!("# {}\nintegrations: {{}}\n", "x".repeat(8 << 20));
        std::fs::write(&path, big).unwrap();
        let err = super::load(&dir.0).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot read {}: larger than the 8 MiB it may be",
                path.display()
            )
        );
        std::fs::write(&path, "integrations: {}\n").unwrap();
        assert!(super::load(&dir.0).unwrap().config.integrations.is_empty());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            super::load(&dir.0),
            Err(super::YamlError::NotFound { .. })
        ));
    }
}

#[cfg(test)]
mod tests {
    const YAML: &str = "integrations:\n  'a/b':\n    actions:\n      go:\n        output: Out\n        endpoint: GET /x\nmodels:\n  Out:\n    id: string\n";

    /// Names go into stored keys, which every store must take.
    #[test]
    fn model_and_script_names_are_at_most_255_characters() {
        let ok = YAML.replace("'a/b'", "ab");
        super::parse(&ok, "nango.yaml").unwrap();
        let long = "O".repeat(256);
        let err = super::parse(&ok.replace("Out", &long), "nango.yaml").unwrap_err();
        assert!(
            err.to_string().contains("is longer than 255 characters"),
            "{err}"
        );
        let long = "g".repeat(256);
        let err = super::parse(&ok.replace("go:", &format!("{long}:")), "nango.yaml").unwrap_err();
        assert!(
            err.to_string().contains("is longer than 255 characters"),
            "{err}"
        );
        let fits = "g".repeat(255);
        super::parse(&ok.replace("go:", &format!("{fits}:")), "nango.yaml").unwrap();
    }

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
