//! The README's first command: `sluice serve --demo`, a real process. It
//! compiles the starter, deploys it, connects it to its bundled mock of
//! the GitHub API and runs its sync; what it prints must work.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice_tests::{guests, repo_root};

struct Demo {
    child: Child,
    /// Everything it printed before "Ctrl-C stops the server."
    printed: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the demo on `data` and waits until it says what to try.
fn start(data: &Path, keys: &[(&str, &str)]) -> Demo {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"));
    command
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--cache-dir")
        .arg(guests::CACHE_DIR)
        .arg("--sdk")
        .arg(repo_root().join("guest-sdk").join("ts"))
        .env_remove("NANGO_SECRET_KEY_DEV")
        .env_remove("NANGO_SECRET_KEY_PROD")
        .env_remove("SLUICE_MASTER_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in keys {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("Ctrl-C stops the server.");
            printed.push_str(&line);
            printed.push('\n');
            if done {
                let _ = tx.send(Ok(std::mem::take(&mut printed)));
            }
        }
        let _ = tx.send(Err(printed));
    });
    // Compiling the starter the first time takes a while (componentize-js
    // and its precompile); later runs reuse the build.
    match rx.recv_timeout(Duration::from_secs(600)) {
        Ok(Ok(printed)) => Demo { child, printed },
        Ok(Err(printed)) => panic!("the demo exited before it was ready:\n{printed}"),
        Err(_) => panic!("the demo was not ready in 10 minutes"),
    }
}

/// The text after `prefix` on the line that has it, up to `end`.
fn after<'a>(text: &'a str, prefix: &str, end: char) -> &'a str {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("`{prefix}` is not in:\n{text}"))
        + prefix.len();
    let rest = &text[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

async fn get(base: &str, key: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .header("connection-id", "demo")
        .header("provider-config-key", "demo-github-integration")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_its_synced_records_and_runs_again_on_its_data() {
    // A fixed folder emptied each run but for the starter's build, so the
    // (unchanged) starter is not componentized again.
    let data = PathBuf::from(guests::BUILD_DIR).join("demo-data");
    let build = data.join("demo-project").join(".sluice");
    let kept = PathBuf::from(guests::BUILD_DIR).join("demo-build-kept");
    let _ = std::fs::remove_dir_all(&kept);
    if build.exists() {
        std::fs::rename(&build, &kept).unwrap();
    }
    let _ = std::fs::remove_dir_all(&data);
    if kept.exists() {
        std::fs::create_dir_all(build.parent().unwrap()).unwrap();
        std::fs::rename(&kept, &build).unwrap();
    }

    let demo = start(
        &data,
        &[
            ("NANGO_SECRET_KEY_DEV", "demo-dev-key-0001"),
            ("NANGO_SECRET_KEY_PROD", "demo-prod-key-0001"),
        ],
    );
    let printed = &demo.printed;
    assert!(
        printed.contains("The dev environment's secret key: demo-dev-key-0001"),
        "{printed}"
    );
    assert!(
        printed.contains("{\"GithubIssue\":{\"added\":3,"),
        "the first sync run failed:\n{printed}"
    );
    let base = after(printed, "sluice is running at ", ' ').to_string();

    // The records its curl line reads.
    let (status, page) = get(&base, "demo-dev-key-0001", "/records?model=GithubIssue").await;
    assert_eq!(status, 200, "{page}");
    let titles: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["title"].as_str())
        .collect();
    assert!(titles.contains(&"Found a bug"), "{page}");
    // The prod key given at the first start is prod's, and not printed
    // back (the demo's own dev key is, for its curl lines).
    assert!(!printed.contains("demo-prod-key-0001"), "{printed}");
    let (status, body) = get(&base, "demo-prod-key-0001", "/connection").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"], serde_json::json!([]), "{body}");
    drop(demo);

    // Again on the same data, no keys given: it finds its dev key and the
    // records are still there.
    let demo = start(&data, &[]);
    let base = after(&demo.printed, "sluice is running at ", ' ').to_string();
    assert!(
        demo.printed
            .contains("The dev environment's secret key: demo-dev-key-0001"),
        "{}",
        demo.printed
    );
    let (status, page) = get(&base, "demo-dev-key-0001", "/records?model=GithubIssue").await;
    assert_eq!(status, 200, "{page}");
    assert!(!page["records"].as_array().unwrap().is_empty(), "{page}");
}

/// `serve --demo` deploys its example over the dev environment's project:
/// on a data directory it did not make it refuses, whatever keys are set,
/// and changes nothing there.
#[test]
fn the_demo_refuses_a_data_directory_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("NANGO_SECRET_KEY_DEV", "ops-dev-key-0001")
        .env_remove("SLUICE_MASTER_KEY")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in BufReader::new(serve.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("sluice is listening on ") {
            break;
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    // The key the operator gave is not printed back.
    assert!(
        printed.contains("Environment `dev` has the secret key NANGO_SECRET_KEY_DEV gives")
            && !printed.contains("ops-dev-key-0001"),
        "{printed}"
    );
    // Readable by its owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");

    let demo = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("NANGO_SECRET_KEY_DEV", "ops-dev-key-0001")
        .env_remove("SLUICE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!demo.status.success());
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(
        stderr.contains("that `serve --demo` did not make"),
        "{stderr}"
    );
    assert!(!data.join("demo-project").exists());

    // SLUICE_MASTER_KEY beside a master.key that holds another key: which
    // one sealed the store is not guessed; refused, naming both.
    let other = sluice_store::MasterKey::generate().to_base64();
    let two_keys = Command::new(env!("CARGO_BIN_EXE_sluice-under-test"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("SLUICE_MASTER_KEY", &other)
        .output()
        .unwrap();
    assert!(!two_keys.status.success());
    let stderr = String::from_utf8_lossy(&two_keys.stderr);
    assert!(
        stderr.contains("SLUICE_MASTER_KEY and")
            && stderr.contains("master.key hold different master keys"),
        "{stderr}"
    );
}
