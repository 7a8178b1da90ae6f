//! Builds the guest components the tests run, for `wasm32-wasip2`, in a
//! nested cargo with its own target directory, and writes a constant with the
//! path of each (`guests.rs` in OUT_DIR). Guest bindings come from the same
//! `wit/` as the host's, so host and guests cannot drift.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target the guests are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// The guest crates: (constant prefix, manifest relative to the repo root).
const CRATES: &[(&str, &str)] = &[
    ("", "tests/guests/Cargo.toml"),
    ("HUBSPOT_RUST_", "examples/hubspot-rust/Cargo.toml"),
];

/// Inputs whose change rebuilds the guests.
const WATCH: &[&str] = &[
    "guest-sdk/ts/package-lock.json",
    "wit",
    "guest-sdk/rust/src",
    "guest-sdk/rust/macros/src",
    "guest-sdk/rust/Cargo.toml",
    "tests/guests/src",
    "tests/guests/Cargo.toml",
    "examples/hubspot-rust/src",
    "examples/hubspot-rust/Cargo.toml",
];

/// Variables the outer cargo (or clippy) sets that must not leak into the
/// nested wasm build.
const SCRUB: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
];

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside a target directory")
        .to_path_buf();
    let guest_target = target.join("wasm-guests");

    for w in WATCH {
        println!("cargo:rerun-if-changed={}", root.join(w).display());
    }

    ensure_wasm_target(&root);
    let mut consts = String::new();
    for (prefix, manifest) in CRATES {
        for (name, path) in build(&root.join(manifest), &guest_target) {
            let ident = format!("{prefix}{}", name.to_uppercase().replace('-', "_"));
            consts.push_str(&format!(
                "/// `{name}`, built from `{manifest}`.\npub const {ident}: &str = {:?};\n",
                path.display().to_string()
            ));
        }
    }
    consts.push_str(&format!(
        "/// Where the tests cache precompiled components (kept between runs).\npub const CACHE_DIR: &str = {:?};\n",
        target.join("sluice-test-cache").display().to_string()
    ));
    consts.push_str(&format!(
        "/// Where the tests build nango-integrations folders (kept between runs).\npub const BUILD_DIR: &str = {:?};\n",
        target.join("sluice-test-build").display().to_string()
    ));
    npm_install(&root.join("guest-sdk/ts"));
    std::fs::write(out_dir.join("guests.rs"), consts).expect("write guests.rs");
}

/// Installs the TypeScript SDK's npm dependencies (esbuild,
/// componentize-js) when its lockfile is newer than the installed tree.
fn npm_install(sdk: &Path) {
    let lock = sdk.join("package-lock.json");
    let installed = sdk.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(i), Some(l)) = (modified(&installed), modified(&lock))
        && i >= l
    {
        return;
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(sdk)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run npm (Node.js 20 or later must be installed) for guest-sdk/ts");
    assert!(status.success(), "npm install in {} failed", sdk.display());
}

/// Adds the wasm32-wasip2 standard library to the toolchain the nested cargo
/// compiles with when it lacks it: rust-toolchain.toml lists the target, but
/// rustup adds it only when it installs the toolchain itself, and
/// `RUSTUP_AUTO_INSTALL=0` turns that off. Without rustup the nested build
/// reports the missing target.
fn ensure_wasm_target(root: &Path) {
    // The nested cargo inherits RUSTC (the outer cargo's rustc).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run rustc --print sysroot");
    assert!(output.status.success(), "{rustc} --print sysroot failed");
    let std_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        .join("lib/rustlib")
        .join(WASM_TARGET);
    if std_dir.is_dir() {
        return;
    }
    // Inside cargo run by rustup, RUSTUP_TOOLCHAIN names the toolchain; else
    // the one rustup resolves for the repo (rust-toolchain.toml).
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| active_toolchain(root));
    let mut args = vec!["target", "add"];
    if let Some(toolchain) = &toolchain {
        args.extend(["--toolchain", toolchain]);
    }
    args.push(WASM_TARGET);
    let command = format!("rustup {}", args.join(" "));
    let status = match Command::new("rustup")
        .args(&args)
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
    {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "cargo:warning={} is missing and rustup is not installed: install the {WASM_TARGET} target for {rustc}",
                std_dir.display()
            );
            return;
        }
        Err(e) => panic!("run `{command}`: {e}"),
    };
    assert!(
        status.success(),
        "installing the {WASM_TARGET} target the guest components need failed; run `{command}` and build again"
    );
    assert!(
        std_dir.is_dir(),
        "`{command}` succeeded but {} is still missing; install the {WASM_TARGET} target for {rustc}",
        std_dir.display()
    );
    println!(
        "cargo:warning=installed the {WASM_TARGET} target the guest components need (`{command}`)"
    );
}

/// The toolchain rustup resolves in `dir`, if rustup is there to ask.
fn active_toolchain(dir: &Path) -> Option<String> {
    let output = Command::new("rustup")
        .args(["show", "active-toolchain"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    // "<name> (<why it is active>)"
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Builds every binary of a crate; returns (name, .wasm path) pairs.
fn build(manifest: &Path, target_dir: &Path) -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--bins",
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(manifest)
    .env("CARGO_TARGET_DIR", target_dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for var in SCRUB {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("run cargo for the guest components");
    assert!(
        output.status.success(),
        "building the guest components of {} failed (is the wasm32-wasip2 target installed? rust-toolchain.toml asks for it)",
        manifest.display()
    );
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["target"]["kind"][0] != "bin" {
            continue;
        }
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            found.push((name, PathBuf::from(wasm)));
        }
    }
    assert!(
        !found.is_empty(),
        "{} produced no components",
        manifest.display()
    );
    found
}
