//! Deploys: components are uploaded once each (`PUT
//! /sluice/components/:sha256`), then `POST /sluice/deploy` with the
//! manifest. The deploy is compiled (Cranelift, off the request threads)
//! and checked before anything changes; it becomes a new version, the
//! newest `keep_deployments` are kept, and any of them can be made active
//! again (rollback). Components no kept deployment names are deleted
//! ([`reclaim`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sluice_project::deploy::{ComponentEntry, Manifest};

use super::{ApiPath, DecodedBody, Env};
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

fn too_large_definitions() -> ApiError {
    ApiError::bad_request(
        "invalid_deploy",
        format!(
            "the deploy's nango.yaml or nango.json is larger than {} MiB",
            MAX_DEFINITIONS_BYTES >> 20
        ),
    )
}

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

/// An environment's room among its uploads not yet deployed
/// (`ServerConfig::max_pending_upload_bytes`), claimed for one upload:
/// given back when dropped unless [`Claim::keep`] says it was stored.
struct Claim<'a> {
    env: &'a EnvState,
    sha: &'a str,
    /// This upload made the entry (another of the same component made it
    /// before: it is left to that one).
    made: bool,
}

impl<'a> Claim<'a> {
    /// Claims `bytes` for component `sha` (`None`: not known yet, claimed
    /// by [`Claim::settle`]); none when the environment's entry for it is
    /// there already (an upload of a component it has is only seen
    /// again). 413 when `bytes` are more than the whole room, 429 when
    /// the room left is too small.
    fn new(app: &App, env: &'a EnvState, sha: &'a str, bytes: Option<usize>) -> ApiResult<Self> {
        let mut claim = Claim {
            env,
            sha,
            made: false,
        };
        let mut pending = env
            .pending_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Past two grace periods an unused upload has been deleted.
        let forgotten = app.config.upload_grace.saturating_mul(2);
        pending.retain(|_, (at, _)| at.elapsed() < forgotten);
        if let Some(bytes) = bytes
            && !pending.contains_key(sha)
        {
            let held: usize = pending.values().map(|(_, n)| n).sum();
            room_for(app, env, held, bytes)?;
            pending.insert(sha.to_string(), (std::time::Instant::now(), bytes));
            claim.made = true;
        }
        Ok(claim)
    }

    /// The upload read whole, `bytes` long: its claim made or set to its
    /// size, and its time now.
    fn settle(&mut self, app: &App, bytes: usize) -> ApiResult<()> {
        let mut pending = self
            .env
            .pending_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !self.made && !pending.contains_key(self.sha) {
            let held: usize = pending.values().map(|(_, n)| n).sum();
            room_for(app, self.env, held, bytes)?;
            self.made = true;
        }
        pending.insert(self.sha.to_string(), (std::time::Instant::now(), bytes));
        Ok(())
    }

    /// The component is stored: its claim stays.
    fn keep(mut self) {
        self.made = false;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.made {
            // Not stored: it holds no room.
            self.env
                .pending_uploads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.sha);
        }
    }
}

/// Whether `bytes` more fit an environment's room among its uploads not
/// yet deployed, of which it holds `held`: 413 naming the room when they
/// never would, 429 when they do not now.
fn room_for(app: &App, env: &EnvState, held: usize, bytes: usize) -> ApiResult<()> {
    let max = app.config.max_pending_upload_bytes;
    if bytes > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "environment `{}` may have at most {max} bytes of components uploaded and not deployed; this one ({bytes} bytes) is larger than that and was not read",
                env.name()
            ),
        ));
    }
    if held.saturating_add(bytes) > max {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_request",
            format!(
                "environment `{}` has {held} bytes of components uploaded and not deployed (at most {max}); this one ({bytes} bytes) was not stored: deploy what was uploaded, or wait for the unused uploads to be deleted (within two hours)",
                env.name()
            ),
        ));
    }
    Ok(())
}

/// Booked of the server's room for uploads held in memory
/// (`ServerConfig::max_held_upload_bytes`) for an upload of `bytes`:
/// twice them, the body as read and the store's copy as it writes it.
async fn book_upload(app: &App, env: &EnvState, bytes: usize) -> ApiResult<crate::budget::Booking> {
    let rooms = app.config.budgets.get(&app.config);
    rooms
        .uploads
        .book(env.store.id(), bytes.saturating_mul(2), rooms.wait)
        .await
        .map_err(|refused| match refused {
            crate::budget::Refused::TooLarge { most, .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "this component ({bytes} bytes) is larger than the server holds of an environment's uploads at once ({} bytes)",
                    most / 2
                ),
            ),
            crate::budget::Refused::Busy { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                format!(
                    "the server is holding as many component uploads as it takes at once; this one ({bytes} bytes) was not read: retry later"
                ),
            ),
        })
}

/// A component's body, at most `max` bytes, and its SHA-256 (hex),
/// hashed as it arrives; 408 `request_timeout` when it has not arrived
/// whole by the request's deadline.
async fn read_component(
    req: Request,
    declared: Option<usize>,
    max: usize,
) -> ApiResult<(Vec<u8>, String)> {
    use futures_util::StreamExt as _;
    use sha2::Digest as _;
    let deadline = req.extensions().get::<super::BodyDeadline>().copied();
    let mut stream = req.into_body().into_data_stream();
    let mut hasher = sha2::Sha256::new();
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(max));
    loop {
        let next = match deadline {
            Some(super::BodyDeadline(at)) => tokio::time::timeout_at(at, stream.next())
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "The request body did not arrive in time.",
                    )
                })?,
            None => stream.next().await,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk
            .map_err(|e| ApiError::invalid_body(format!("cannot read the request body: {e}")))?;
        let len = body.len() + chunk.len();
        if len > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "The request body is over the size limit of {max} bytes ({} MiB).",
                    max >> 20
                ),
            ));
        }
        if len > body.capacity() {
            // Grown as Vec would, never past the limit (booked).
            let cap = len.max(body.capacity() * 2).min(max);
            body.reserve_exact(cap - body.len());
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    let sha = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((body, sha))
}

/// `PUT /sluice/components/:sha256`. What it may hold is settled before
/// its body is read: its declared length against the environment's room
/// among uploads not yet deployed, and against the server's room for
/// uploads in memory (a body without a length books the largest one the
/// environment may hold, and is read up to that); the body is hashed as
/// it arrives.
pub async fn put_component(
    State(app): State<Arc<App>>,
    Env(env): Env,
    ApiPath(sha): ApiPath<String>,
    req: Request,
) -> ApiResult<Json<Value>> {
    let sha = sha.to_ascii_lowercase();
    let max = app.config.max_component_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    // (The route refused a declared length past `max` already.)
    let mut claim = Claim::new(&app, &env, &sha, declared)?;
    // A body without a length books the largest the environment may hold
    // at once, and may be no larger.
    let limit = match declared {
        Some(_) => max,
        None => max.min(app.config.budgets.get(&app.config).uploads.env_bytes() / 2),
    };
    let _held = book_upload(&app, &env, declared.unwrap_or(limit).min(limit)).await?;
    let (body, digest) = read_component(req, declared, limit).await?;
    if digest != sha {
        return Err(ApiError::invalid_body(format!(
            "the body's SHA-256 is not `{sha}`"
        )));
    }
    claim.settle(&app, body.len())?;
    let _gate = app.components_gate.read().await;
    app.store.put_blob(&body).await?;
    claim.keep();
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

/// Of a stored deployment, its version alone.
#[derive(Deserialize)]
struct VersionOf {
    #[serde(default)]
    version: Option<u64>,
}

/// Of a stored deployment, what its summary shows ([`summary`]).
#[derive(Deserialize)]
struct Head {
    version: u64,
    created_at: DateTime<Utc>,
    manifest: ComponentsOf<ComponentEntry>,
}

/// Of a stored manifest, its components.
#[derive(Deserialize)]
struct ComponentsOf<C> {
    components: Vec<C>,
}

/// Of a stored component, its hash.
#[derive(Deserialize)]
struct HashOf {
    sha256: String,
}

/// Of a stored deployment, its components' hashes.
#[derive(Deserialize)]
struct HashesOf {
    manifest: ComponentsOf<HashOf>,
}

/// The environment's deployments as [`EnvStore::docs`] gives them
/// (`after`, `limit`, `reverse` alike), each decoded as `T` where it is
/// stored: `T` names the few members read, and the others (a nango.yaml
/// and a nango.json of up to 8 MiB each) are skipped unparsed, neither
/// copied out nor built as values.
///
/// [`EnvStore::docs`]: sluice_store::EnvStore::docs
async fn deployments_as<T: DeserializeOwned + Send>(
    env: &EnvState,
    after: Option<&str>,
    limit: usize,
    reverse: bool,
) -> ApiResult<Vec<(String, T)>> {
    let mut decoded: Vec<Result<T, serde_json::Error>> = Vec::new();
    let rows = env
        .store
        .docs_raw(DEPLOYMENTS, "", after, limit, reverse, &mut |bytes| {
            // As the store reads a document: without the depth limit (what
            // is read here is shallow, what is skipped is skipped flat).
            let mut de = serde_json::Deserializer::from_slice(bytes);
            de.disable_recursion_limit();
            decoded.push(T::deserialize(&mut de).and_then(|t| de.end().map(|()| t)));
            false
        })
        .await?;
    // (A backend that read again after a broken connection tested its
    // entries again: the last ones are the answer's.)
    let decoded = decoded.split_off(decoded.len().saturating_sub(rows.len()));
    if decoded.len() != rows.len() {
        return Err(ApiError::internal(format!(
            "the store listed {} deployments and showed {}",
            rows.len(),
            decoded.len()
        )));
    }
    rows.into_iter()
        .zip(decoded)
        .map(|((key, _), d)| {
            d.map(|d| (key.clone(), d))
                .map_err(|e| ApiError::internal(format!("deployment {key} cannot be read: {e}")))
        })
        .collect()
}

async fn next_version(env: &EnvState) -> ApiResult<u64> {
    let last: Vec<(String, VersionOf)> = deployments_as(env, None, 1, true).await?;
    Ok(last
        .first()
        .and_then(|(_, d)| d.version)
        .map_or(1, |v| v + 1))
}

/// A deployment as the API shows it.
fn summary(
    version: u64,
    created_at: DateTime<Utc>,
    components: &[ComponentEntry],
    active: Option<u64>,
) -> Value {
    let scripts: Vec<Value> = components
        .iter()
        .flat_map(|c| c.scripts.iter())
        .map(|s| json!({ "integration": s.integration, "name": s.name, "kind": s.kind }))
        .collect();
    json!({
        "version": version,
        "created_at": created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "active": active == Some(version),
        "scripts": scripts,
    })
}

/// The length of JSON text `text` without the whitespace between its
/// tokens (as serde writes it, but for escapes it would write otherwise).
fn compact_len(text: &str) -> usize {
    let (mut n, mut in_string, mut escaped) = (0usize, false, false);
    for &c in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            n += 1;
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = c == b'"';
            n += 1;
        }
    }
    n
}

/// `POST /sluice/deploy`. The manifest's values (its nango.json) are
/// parsed only once the text of its nango.json is within its bound and
/// the parse's cost is booked (`ServerConfig::max_parsed_bytes`), held
/// until the deploy ends.
pub async fn deploy(
    State(app): State<Arc<App>>,
    Env(env): Env,
    DecodedBody(body): DecodedBody,
) -> ApiResult<Json<Value>> {
    #[derive(Deserialize)]
    struct Definitions<'a> {
        #[serde(borrow, default)]
        nango_json: Option<&'a RawValue>,
    }
    // (A body this does not read is refused by the parse below.)
    if let Ok(Definitions {
        nango_json: Some(defs),
    }) = serde_json::from_slice::<Definitions>(&body)
        && compact_len(defs.get()) > MAX_DEFINITIONS_BYTES
    {
        return Err(too_large_definitions());
    }
    let _parsed = crate::budget::book_parsed(
        &app.config,
        env.store.id(),
        crate::budget::parse_cost(&body),
        "this deploy's manifest",
    )
    .await?;
    let mut manifest: Manifest = super::parse_json(&body)?;
    drop(body);
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
        return Err(too_large_definitions());
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
    reconcile(&app, &env).await;
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
    let mut answer = summary(
        doc.version,
        doc.created_at,
        &doc.manifest.components,
        Some(version),
    );
    // Which environment the key named, for the CLI to say.
    answer["environment"] = json!(env.name());
    Ok(Json(answer))
}

/// Brings the scheduler's schedules in line with the deployment just
/// made active. The deployment stands whatever happens here: a failure is
/// the operator's to hear of and is retried until it succeeds (every
/// second, doubling to five minutes; the scheduler reconciles by itself
/// only at start), not the request's answer (the CLI would report a
/// deploy that stands as failed, and its retry would make another
/// version).
async fn reconcile(app: &Arc<App>, env: &Arc<EnvState>) {
    let Err(e) = app.scheduler.reconcile(env).await else {
        return;
    };
    app.config.events.say(&format!(
        "environment `{}`: the schedules of the deployment just made active could not be set ({}); the deployment stands, and they are set again shortly",
        env.name(),
        e.message
    ));
    let id = env.store.id();
    fn failures(env: &crate::app::EnvState) -> std::sync::MutexGuard<'_, u64> {
        env.reconcile_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    let first = {
        let mut n = failures(env);
        *n += 1;
        *n == 1
    };
    if !first {
        // A retry is under way: it reconciles whatever is active then.
        return;
    }
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            // A server stopped meanwhile has nothing left to schedule.
            let Some(app) = app.upgrade() else { break };
            let Some(env) = app.envs().find(|e| e.store.id() == id).cloned() else {
                break;
            };
            let asked = *failures(&env);
            match app.scheduler.reconcile(&env).await {
                Ok(()) => {
                    let mut n = failures(&env);
                    if *n == asked {
                        *n = 0;
                        app.config.events.say(&format!(
                            "environment `{}`: the schedules of its active deployment are set",
                            env.name()
                        ));
                        return;
                    }
                    // Another failure since: once more, at once.
                    wait = std::time::Duration::ZERO;
                }
                Err(e) => {
                    wait = (wait * 2).clamp(
                        std::time::Duration::from_secs(1),
                        std::time::Duration::from_secs(300),
                    );
                    app.config.events.say(&format!(
                        "environment `{}`: setting the schedules of its active deployment failed again ({}); retrying in {} s",
                        env.name(),
                        e.message,
                        wait.as_secs()
                    ));
                }
            }
        }
    });
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
        let page: Vec<(String, VersionOf)> =
            deployments_as(env, after.as_deref(), 500, true).await?;
        let Some((last, _)) = page.last() else {
            return Ok(pruned);
        };
        after = Some(last.clone());
        for (key, doc) in &page {
            seen += 1;
            if seen > keep && doc.version != Some(active) {
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
            let page: Vec<(String, HashesOf)> =
                deployments_as(env, after.as_deref(), 100, false).await?;
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
    let heads: Vec<(String, Head)> = deployments_as(&env, None, 1000, true).await?;
    Ok(Json(json!({
        "deployments": heads
            .iter()
            .map(|(_, d)| summary(d.version, d.created_at, &d.manifest.components, active))
            .collect::<Vec<_>>()
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
        .doc::<IgnoredAny>(DEPLOYMENTS, &deployment_key(version))
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
    reconcile(&app, &env).await;
    let mut answer = summary(
        doc.version,
        doc.created_at,
        &doc.manifest.components,
        Some(version),
    );
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
