//! A TypeScript script's stack frames as its author wrote them: the
//! engine names places in the bundle (`exec@.sluice/build/github.js:17893:12`),
//! and the source map esbuild writes beside each bundle (`<bundle>.map`)
//! turns them back into `exec@github/actions/get-repo.ts:17:9`.
//! Frames of files without a map, or outside what a map covers, are left
//! as they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The source maps of one build folder, read when a frame names their
/// bundle.
pub struct StackMapper {
    root: PathBuf,
    build_dir: PathBuf,
    maps: HashMap<String, Option<SourceMap>>,
}

impl StackMapper {
    /// Frames of bundles in `build_dir`, shown relative to `root`.
    pub fn new(root: &Path, build_dir: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            build_dir: build_dir.to_path_buf(),
            maps: HashMap::new(),
        }
    }

    /// `text` with each `<path>/<bundle>.js:<line>:<column>` that a map
    /// covers written as `<source>:<line>:<column>`.
    pub fn map(&mut self, text: &str) -> String {
        if !text.contains(".js:") {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(".js:") {
            // The path starts after the last separator before it.
            let head = &rest[..at];
            let start = head.rfind(['@', ' ', '(', '\n', '\t']).map_or(0, |i| i + 1);
            let after = &rest[at + 4..];
            let Some((line, column, used)) = line_and_column(after) else {
                out.push_str(&rest[..at + 4]);
                rest = after;
                continue;
            };
            let path = &rest[start..at + 3];
            match self.lookup(path, line, column) {
                Some(place) => {
                    out.push_str(&rest[..start]);
                    out.push_str(&place);
                }
                None => out.push_str(&rest[..at + 4 + used]),
            }
            rest = &after[used..];
        }
        out.push_str(rest);
        out
    }

    /// The source place of 1-based `line` and `column` of bundle `path`.
    fn lookup(&mut self, path: &str, line: u32, column: u32) -> Option<String> {
        let name = Path::new(path).file_name()?.to_str()?.to_string();
        let (root, build_dir) = (&self.root, &self.build_dir);
        let map = self
            .maps
            .entry(name.clone())
            .or_insert_with(|| SourceMap::read(&build_dir.join(format!("{name}.map")), root))
            .as_ref()?;
        let (source, line, column) = map.find(line.checked_sub(1)?, column.saturating_sub(1))?;
        Some(format!("{source}:{}:{}", line + 1, column + 1))
    }
}

/// `<line>:<column>` at the start of `text`, and how many bytes they took.
fn line_and_column(text: &str) -> Option<(u32, u32, usize)> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(text);
    let line = text.get(..n)?.parse().ok()?;
    let rest = text.get(n..)?.strip_prefix(':')?;
    let m = digits(rest);
    let column = rest.get(..m)?.parse().ok()?;
    Some((line, column, n + 1 + m))
}

/// One mapping: a generated column and the source place it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    column: u32,
    source: u32,
    line: u32,
    source_column: u32,
}

/// A version 3 source map, decoded: segments by generated line.
struct SourceMap {
    /// Relative to the project root when inside it.
    sources: Vec<String>,
    lines: Vec<Vec<Segment>>,
}

impl SourceMap {
    fn read(path: &Path, root: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let dir = path.parent()?;
        let sources = json["sources"]
            .as_array()?
            .iter()
            .map(|s| {
                let s = s.as_str().unwrap_or_default();
                let full = normalize(&dir.join(s));
                full.strip_prefix(root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| s.to_string())
            })
            .collect();
        Some(Self {
            sources,
            lines: decode(json["mappings"].as_str()?)?,
        })
    }

    /// The source, line and column (0-based) of a generated place: the
    /// last segment of its line at or before its column.
    fn find(&self, line: u32, column: u32) -> Option<(&str, u32, u32)> {
        let segments = self.lines.get(line as usize)?;
        let i = segments.partition_point(|s| s.column <= column);
        let s = segments.get(i.checked_sub(1)?)?;
        Some((
            self.sources.get(s.source as usize)?,
            s.line,
            s.source_column,
        ))
    }
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The `mappings` field: lines separated by `;`, segments by `,`, each a
/// run of base64 VLQ numbers relative to the previous segment's (the
/// generated column to the line's previous one).
fn decode(mappings: &str) -> Option<Vec<Vec<Segment>>> {
    let mut lines = Vec::new();
    let (mut source, mut line, mut source_column) = (0i64, 0i64, 0i64);
    for text in mappings.split(';') {
        let mut segments = Vec::new();
        let mut column = 0i64;
        for seg in text.split(',').filter(|s| !s.is_empty()) {
            let fields = vlq(seg)?;
            column += *fields.first()?;
            if fields.len() >= 4 {
                source += fields[1];
                line += fields[2];
                source_column += fields[3];
                segments.push(Segment {
                    column: u32::try_from(column).ok()?,
                    source: u32::try_from(source).ok()?,
                    line: u32::try_from(line).ok()?,
                    source_column: u32::try_from(source_column).ok()?,
                });
            }
        }
        // esbuild writes a line's segments in column order; kept so.
        segments.sort_by_key(|s| s.column);
        lines.push(segments);
    }
    Some(lines)
}

/// The base64 VLQ numbers of one segment.
fn vlq(text: &str) -> Option<Vec<i64>> {
    let mut out = Vec::new();
    let (mut value, mut shift) = (0i64, 0u32);
    for b in text.bytes() {
        let digit = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as i64;
        if shift > 60 {
            return None;
        }
        value += (digit & 31) << shift;
        if digit & 32 != 0 {
            shift += 5;
            continue;
        }
        out.push(if value & 1 == 1 {
            -(value >> 1)
        } else {
            value >> 1
        });
        value = 0;
        shift = 0;
    }
    (shift == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlq_numbers_decode() {
        assert_eq!(vlq("AAAA"), Some(vec![0, 0, 0, 0]));
        assert_eq!(vlq("AACA"), Some(vec![0, 0, 1, 0]));
        assert_eq!(vlq("D"), Some(vec![-1]));
        assert_eq!(vlq("gB"), Some(vec![16]));
        assert_eq!(vlq("2Hwc"), Some(vec![123, 456]));
        assert_eq!(vlq("g"), None, "a number cut short");
        assert_eq!(vlq("A*"), None);
    }

    #[test]
    fn frames_of_a_mapped_bundle_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let build = root.join(".sluice/build");
        std::fs::create_dir_all(&build).unwrap();
        // Generated line 1 (0-based 0): column 0 → a.ts 0:0; line 2:
        // column 4 → a.ts 5:2, column 10 → b.ts 1:0.
        std::fs::write(
            build.join("demo.js.map"),
            r#"{"version":3,"sources":["../../demo/actions/a.ts","../../demo/helpers/b.ts"],"mappings":"AAAA;IAKE,MCJF"}"#,
        )
        .unwrap();
        let mut m = StackMapper::new(root, &build);
        let text = "Error: x\nhelper@.sluice/build/demo.js:2:6\nexec@/abs/.sluice/build/demo.js:2:12\nrun@.sluice/build/demo.js:1:1\nsdk@.sluice/build/demo.js:9:1\nother@elsewhere/x.js:2:6\n";
        assert_eq!(
            m.map(text),
            "Error: x\nhelper@demo/actions/a.ts:6:3\nexec@demo/helpers/b.ts:2:1\nrun@demo/actions/a.ts:1:1\nsdk@.sluice/build/demo.js:9:1\nother@elsewhere/x.js:2:6\n"
        );
        assert_eq!(m.map("no frames here"), "no frames here");
        assert_eq!(m.map("a.js: not a frame"), "a.js: not a frame");
    }
}
