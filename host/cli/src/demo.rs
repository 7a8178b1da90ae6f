//! `sluice serve --demo`: the platform with the bundled example, on one
//! machine and no outside network. It writes the example folder (the one
//! `sluice init` creates) under the data directory, serves its mock of the
//! GitHub API on 127.0.0.1, points the `github` provider there, starts the
//! server, deploys the example, creates its integration and connection,
//! runs its sync once and prints what to try next.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sluice_project::compile::{self, CompileOptions};
use sluice_project::mock::{Fixture, Handler, MockResponse, MockServer};
use sluice_runtime::Runtime;
use sluice_runtime::providers::ProviderCatalog;
use sluice_server::{Server, ServerConfig};

const INTEGRATION: &str = "demo-github-integration";
const SYNC: &str = "github-issue-example";

/// Serves the example's fixture with GitHub's URLs (its pagination links)
/// turned into the mock's own.
async fn mock_github(project: &std::path::Path) -> anyhow::Result<MockServer> {
    let slot: Arc<OnceLock<Handler>> = Arc::new(OnceLock::new());
    let reader = slot.clone();
    let mock = MockServer::start(Arc::new(move |req| match reader.get() {
        Some(h) => h(req),
        None => MockResponse::json(503, &json!({"message": "starting"})),
    }))
    .await
    .context("cannot start the mock GitHub API")?;
    let text = std::fs::read_to_string(project.join("mock-api.yaml"))?;
    let local = project.join(".sluice").join("mock-api.local.yaml");
    std::fs::create_dir_all(local.parent().unwrap_or(project))?;
    std::fs::write(&local, text.replace("https://api.github.com", &mock.url()))?;
    let _ = slot.set(Fixture::from_file(&local)?.handler());
    Ok(mock)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let resp = http
        .request(method, &url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("connection-id", "demo")
        .header("provider-config-key", INTEGRATION)
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Writes `text` to `path` (mode 0600) and syncs it.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

pub async fn run(
    mut config: ServerConfig,
    master: sluice_store::MasterKey,
    mut providers: ProviderCatalog,
    cache_dir: std::path::PathBuf,
    cache_max_bytes: u64,
    sdk: Option<std::path::PathBuf>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let data = config.data_dir.clone();
    // The demo deploys its example over whatever the dev environment has:
    // only on a data directory it made itself (it keeps its key there).
    if sluice_server::StoreKind::detect(&data).is_some() && !data.join("demo-dev.key").exists() {
        bail!(
            "{} holds a store that `serve --demo` did not make: the demo would deploy its example over the dev environment's project; use a new --data",
            data.display()
        );
    }
    let project = data.join("demo-project");
    if !project.join("nango.yaml").exists() {
        sluice_project::init::init(&project, sluice_project::init::Starter::Yaml)?;
    }
    let mock = mock_github(&project).await?;
    if let Some(mut github) = providers.get("github").cloned() {
        github.proxy.base_url = Some(mock.url());
        providers.insert(github);
    }
    let initial = crate::cli::initial_keys();
    let given = initial
        .iter()
        .find(|(env, _)| env == "dev")
        .and_then(|(_, key)| key.clone());
    config
        .public_url
        .get_or_insert_with(|| format!("http://{}", config.listen));
    // The demo keeps the dev key it created beside the data (0600), so
    // running it again on the same directory works; written, and the
    // other keys shown, as soon as they are stored (they are shown once).
    let key_file = data.join("demo-dev.key");
    let (server, created) =
        Server::start_announcing(config, master, providers, &initial, |created| {
            for (env, key) in created {
                if env == "dev" {
                    write_private(&key_file, key)?;
                } else if initial.iter().any(|(e, k)| e == env && k.is_some()) {
                    // Given by the operator (NANGO_SECRET_KEY_<ENV>): not
                    // printed back, as `serve` does not.
                    writeln!(out, "Environment `{env}` takes the key given for it.\n")?;
                } else {
                    writeln!(
                        out,
                        "Environment `{env}` has a new secret key (shown once): {key}\n"
                    )?;
                }
            }
            out.flush()
        })
        .await?;
    let key = match created.iter().find(|(env, _)| env == "dev") {
        Some((_, key)) => key.clone(),
        None => match std::fs::read_to_string(&key_file).ok().or(given) {
            Some(k) => k.trim().to_string(),
            None => bail!(
                "this data directory already has its environments: set NANGO_SECRET_KEY_DEV to the dev key printed when it was created, or use a new --data"
            ),
        },
    };
    let base = server.url();

    writeln!(
        out,
        "Compiling the example in {} … (the first time, sluice installs its TypeScript toolchain with npm first: a minute or two)",
        project.display()
    )?;
    out.flush()?;
    let options = CompileOptions {
        dir: project.clone(),
        integration: None,
        sdk,
        cache_dir: cache_dir.clone(),
        cache_max_bytes,
        build_dir: None,
        tested_scripts: false,
    };
    let runtime = Runtime::new(options.runtime_config(1))?;
    let mut progress = Vec::new();
    let compiled = compile::compile(&options, &runtime, &mut progress)
        .with_context(|| String::from_utf8_lossy(&progress).into_owned())?;
    let deployed = sluice_project::deploy::upload(&compiled, &base, &key, None, None).await?;

    let http = reqwest::Client::new();
    let existing = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/integrations"),
        &key,
        Value::Null,
    )
    .await?;
    let has = existing["data"]
        .as_array()
        .is_some_and(|a| a.iter().any(|i| i["unique_key"] == INTEGRATION));
    if !has {
        call(
            &http,
            reqwest::Method::POST,
            format!("{base}/integrations"),
            &key,
            json!({"unique_key": INTEGRATION, "provider": "github"}),
        )
        .await?;
    }
    call(
        &http,
        reqwest::Method::POST,
        format!("{base}/connection"),
        &key,
        json!({
            "provider_config_key": INTEGRATION, "connection_id": "demo",
            "access_token": "demo-token",
            "metadata": {"owner": "octocat", "repo": "hello-world"},
        }),
    )
    .await?;
    // The sync starts on its own (`auto_start`): wait for its first run.
    let status_url = format!(
        "{base}/sync/status?provider_config_key={INTEGRATION}&syncs={SYNC}&connection_id=demo"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let result = loop {
        let status = call(
            &http,
            reqwest::Method::GET,
            status_url.clone(),
            &key,
            Value::Null,
        )
        .await?;
        let sync = &status["syncs"][0];
        match sync["status"].as_str() {
            Some("SUCCESS") | Some("ERROR") => break sync["latestResult"].clone(),
            Some("PAUSED") => {
                let run = call(
                    &http,
                    reqwest::Method::POST,
                    format!("{base}/sync/trigger"),
                    &key,
                    json!({"syncs": [SYNC], "provider_config_key": INTEGRATION, "connection_id": "demo", "wait": true}),
                )
                .await?;
                break run["runs"][0]["results"].clone();
            }
            _ if std::time::Instant::now() > deadline => {
                bail!("the demo sync did not finish within 120 s: {status}")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    };
    let headers = format!(
        "-H 'Authorization: Bearer {key}' -H 'Connection-Id: demo' -H 'Provider-Config-Key: {INTEGRATION}'"
    );
    writeln!(
        out,
        "\nsluice is running at {base} with the example deployed (version {}), \
         a connection `demo` to a mock of the GitHub API at {} and its sync run once (it runs \
         again on its schedule):\n  {}\n",
        deployed["version"],
        mock.url(),
        result
    )?;
    writeln!(out, "The dev environment's secret key: {key}\n")?;
    writeln!(
        out,
        "Read the synced records:\n  curl {headers} '{base}/records?model=GithubIssue'\n"
    )?;
    writeln!(
        out,
        "Run the action:\n  curl {headers} -H 'Content-Type: application/json' -d '{{\"action_name\":\"create-issue\",\"input\":{{\"title\":\"Hello\"}}}}' {base}/action/trigger\n"
    )?;
    writeln!(
        out,
        "Run the sync again now (it is queued; add \"wait\":true to answer when it ends):\n  curl {headers} -H 'Content-Type: application/json' -d '{{\"syncs\":[\"{SYNC}\"]}}' {base}/sync/trigger\n"
    )?;
    writeln!(
        out,
        "See its status and next scheduled run:\n  curl -H 'Authorization: Bearer {key}' '{base}/sync/status?provider_config_key={INTEGRATION}&syncs=*&connection_id=demo'\n"
    )?;
    writeln!(
        out,
        "The API's endpoints: curl {headers} {base}/openapi.json\nCtrl-C stops the server."
    )?;
    out.flush()?;
    let status = crate::cli::until_stopped(server, out).await?;
    drop(mock);
    Ok(status)
}
