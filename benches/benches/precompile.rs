//! What precompiling a TypeScript component costs, first and later: the
//! issue's target is a second integration's precompile at most 20 % of the
//! first's (every componentize-js component carries the same engine, and
//! Cranelift's function cache should make it mostly cache hits).
//!
//! Four distinct TypeScript projects of this repository are componentized
//! (with the tests' caches: built once), then their components are
//! precompiled in turn by one runtime with a fresh cache — as `sluice
//! compile` does a project's integrations — and once more, unchanged, by a
//! new runtime on the same cache. Prints one row per component: wall time,
//! share of the first, and the function-cache entries it added (the
//! functions that missed the cache).
//!
//! `cargo bench -p sluice-benches --bench precompile`

use std::path::{Path, PathBuf};
use std::time::Instant;

use sluice_runtime::{Runtime, RuntimeConfig};
use sluice_tests::{compile_options, repo_root, runtime};

const PROJECTS: [(&str, &str); 4] = [
    ("benches/ts-bench", "ts-bench"),
    ("tests/ts-project", "ts-project"),
    ("examples/github-zero", "bench-github-zero"),
    ("examples/github-ts", "bench-github-ts"),
];

fn components() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for (dir, build) in PROJECTS {
        let project = sluice_project::compile::compile(
            &compile_options(&repo_root().join(dir), build),
            &runtime(),
            &mut std::io::sink(),
        )
        .unwrap_or_else(|e| panic!("compile {dir}: {e}"));
        let mut wasm: Vec<PathBuf> = std::fs::read_dir(&project.build_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", project.build_dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        wasm.sort();
        found.extend(wasm);
    }
    found
}

/// Files under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { count_files(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Precompiles `components` in turn; shares are of `first` (or of the
/// first component here). Returns the first component's seconds.
fn precompile_all(cache: &Path, components: &[PathBuf], label: &str, first: Option<f64>) -> f64 {
    let rt = Runtime::new(RuntimeConfig::new(cache)).unwrap_or_else(|e| panic!("runtime: {e}"));
    let functions = cache.join("functions");
    let mut first = first;
    let mut reference = None;
    let mut entries = count_files(&functions);
    for path in components {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let start = Instant::now();
        // A bundle loads through `load_bundle_bytes`; `load_bytes` compiles
        // it the same way and then fails to find a single script's exports,
        // which does not matter here.
        let _ = rt.load_bytes(&bytes, &path.display().to_string());
        let seconds = start.elapsed().as_secs_f64();
        reference.get_or_insert(seconds);
        let first = *first.get_or_insert(seconds);
        let now = count_files(&functions);
        let name = path
            .strip_prefix(repo_root().join("target"))
            .unwrap_or(path)
            .display();
        println!(
            "| {label} | {name} | {seconds:.2} s | {:.0} % | {} |",
            seconds / first * 100.0,
            now - entries
        );
        entries = now;
    }
    reference.unwrap_or(0.0)
}

fn main() {
    let components = components();
    let cache = tempfile::tempdir().expect("temp dir");
    println!("| run | component | precompile | of the first (empty cache) | functions compiled |");
    println!("|---|---|---|---|---|");
    let first = precompile_all(cache.path(), &components, "empty cache", None);
    // The artifacts go; the function cache stays: what a new component
    // whose engine was compiled before costs.
    for entry in std::fs::read_dir(cache.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().extension().is_some_and(|x| x == "cwasm") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    precompile_all(
        cache.path(),
        &components,
        "function cache warm",
        Some(first),
    );
}
