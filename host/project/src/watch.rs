//! What `sluice dev` watches: a project's source files and when each last
//! changed, compared between two looks (polling: no watcher service, and
//! the same on every system).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Folders that hold no source of the project's (dependencies, builds,
/// what compiling writes).
const SKIPPED: [&str; 8] = [
    "node_modules",
    ".sluice",
    ".nango",
    "build",
    "dist",
    "target",
    ".git",
    "sluice-sdk",
];

/// Kinds of file a project's build reads.
const SOURCES: [&str; 9] = ["ts", "mts", "cts", "js", "mjs", "json", "yaml", "yml", "rs"];

/// Files a compile writes into a nango.yaml project (`models.ts` from
/// nango.yaml): a change of theirs is not the user's. In a zero-yaml
/// project `models.ts` is the user's (its zod models), and watched.
pub const GENERATED: [&str; 1] = ["models.ts"];

/// The most files looked at: a folder beyond that is not a project.
const MAX_FILES: usize = 50_000;

/// Each source file's size and modification time.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct Snapshot(BTreeMap<PathBuf, (u64, Option<SystemTime>)>);

impl Snapshot {
    /// The source files under `dir`, now, but those under `excluded`
    /// (the build and cache folders, wherever they were put; compared as
    /// given and canonical). Symbolic links are not followed.
    pub fn take(dir: &Path, excluded: &[PathBuf]) -> Snapshot {
        let mut files = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            if files.len() >= MAX_FILES {
                break;
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_dir() {
                    let path = e.path();
                    let here = path.canonicalize().unwrap_or_else(|_| path.clone());
                    if !SKIPPED.contains(&name.as_ref())
                        && !excluded.iter().any(|x| *x == path || *x == here)
                    {
                        todo.push(path);
                    }
                } else if kind.is_file()
                    && Path::new(name.as_ref())
                        .extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| SOURCES.contains(&x))
                    && files.len() < MAX_FILES
                    && let Ok(meta) = e.metadata()
                {
                    let rel = e
                        .path()
                        .strip_prefix(dir)
                        .unwrap_or(&e.path())
                        .to_path_buf();
                    files.insert(rel, (meta.len(), meta.modified().ok()));
                }
            }
        }
        Snapshot(files)
    }

    /// Whether the look stopped at its bound (later files are not
    /// watched).
    pub fn is_full(&self) -> bool {
        self.0.len() >= MAX_FILES
    }

    /// The files added, removed or changed since `before` (relative to
    /// the project), those a compile generates left out when the project
    /// (as it is now) has a nango.yaml.
    pub fn changed_since(&self, before: &Snapshot) -> Vec<PathBuf> {
        let generated: &[&str] = if self.0.contains_key(Path::new("nango.yaml")) {
            &GENERATED
        } else {
            &[]
        };
        let mut out: Vec<PathBuf> = self
            .0
            .iter()
            .filter(|(p, stamp)| before.0.get(*p) != Some(*stamp))
            .map(|(p, _)| p.clone())
            .chain(
                before
                    .0
                    .keys()
                    .filter(|p| !self.0.contains_key(*p))
                    .cloned(),
            )
            .filter(|p| {
                !generated
                    .iter()
                    .any(|g| p.as_os_str() == std::ffi::OsStr::new(g))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nango.yaml project's `models.ts` is generated; a zero-yaml one's
    /// is the user's zod models.
    #[test]
    fn models_ts_is_ignored_only_beside_a_nango_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| std::fs::write(dir.path().join(rel), text).unwrap();
        write("index.ts", "import './github/syncs/a.js';\n");
        write("models.ts", "export const A = z.object({});\n");
        let before = Snapshot::take(dir.path(), &[]);
        write(
            "models.ts",
            "export const A = z.object({ id: z.string() });\n",
        );
        assert_eq!(
            Snapshot::take(dir.path(), &[]).changed_since(&before),
            [PathBuf::from("models.ts")]
        );
        write("nango.yaml", "integrations: {}\n");
        let before = Snapshot::take(dir.path(), &[]);
        write("models.ts", "export interface A { id: string }\n");
        assert_eq!(
            Snapshot::take(dir.path(), &[]).changed_since(&before),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn sources_are_watched_and_builds_and_generated_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("nango.yaml", "integrations: {}\n");
        write("index.ts", "import './github/syncs/a.js';\n");
        write("github/syncs/a.ts", "export default 1;\n");
        let out = dir.path().join("out");
        let excluded = std::slice::from_ref(&out);
        let before = Snapshot::take(dir.path(), excluded);
        write("node_modules/zod/index.js", "x");
        write(".nango/nango.json", "[]");
        write(".sluice/build/a.js", "x");
        write("models.ts", "export interface A {}\n");
        write("notes.txt", "x");
        // A build folder put inside the project (`--build-dir out`).
        write("out/github.js", "x");
        assert_eq!(
            Snapshot::take(dir.path(), excluded).changed_since(&before),
            Vec::<PathBuf>::new()
        );
        write("github/syncs/a.ts", "export default 22;\n");
        write("github/helpers.ts", "export const h = 1;\n");
        std::fs::remove_file(dir.path().join("index.ts")).unwrap();
        assert_eq!(
            Snapshot::take(dir.path(), excluded).changed_since(&before),
            [
                PathBuf::from("github/helpers.ts"),
                PathBuf::from("github/syncs/a.ts"),
                PathBuf::from("index.ts"),
            ]
        );
    }
}
