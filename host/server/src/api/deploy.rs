//! Deploys: components are uploaded once each (`PUT
//! /sluice/components/:sha256`), then `POST /sluice/deploy` with the
//! manifest. The deploy is compiled (Cranelift, off the request threads)
//! and checked before anything changes; it becomes a new version, the
//! newest `keep_deployments` are kept, and any of them can be made active
//! again (rollback). Components no kept deployment names are deleted
//! ([`reclaim`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde_json::{Value, json};
use sluice_project::deploy::{Manifest, sha256_hex};

use super::{ApiPath, Env, JsonBody, RawBody};
use crate::app::{ACTIVE, App, DEPLOYMENTS, Deployed, DeploymentDoc, EnvState, deployment_key};
use crate::error::{ApiError, ApiResult};

/// The components an environment uploaded (`sha256` → `true`): blobs are
/// stored once for all environments, but a new deploy may use only those
/// its own environment uploaded — another tenant's component is not
/// reachable by knowing its hash, nor is whether it exists (or whether
/// another environment uses it: [`reclaim`] drops an environment's record
/// by what that environment did alone).
const UPLOADED: &str = "uploaded-components";

/// The largest nango.yaml or nango.json a deploy takes.
const MAX_DEFINITIONS_BYTES: usize = 8 << 20;

/// Deploys whose definitions are checked at once.
static DEFINITION_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Deploys compiling at once, all environments together (a Cranelift
/// compile of a TypeScript component takes every core and half a GB):
/// two, and each environment compiles one deploy at a time
/// ([`EnvState::deploy_lock`]), so one environment's deploys never hold
/// up every other's.
static COMPILES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The length of `v` serialized, counted without writing it out (it stops
/// counting a little past the bound).
fn json_len(v: &[Value]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            if self.0 > MAX_DEFINITIONS_BYTES {
                return Err(std::io::Error::other("past the bound"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// When the environment last uploaded each component (`sha256` → time);
/// apart from [`UPLOADED`], whose `true` older builds read. A record
/// without a time is old.
const UPLOAD_TIMES: &str = "component-upload-times";

/// The components of a deploy, read from the store.
type Blobs = Arc<std::collections::HashMap<String, Vec<u8>>>;

pub async fn put_component(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(sha): ApiPath<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let sha = sha.to_ascii_lowercase();
    if sha256_hex(&body) != sha {
        return Err(ApiError::invalid_body(format!(
            "the body's SHA-256 is not `{sha}`"
        )));
    }
    // Room among the environment's uploads not yet deployed (an upload
    // of one it has is only seen again).
    {
        let mut pending = env
            .pending_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Past two grace periods an unused upload has been deleted.
        let forgotten = app.config.upload_grace.saturating_mul(2);
        pending.retain(|_, (at, _)| at.elapsed() < forgotten);
        if !pending.contains_key(&sha) {
            let held: usize = pending.values().map(|(_, n)| n).sum();
            let max = app.config.max_pending_upload_bytes;
            if held.saturating_add(body.len()) > max {
                return Err(ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "too_many_request",
                    format!(
                        "environment `{}` has {held} bytes of components uploaded and not deployed (at most {max}); this one ({} bytes) was not stored: deploy what was uploaded, or wait for the unused uploads to be deleted (within two hours)",
                        env.name(),
                        body.len()
                    ),
                ));
            }
        }
        pending.insert(sha.clone(), (std::time::Instant::now(), body.len()));
    }
    let _gate = app.components_gate.read().await;
    if let Err(e) = app.store.put_blob(&body).await {
        // Not stored: it holds no room.
        env.pending_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sha);
        return Err(e.into());
    }
    // The record, then its time: a time is never left without its record
    // (a record without one is taken for an old upload).
    env.store.put_doc(UPLOADED, &sha, &true).await?;
    env.store.put_doc(UPLOAD_TIMES, &sha, &Utc::now()).await?;
    Ok(Json(json!({ "sha256": sha, "size": body.len() })))
}

/// Loads a manifest's components into the runtime (compiling what is not
/// cached): [`gather`], then [`compile`].
async fn install(
    app: &Arc<App>,
    manifest: Manifest,
    uploaded_by: Option<&EnvState>,
) -> ApiResult<Deployed> {
    let blobs = gather(app, &manifest, uploaded_by).await?;
    compile(app, manifest, blobs).await
}

/// A manifest's components, read from the store. A new deploy
/// (`uploaded_by`) finds only the components its environment uploaded; a
/// rollback or a start, what the environment's own deployment names.
/// Callers that may run beside [`reclaim`] hold `components_gate`.
async fn gather(
    app: &App,
    manifest: &Manifest,
    uploaded_by: Option<&EnvState>,
) -> ApiResult<Blobs> {
    let mut blobs = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for c in &manifest.components {
        if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "invalid_deploy",
                format!(
                    "a component's `sha256` must be 64 hexadecimal digits, got `{}`",
                    c.sha256
                ),
            ));
        }
        if let Some(env) = uploaded_by
            && env.store.doc::<Value>(UPLOADED, &c.sha256).await?.is_none()
        {
            missing.push(c.sha256.clone());
            continue;
        }
        match app.store.blob(&c.sha256).await? {
            Some(b) => {
                blobs.insert(c.sha256.clone(), b);
            }
            None => missing.push(c.sha256.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::bad_request(
            "missing_components",
            "upload these components first: PUT /sluice/components/<sha256>",
        )
        .with_payload(json!({ "missing": missing })));
    }
    Ok(Arc::new(blobs))
}

/// Compiles (what is not cached) and loads a manifest's components on a
/// blocking thread.
async fn compile(app: &App, manifest: Manifest, blobs: Blobs) -> ApiResult<Deployed> {
    let runtime = app.runtime.clone();
    let catalog = tokio::task::spawn_blocking(move || {
        manifest.install(&runtime, |sha| blobs.get(sha).cloned())
    })
    .await
    .map_err(|e| ApiError::internal(format!("the deploy's compile stopped: {e}")))?
    .map_err(deploy_error)?;
    Ok(Deployed {
        version: 0,
        created_at: Utc::now(),
        catalog: Arc::new(catalog),
    })
}

/// A deploy's error: the deploy's own fault is 400 `invalid_deploy`; a
/// component cache the server cannot write (a full disk) is the server's,
/// 503 `storage_error`.
fn deploy_error(e: sluice_project::deploy::DeployError) -> ApiError {
    match &e {
        sluice_project::deploy::DeployError::Load(sluice_runtime::LoadError::Cache { .. }) => {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "storage_error",
                format!("the server could not store the deploy: {e}; nothing was deployed"),
            )
        }
        _ => ApiError::bad_request("invalid_deploy", e.to_string()),
    }
}

/// The environment's active deployment as stored.
async fn active_doc(env: &EnvState) -> ApiResult<Option<DeploymentDoc>> {
    let Some(version) = env.store.doc::<u64>(ACTIVE, "version").await? else {
        return Ok(None);
    };
    Ok(env.store.doc(DEPLOYMENTS, &deployment_key(version)).await?)
}

async fn next_version(env: &EnvState) -> ApiResult<u64> {
    let last: Vec<(String, DeploymentDoc)> = env.store.docs(DEPLOYMENTS, "", None, 1, true).await?;
    Ok(last.first().map(|(_, d)| d.version + 1).unwrap_or(1))
}

fn summary(d: &DeploymentDoc, active: Option<u64>) -> Value {
    let scripts: Vec<Value> = d
        .manifest
        .components
        .iter()
        .flat_map(|c| c.scripts.iter())
        .map(|s| json!({ "integration": s.integration, "name": s.name, "kind": s.kind }))
        .collect();
    json!({
        "version": d.version,
        "created_at": d.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "active": active == Some(d.version),
        "scripts": scripts,
    })
}

pub async fn deploy(
    State(app): State<Arc<App>>,
    Env(env): Env,
    JsonBody(mut manifest): JsonBody<Manifest>,
) -> ApiResult<Json<Value>> {
    // Hashes are compared as `sha256_hex` writes them.
    for c in &mut manifest.components {
        c.sha256.make_ascii_lowercase();
    }
    // A deploy of part of a project (`sluice deploy -i/-s/-a`) is merged
    // into the active deployment: the rest of it stays as deployed.
    let scoped = manifest.scope.is_some();
    let _deploying = env.deploy_lock.lock().await;
    // Only a merge makes them (from what was deployed).
    manifest.script_versions.clear();
    let base = if scoped {
        active_doc(&env).await?
    } else {
        None
    };
    let base_version = base.as_ref().map(|d| d.version);
    // A deploy's definitions are held in memory, parsed, while it is
    // active (a nango.yaml takes ~100 times its size): bounded far above
    // any project's.
    if manifest.nango_yaml.len() > MAX_DEFINITIONS_BYTES
        || manifest
            .nango_json
            .as_ref()
            .is_some_and(|d| json_len(d) > MAX_DEFINITIONS_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_deploy",
            format!(
                "the deploy's nango.yaml or nango.json is larger than {} MiB",
                MAX_DEFINITIONS_BYTES >> 20
            ),
        ));
    }
    // Parsing and merging the definitions is CPU work and memory: off the
    // request threads, one deploy's at a time.
    let one_check = DEFINITION_CHECKS.acquire().await;
    let manifest = tokio::task::spawn_blocking(move || {
        let manifest = manifest.merged(base.as_ref().map(|d| &d.manifest))?;
        manifest.check_new()?;
        Ok::<_, sluice_project::deploy::DeployError>(manifest)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the deploy's check stopped: {e}")))?
    .map_err(|e| ApiError::bad_request("invalid_deploy", e.to_string()))?;
    drop(one_check);
    let blobs = {
        let _gate = app.components_gate.read().await;
        gather(&app, &manifest, Some(&env)).await?
    };
    let compiling = COMPILES.acquire().await;
    let mut deployed = compile(&app, manifest.clone(), blobs.clone()).await?;
    drop(compiling);
    // Only now, with everything checked and compiled, is anything written:
    // the components first (a reclaim during the compile may have deleted
    // one), then, before any reclaim can run again, the deployment naming
    // them. One deploy or rollback at a time (two would take the same
    // version).
    let gate = app.components_gate.read().await;
    keep_blobs(&app, &env, &blobs).await?;
    let one_at_a_time = env.config_lock.lock().await;
    if scoped && active_doc(&env).await?.map(|d| d.version) != base_version {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "deploy_conflict",
            "another deploy or a rollback changed the environment's active deployment while this one compiled: nothing was deployed; deploy again",
        ));
    }
    let version = next_version(&env).await?;
    let doc = DeploymentDoc {
        version,
        created_at: deployed.created_at,
        manifest,
    };
    env.store
        .put_doc(DEPLOYMENTS, &deployment_key(version), &doc)
        .await?;
    env.store.put_doc(ACTIVE, "version", &version).await?;
    deployed.version = version;
    env.set_deployment(Arc::new(deployed));
    app.scheduler.reconcile(&env).await?;
    // The deploy stands; what it left unused goes after the answer.
    let pruned = prune_versions(&app, &env, version).await;
    drop((one_at_a_time, gate));
    if let Err(e) = pruned {
        app.config.events.say(&format!(
            "environment `{}`: deleting deployments older than the newest {} failed: {}",
            env.name(),
            app.config.keep_deployments,
            e.message
        ));
    }
    request_reclaim(&app);
    {
        let mut pending = env
            .pending_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for c in &doc.manifest.components {
            pending.remove(&c.sha256.to_ascii_lowercase());
        }
    }
    let mut answer = summary(&doc, Some(version));
    // Which environment the key named, for the CLI to say.
    answer["environment"] = json!(env.name());
    Ok(Json(answer))
}

/// Deletes the environment's deployments beyond the newest
/// `keep_deployments` but the `active` one (the caller holds the
/// environment's `config_lock`); how many went.
async fn prune_versions(app: &App, env: &EnvState, active: u64) -> ApiResult<usize> {
    let keep = app.config.keep_deployments.max(1);
    let mut pruned = 0;
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let page: Vec<(String, Value)> = env
            .store
            .docs(DEPLOYMENTS, "", after.as_deref(), 500, true)
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(pruned);
        };
        after = Some(last.clone());
        for (key, doc) in &page {
            seen += 1;
            let version = doc["version"].as_u64();
            if seen > keep && version != Some(active) {
                env.store.delete_doc(DEPLOYMENTS, key).await?;
                pruned += 1;
            }
        }
    }
}

/// Writes back any of a deploy's components that a [`reclaim`] deleted
/// while it compiled (the caller holds `components_gate`, so none goes
/// again before its deployment names it).
async fn keep_blobs(app: &App, env: &EnvState, blobs: &Blobs) -> ApiResult<()> {
    for (sha, bytes) in blobs.iter() {
        if !app.store.has_blob(sha).await? {
            app.store.put_blob(bytes).await?;
        }
        // And the environment's record of it, which that reclaim may have
        // deleted too: a later deploy of part of the project, naming it
        // without uploading it again, finds it. The record, then its time
        // (see `put_component`).
        if env.store.doc::<Value>(UPLOADED, sha).await?.is_none() {
            env.store.put_doc(UPLOADED, sha, &true).await?;
            env.store.put_doc(UPLOAD_TIMES, sha, &Utc::now()).await?;
        }
    }
    Ok(())
}

/// Runs [`reclaim`] soon, once for every request made before it starts.
pub fn request_reclaim(app: &Arc<App>) {
    if app
        .reclaim_requested
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move { reclaim_logged(&app).await });
}

/// [`reclaim`], its outcome told to the operator when it deleted
/// something or failed.
async fn reclaim_logged(app: &App) {
    match reclaim(app).await {
        Ok(0) => {}
        Ok(n) => app.config.events.say(&format!(
            "deleted {n} uploaded component(s) no kept deployment uses"
        )),
        Err(e) => app.config.events.say(&format!(
            "deleting the components no deployment uses failed (they stay; the next deploy tries again): {}",
            e.message
        )),
    }
}

/// Deletes what no kept deployment needs. An environment's record of
/// having uploaded a component goes when none of its own kept deployments
/// names it and its upload is older than `upload_grace` (a deploy about to
/// name it) — decided by what that environment did alone, so it learns
/// nothing of the others; a deploy naming it then asks for it again. A
/// component goes when no kept deployment of any environment names it and
/// no environment's record of it is left (records first: a crash between
/// leaves a component no one can name, deleted next time). How many
/// components were deleted.
pub async fn reclaim(app: &App) -> ApiResult<usize> {
    let _alone = app.components_gate.write().await;
    // Requests from here on need another pass.
    app.reclaim_requested
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let recent = chrono::Duration::from_std(app.config.upload_grace)
        .ok()
        .and_then(|grace| Utc::now().checked_sub_signed(grace))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let mut named_anywhere = std::collections::HashSet::new();
    let mut recorded = std::collections::HashSet::new();
    for env in app.envs() {
        let mut named = std::collections::HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page: Vec<(String, DeploymentDoc)> = env
                .store
                .docs(DEPLOYMENTS, "", after.as_deref(), 100, false)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, d) in &page {
                named.extend(
                    d.manifest
                        .components
                        .iter()
                        .map(|c| c.sha256.to_ascii_lowercase()),
                );
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page: Vec<(String, Value)> = env
                .store
                .docs(UPLOADED, "", after.as_deref(), 1000, false)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (sha, _) in page {
                let uploaded: Option<chrono::DateTime<Utc>> =
                    env.store.doc(UPLOAD_TIMES, &sha).await?;
                if named.contains(&sha) || uploaded.is_some_and(|at| at > recent) {
                    recorded.insert(sha);
                } else {
                    env.store.delete_doc(UPLOADED, &sha).await?;
                    env.store.delete_doc(UPLOAD_TIMES, &sha).await?;
                }
            }
        }
        named_anywhere.extend(named);
    }
    let mut deleted = 0;
    for sha in app.store.blob_hashes().await? {
        if named_anywhere.contains(&sha) || recorded.contains(&sha) {
            continue;
        }
        app.store.delete_blob(&sha).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// At start: each environment's deployments beyond the kept number are
/// deleted (the number may have been lowered), then the components no
/// deployment uses.
pub async fn reclaim_at_start(app: &Arc<App>) {
    for env in app.envs() {
        let _one_at_a_time = env.config_lock.lock().await;
        let active = env.deployment().map_or(0, |d| d.version);
        if let Err(e) = prune_versions(app, env, active).await {
            app.config.events.say(&format!(
                "environment `{}`: deleting deployments older than the newest {} failed: {}",
                env.name(),
                app.config.keep_deployments,
                e.message
            ));
        }
    }
    reclaim_logged(app).await;
}

pub async fn list(Env(env): Env) -> ApiResult<Json<Value>> {
    // The active one first: a deploy landing before the list is read is
    // in it (read the other way round, the list could miss the version
    // that became active).
    let active = env.deployment().map(|d| d.version);
    let docs: Vec<(String, DeploymentDoc)> =
        env.store.docs(DEPLOYMENTS, "", None, 1000, true).await?;
    Ok(Json(json!({
        "deployments": docs.iter().map(|(_, d)| summary(d, active)).collect::<Vec<_>>()
    })))
}

pub async fn activate(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(version): ApiPath<u64>,
) -> ApiResult<Json<Value>> {
    // In turn with the environment's deploys (one compile at a time per
    // environment).
    let _deploying = env.deploy_lock.lock().await;
    let (doc, blobs) = {
        let _gate = app.components_gate.read().await;
        let doc: DeploymentDoc = env
            .store
            .doc(DEPLOYMENTS, &deployment_key(version))
            .await?
            .ok_or_else(|| ApiError::not_found("not_found", format!("no deployment {version}")))?;
        let blobs = gather(&app, &doc.manifest, None).await?;
        (doc, blobs)
    };
    let compiling = COMPILES.acquire().await;
    let mut deployed = compile(&app, doc.manifest.clone(), blobs.clone()).await?;
    drop(compiling);
    deployed.version = version;
    deployed.created_at = doc.created_at;
    let gate = app.components_gate.read().await;
    let _one_at_a_time = env.config_lock.lock().await;
    // A deploy may have deleted it meanwhile (it was past the kept ones).
    if env
        .store
        .doc::<Value>(DEPLOYMENTS, &deployment_key(version))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(
            "not_found",
            format!("no deployment {version}"),
        ));
    }
    keep_blobs(&app, &env, &blobs).await?;
    env.store.put_doc(ACTIVE, "version", &version).await?;
    drop(gate);
    env.set_deployment(Arc::new(deployed));
    app.scheduler.reconcile(&env).await?;
    let mut answer = summary(&doc, Some(version));
    // Which environment the key named, for the CLI to say.
    answer["environment"] = json!(env.name());
    Ok(Json(answer))
}

/// At start: every environment's active deployment, loaded (from the
/// compile cache, normally) before the server listens.
pub async fn load_active(app: &Arc<App>) -> Result<(), crate::ServerError> {
    for env in app.envs() {
        let Some(version) = env.store.doc::<u64>(ACTIVE, "version").await? else {
            continue;
        };
        let failed = |message: String| crate::ServerError::Deployment {
            env: env.name().to_string(),
            version,
            message,
        };
        let doc: DeploymentDoc = env
            .store
            .doc(DEPLOYMENTS, &deployment_key(version))
            .await?
            .ok_or_else(|| failed("its manifest is missing".into()))?;
        let mut deployed = install(app, doc.manifest, None)
            .await
            .map_err(|e| failed(e.message))?;
        deployed.version = version;
        deployed.created_at = doc.created_at;
        env.set_deployment(Arc::new(deployed));
    }
    Ok(())
}
