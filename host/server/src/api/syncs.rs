//! Sync control (§4.3): `POST /sync/trigger` (queued on the scheduler, with
//! a sync mode), `/sync/start`, `/sync/pause`, `GET /sync/status`,
//! `PUT /sync/update-connection-frequency` and the variants of a sync
//! (`POST`/`DELETE /sync/:name/variant/:variant`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_runtime::exec::{SyncControl, SyncControlError};
use sluice_runtime::records::ConnectionRef;

use super::{ConnectionHeaders, Env, JsonBody};
use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};
use crate::runner::{SYNC_STATE, SYNC_VARIANTS, SyncMode, SyncState, sync_id, sync_key};
use crate::scheduler::interval;

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "each of `syncs` to be a sync's name (`name` or `name::variant`) or `{\"name\", \"variant\"}`"
)]
pub enum SyncName {
    Name(String),
    Variant { name: String, variant: String },
}

impl SyncName {
    /// `(name, variant)`; `"a::v"` names variant `v` of `a`.
    fn parts(&self) -> (String, String) {
        match self {
            SyncName::Name(n) => match n.split_once("::") {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (n.clone(), "base".to_string()),
            },
            SyncName::Variant { name, variant } => (name.clone(), variant.clone()),
        }
    }
}

/// A key the original does not take is refused, naming it (a misspelt
/// `syncMode` ran an incremental sync instead of a full one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    syncs: Vec<SyncName>,
    provider_config_key: Option<String>,
    connection_id: Option<String>,
    #[serde(default)]
    sync_mode: Option<SyncMode>,
    /// Deprecated: `true` means `full_refresh_and_clear_cache`.
    #[serde(default)]
    full_resync: Option<bool>,
    /// The newer form: `reset` runs a full refresh, `emptyCache` deletes
    /// the records first.
    #[serde(default)]
    opts: Option<TriggerOpts>,
    /// sluice's own: answer when the runs have ended, with their outcomes.
    #[serde(default)]
    wait: bool,
}

/// Not strict, as the original's is not.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerOpts {
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    empty_cache: bool,
}

/// One sync of one connection that a request names.
struct Target {
    conn: ConnectionRef,
    name: String,
    variant: String,
    key: String,
}

/// The syncs of the request for its connection (or every connection of the
/// integration), each checked to be deployed and scheduled.
async fn targets(
    app: &App,
    env: &EnvState,
    pck: &str,
    cid: Option<String>,
    syncs: &[(String, String)],
) -> ApiResult<Vec<Target>> {
    // A sync named twice is one target (a request naming one sync a
    // million times would otherwise be a million runs or writes).
    let mut unique = std::collections::HashSet::new();
    let syncs: Vec<&(String, String)> = syncs.iter().filter(|s| unique.insert(*s)).collect();
    if env.store.integration(pck).await?.is_none() {
        return Err(ApiError::unknown_integration(pck));
    }
    // The connection before the syncs, as the original looks them up.
    if let Some(cid) = &cid
        && !env.store.connection_exists(pck, cid).await?
    {
        return Err(ApiError::unknown_connection(pck, cid));
    }
    // Nothing deployed: no sync, as for a name the deployment lacks.
    let catalog = env.deployment().map(|d| d.catalog.clone());
    let integration = catalog.as_ref().and_then(|c| c.config.integration(pck));
    // As the original's: 400 `no_syncs_found` for a sync the connection
    // does not have.
    for (name, _) in syncs.iter().copied() {
        if integration.and_then(|i| i.sync(name)).is_none() {
            return Err(ApiError::bad_request(
                "no_syncs_found",
                format!(
                    "No syncs found given the inputs: integration `{pck}` has no sync `{name}`"
                ),
            ));
        }
    }
    let given = cid.is_some();
    let connections: Vec<String> = match cid {
        Some(cid) => {
            if !env.store.connection_exists(pck, &cid).await? {
                return Err(ApiError::unknown_connection(pck, &cid));
            }
            vec![cid]
        }
        None => env.store.connection_ids(pck).await?,
    };
    let one = given;
    // The variants created, read once for the request (the integration's,
    // or the connection's), not once per name and connection.
    let variants = if syncs.iter().any(|(_, v)| v != "base") {
        let prefix = match connections.as_slice() {
            [cid] if one => format!("{pck}\u{1f}{cid}\u{1f}"),
            _ => format!("{pck}\u{1f}"),
        };
        variant_keys(env, &prefix).await?
    } else {
        std::collections::HashSet::new()
    };
    let mut out = Vec::new();
    'connections: for cid in connections {
        let conn = ConnectionRef {
            provider_config_key: pck.to_string(),
            connection_id: cid,
        };
        for (name, variant) in syncs.iter().copied() {
            let key = sync_key(&conn, name, variant);
            // A variant is only where it was created.
            if variant != "base" && !variants.contains(&key) {
                if one {
                    return Err(ApiError::bad_request(
                        "no_syncs_found",
                        format!(
                            "No syncs found given the inputs: connection `{}` has no variant `{variant}` of sync `{name}`",
                            conn.connection_id
                        ),
                    ));
                }
                continue;
            }
            if !app.scheduler.is_scheduled(env, &key) {
                // A connection made while nothing was deployed, say. Not
                // one being deleted: its gate waits for the deletion,
                // after which it is gone and gets no schedule.
                let _running = env.runs.enter(&conn).await;
                // Nor one whose creation is still being checked (a
                // `validate-connection` script may ask for its syncs): it
                // is scheduled once the check passes.
                if !env
                    .store
                    .connection_exists(pck, &conn.connection_id)
                    .await?
                    || super::connections::validating(env, &conn).await?
                {
                    if one {
                        return Err(ApiError::unknown_connection(pck, &conn.connection_id));
                    }
                    continue 'connections;
                }
                app.scheduler.connection_created(env, &conn).await?;
                if variant != "base"
                    && let Some(sync) = env
                        .deployment()
                        .and_then(|d| d.catalog.config.integration(pck)?.sync(name).cloned())
                {
                    app.scheduler.variant_created(env, &key, &sync).await?;
                }
            }
            out.push(Target {
                conn: conn.clone(),
                name: name.clone(),
                variant: variant.clone(),
                key,
            });
        }
    }
    Ok(out)
}

/// The keys of the variants created under `prefix` and not being deleted.
async fn variant_keys(
    env: &EnvState,
    prefix: &str,
) -> ApiResult<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page: Vec<(String, Value)> = env
            .store
            .docs(SYNC_VARIANTS, prefix, after.as_deref(), 1000, false)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        out.extend(
            page.into_iter()
                .filter(|(_, doc)| doc["deleting"] != true)
                .map(|(key, _)| key),
        );
    }
    Ok(out)
}

/// Most syncs a trigger, start or pause names, as the original's start
/// and pause take: each is looked up for each connection named.
const MAX_SYNCS: usize = 256;

fn check_syncs_bound(syncs: &[SyncName]) -> ApiResult<()> {
    if syncs.len() > MAX_SYNCS {
        return Err(ApiError::invalid_body(format!(
            "`syncs` names {} syncs: at most {MAX_SYNCS}",
            syncs.len()
        )));
    }
    Ok(())
}

/// A trigger, start or pause for every connection that reaches no sync
/// (no connection has it, or the variant named) is refused, as the
/// original's. (For one connection, a sync it lacks was refused already,
/// and `syncs: []` on a connection without syncs is nothing to do.)
fn some_targets(targets: Vec<Target>, one_connection: bool) -> ApiResult<Vec<Target>> {
    if targets.is_empty() && !one_connection {
        return Err(ApiError::bad_request(
            "no_syncs_found",
            "No syncs found given the inputs: no connection of the integration has them",
        ));
    }
    Ok(targets)
}

/// Every sync of integration `pck`: each deployed sync's base, and the
/// variants created (of connection `cid`, when it is named).
async fn all_syncs(
    env: &EnvState,
    pck: &str,
    cid: Option<&str>,
) -> ApiResult<Vec<(String, String)>> {
    // Nothing deployed: no sync.
    let deployed: Vec<String> = env
        .deployment()
        .and_then(|d| {
            d.catalog
                .config
                .integration(pck)
                .map(|i| i.distinct_syncs().map(|s| s.name.clone()).collect())
        })
        .unwrap_or_default();
    let mut names: Vec<(String, String)> = deployed
        .iter()
        .map(|n| (n.clone(), "base".to_string()))
        .collect();
    let prefix = match cid {
        Some(cid) => format!("{pck}\u{1f}{cid}\u{1f}"),
        None => format!("{pck}\u{1f}"),
    };
    let mut after: Option<String> = None;
    let mut variants = std::collections::BTreeSet::new();
    loop {
        let page: Vec<(String, Value)> = env
            .store
            .docs(SYNC_VARIANTS, &prefix, after.as_deref(), 1000, false)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, doc) in page {
            if let Some((_, sync, variant)) = crate::runner::parse_sync_key(&key)
                && doc["deleting"] != true
                && deployed.iter().any(|d| d == sync)
            {
                variants.insert((sync.to_string(), variant.to_string()));
            }
        }
    }
    names.extend(variants);
    Ok(names)
}

/// The syncs a trigger, start or pause names: an empty list is every sync
/// of the connection (of every connection when none is named), as the
/// original's; 400 `no_syncs_found` when there is none for every
/// connection.
async fn names(
    env: &EnvState,
    pck: &str,
    cid: Option<&str>,
    syncs: &[SyncName],
) -> ApiResult<Vec<(String, String)>> {
    if !syncs.is_empty() {
        return Ok(syncs.iter().map(SyncName::parts).collect());
    }
    if env.store.integration(pck).await?.is_none() {
        return Err(ApiError::unknown_integration(pck));
    }
    let all = all_syncs(env, pck, cid).await?;
    // For one connection, none is nothing to do (the original answers
    // success); for all of them, none is an error.
    if all.is_empty() && cid.is_none() {
        return Err(ApiError::bad_request(
            "no_syncs_found",
            format!("No syncs found given the inputs: integration `{pck}` has no sync deployed"),
        ));
    }
    Ok(all)
}

pub async fn trigger(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    // No query parameters, as the original's (`requireEmptyQuery`).
    super::ApiQuery(super::providers::NoQuery {}): super::ApiQuery<super::providers::NoQuery>,
    JsonBody(body): JsonBody<TriggerBody>,
) -> ApiResult<Json<Value>> {
    trigger_body(&app, &env, headers, body).await
}

/// A script's `nango.triggerSync` and `nango.startSync`: the bodies the
/// original's SDK posts to the API, handled as the API handles them, in the
/// environment of the script (the only one this holds).
pub struct ScriptSyncs {
    pub app: Arc<App>,
    pub env: Arc<EnvState>,
}

fn control_error(e: ApiError) -> SyncControlError {
    SyncControlError {
        status: e.status.as_u16(),
        code: e.code,
        message: e.message,
    }
}

/// Runs `change` in a task of its own: a script ended meanwhile (a
/// timeout, its connection deleted) does not cut it short, as a client
/// that goes away does not cut an API request short.
async fn whole<F>(change: F) -> Result<(), SyncControlError>
where
    F: std::future::Future<Output = ApiResult<Json<Value>>> + Send + 'static,
{
    match tokio::spawn(change).await {
        Ok(done) => done.map(|_| ()).map_err(control_error),
        Err(e) => Err(SyncControlError {
            status: 500,
            code: "server_error".into(),
            message: format!("the request did not finish: {e}"),
        }),
    }
}

#[async_trait::async_trait]
impl SyncControl for ScriptSyncs {
    async fn trigger(&self, body: &[u8]) -> Result<(), SyncControlError> {
        let mut body: TriggerBody = super::parse_json(body).map_err(control_error)?;
        // A script does not wait for the runs it asks for (it would hold
        // its execution's permit, which a run may need).
        body.wait = false;
        let none = ConnectionHeaders {
            connection_id: None,
            provider_config_key: None,
        };
        let (app, env) = (self.app.clone(), self.env.clone());
        whole(async move { trigger_body(&app, &env, none, body).await }).await
    }

    async fn start(&self, body: &[u8]) -> Result<(), SyncControlError> {
        let body: StartPauseBody = super::parse_json(body).map_err(control_error)?;
        let none = ConnectionHeaders {
            connection_id: None,
            provider_config_key: None,
        };
        let (app, env) = (self.app.clone(), self.env.clone());
        whole(async move { start_or_pause(&app, &env, none, body, false).await }).await
    }
}

async fn trigger_body(
    app: &App,
    env: &EnvState,
    headers: ConnectionHeaders,
    body: TriggerBody,
) -> ApiResult<Json<Value>> {
    let pck = body
        .provider_config_key
        .or(headers.provider_config_key)
        .ok_or_else(|| {
            // The original's code and message for this one.
            ApiError::bad_request(
                "missing_provider_config_key",
                "Missing provider_config_key. Provide it in the body or headers.",
            )
        })?;
    let mode = match (body.opts, body.sync_mode, body.full_resync) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ApiError::invalid_body(
                "Cannot use opts with deprecated sync_mode/full_resync parameters",
            ));
        }
        // The cache is emptied only with a full refresh, which brings the
        // records back (alone, nothing is deleted).
        (Some(o), None, None) if o.reset && o.empty_cache => SyncMode::FullRefreshAndClearCache,
        (Some(o), None, None) if o.reset => SyncMode::FullRefresh,
        (Some(_), None, None) => SyncMode::Incremental,
        (None, Some(m), _) => m,
        // As the original: the deprecated flag asks for a full run, and
        // deletes nothing (only `full_refresh_and_clear_cache` does).
        (None, None, Some(true)) => SyncMode::FullRefresh,
        (None, None, _) => SyncMode::Incremental,
    };
    check_syncs_bound(&body.syncs)?;
    let cid = body.connection_id.or(headers.connection_id);
    let syncs = names(env, &pck, cid.as_deref(), &body.syncs).await?;
    let one = cid.is_some();
    let not_scheduled = |t: &Target| {
        ApiError::not_found(
            "unknown_sync",
            format!("sync `{}` is not scheduled", t.name),
        )
    };
    let mut targets = some_targets(targets(app, env, &pck, cid, &syncs).await?, one)?;
    // Removed since (its connection deleted, a deploy without it): for one
    // connection an error; for every connection, one fewer.
    if one {
        if let Some(t) = targets
            .iter()
            .find(|t| !app.scheduler.is_scheduled(env, &t.key))
        {
            return Err(not_scheduled(t));
        }
    } else {
        targets.retain(|t| app.scheduler.is_scheduled(env, &t.key));
    }
    // A trigger that waits for its runs holds a client connection until
    // they end (a client gone meanwhile included: the server keeps
    // half-closed connections, so it cannot tell): an environment may
    // have a bounded number waiting; one past it is refused before
    // anything is queued.
    let _waiting = match body.wait {
        true => Some(app.scheduler.admit_wait(env).map_err(|full| {
            let mut e = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_request",
                if full.everyone {
                    "the server has as many triggers waiting for their runs (`wait: true`) as it takes: trigger without `wait` and follow the runs with `GET /sync/status`, or try again once some have ended".to_string()
                } else {
                    format!(
                        "environment `{}` has {} triggers waiting for their runs (`wait: true`), at most {}: trigger without `wait` and follow the runs with `GET /sync/status`, or try again once some have ended",
                        env.name(),
                        full.waiting,
                        full.max
                    )
                },
            );
            e.payload = Some(Box::new(json!({
                "waiting": full.waiting,
                "max_waiting": full.max,
            })));
            e
        })?),
        false => None,
    };
    let keys: Vec<&str> = targets.iter().map(|t| t.key.as_str()).collect();
    let receivers = app.scheduler.trigger(env, &keys, mode, body.wait).await?;
    let mut waiting = Vec::new();
    for (t, rx) in targets.into_iter().zip(receivers) {
        // Removed since the check above: as if it had not been there.
        match rx {
            Some(rx) => waiting.push((t, rx)),
            None if one => return Err(not_scheduled(&t)),
            None => {}
        }
    }
    if !body.wait {
        return Ok(Json(json!({ "success": true })));
    }
    let mut runs = Vec::new();
    for (t, rx) in waiting {
        let outcome = match rx {
            Some(rx) => rx.await.map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "server_stopping",
                    "the server stopped before the run ended",
                )
            })?,
            None => continue,
        };
        let summary = match outcome {
            Ok(summary) => summary,
            // One connection's trigger answers as its run did; one of many
            // says so in its entry, beside the others that ran.
            Err(e) if one => return Err(e),
            Err(e) => {
                runs.push(json!({
                    "connection_id": t.conn.connection_id,
                    "sync": t.name,
                    "variant": t.variant,
                    "success": false,
                    "results": {},
                    "error": {"type": e.code, "message": e.message},
                }));
                continue;
            }
        };
        runs.push(json!({
            "connection_id": t.conn.connection_id,
            "sync": t.name,
            "variant": t.variant,
            "success": summary.success,
            "results": summary.results,
            "error": summary.error,
        }));
    }
    Ok(Json(json!({ "success": true, "runs": runs })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartPauseBody {
    syncs: Vec<SyncName>,
    provider_config_key: Option<String>,
    connection_id: Option<String>,
}

async fn start_or_pause(
    app: &App,
    env: &EnvState,
    headers: ConnectionHeaders,
    body: StartPauseBody,
    paused: bool,
) -> ApiResult<Json<Value>> {
    let pck = body
        .provider_config_key
        .or(headers.provider_config_key)
        .ok_or_else(|| ApiError::invalid_body("`provider_config_key` is required"))?;
    check_syncs_bound(&body.syncs)?;
    let cid = body.connection_id.or(headers.connection_id);
    let syncs = names(env, &pck, cid.as_deref(), &body.syncs).await?;
    let one = cid.is_some();
    for t in some_targets(targets(app, env, &pck, cid, &syncs).await?, one)? {
        app.scheduler.set_paused(env, &t.key, paused).await?;
    }
    Ok(Json(json!({ "success": true })))
}

pub async fn start(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    JsonBody(body): JsonBody<StartPauseBody>,
) -> ApiResult<Json<Value>> {
    start_or_pause(&app, &env, headers, body, false).await
}

pub async fn pause(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    JsonBody(body): JsonBody<StartPauseBody>,
) -> ApiResult<Json<Value>> {
    start_or_pause(&app, &env, headers, body, true).await
}

/// `GET /sync/status?provider_config_key=&syncs=a,b|*&connection_id=`:
/// from the query alone, as the original's (the connection headers other
/// routes take are not read here).
pub async fn status(
    State(app): State<Arc<App>>,
    Env(env): Env,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut pck = None;
    let mut cid = None;
    let mut syncs: Option<String> = None;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let slot = match k.as_ref() {
            "provider_config_key" => &mut pck,
            "connection_id" => &mut cid,
            "syncs" => &mut syncs,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query_params",
                    format!("unknown query parameter `{other}`"),
                ));
            }
        };
        // As on the other routes: a parameter given twice is refused, not
        // read as its last value.
        if slot.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query_params",
                format!("`{k}` is given more than once"),
            ));
        }
        *slot = Some(v.into_owned());
    }
    let pck = pck.ok_or_else(|| {
        ApiError::bad_request("invalid_query_params", "`provider_config_key` is required")
    })?;
    let syncs = syncs.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query_params",
            "`syncs` is required: a comma list of sync names, or `*`",
        )
    })?;
    // As the original's: a connection this environment does not have is
    // the body's fault (looked up first); an integration it does not have
    // has no syncs.
    if let Some(cid) = &cid
        && !env.store.connection_exists(&pck, cid).await?
    {
        return Err(ApiError::invalid_body(format!(
            "Connection not found: no connection `{cid}` of integration `{pck}`"
        )));
    }
    if env.store.integration(&pck).await?.is_none() {
        return Ok(Json(json!({ "syncs": [] })));
    }
    // Nothing deployed: no syncs, as the original's.
    let Some(catalog) = env.deployment().map(|d| d.catalog.clone()) else {
        return Ok(Json(json!({ "syncs": [] })));
    };
    let names: Vec<(String, String)> = if syncs.trim() == "*" {
        all_syncs(&env, &pck, cid.as_deref()).await?
    } else {
        syncs
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SyncName::Name(s.to_string()).parts())
            .collect()
    };
    // A sync the integration does not have, or a variant the connection
    // does not have, is left out, as the original's status leaves it.
    let integration = catalog.config.integration(&pck);
    // The connection's variants, read once.
    let variants = match &cid {
        Some(cid) if names.iter().any(|(_, v)| v != "base") => {
            variant_keys(&env, &format!("{pck}\u{1f}{cid}\u{1f}")).await?
        }
        _ => std::collections::HashSet::new(),
    };
    let mut known = Vec::with_capacity(names.len());
    for (name, variant) in names {
        if integration.and_then(|i| i.sync(&name)).is_none() {
            continue;
        }
        if let Some(cid) = &cid
            && variant != "base"
        {
            let conn = ConnectionRef {
                provider_config_key: pck.clone(),
                connection_id: cid.clone(),
            };
            if !variants.contains(&sync_key(&conn, &name, &variant)) {
                continue;
            }
        }
        known.push((name, variant));
    }
    let names = known;
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(Json(json!({ "syncs": out })));
    }
    for t in targets(&app, &env, &pck, cid, &names).await? {
        let state: SyncState = env.store.doc(SYNC_STATE, &t.key).await?.unwrap_or_default();
        let running = app.scheduler.is_running(&env, &t.key);
        let paused = state.schedule.as_ref().is_some_and(|s| s.paused);
        let last = state.last_run.as_ref();
        let status = if running {
            "RUNNING"
        } else if paused {
            "PAUSED"
        } else {
            match last {
                Some(r) if r.success => "SUCCESS",
                Some(_) => "ERROR",
                // Scheduled and not run yet: the original's `SUCCESS` (a
                // started schedule without a job); `STOPPED` is a sync
                // without a schedule.
                None if state.schedule.is_some() => "SUCCESS",
                None => "STOPPED",
            }
        };
        let sync = catalog.sync_config(&pck, &t.name);
        let frequency = state
            .schedule
            .as_ref()
            .and_then(|s| s.frequency.clone())
            .or_else(|| sync.map(|s| s.runs.clone()));
        let mut latest = serde_json::Map::new();
        for (model, c) in last.map(|r| &r.results).into_iter().flatten() {
            latest.insert(
                model.clone(),
                json!({"added": c.added, "updated": c.updated, "deleted": c.deleted}),
            );
        }
        // Keyed by the model's name, a variant's too, as the original's.
        let mut counts = BTreeMap::new();
        for model in sync.map(|s| s.output.clone()).unwrap_or_default() {
            let full = if t.variant == "base" {
                model.clone()
            } else {
                format!("{model}::{}", t.variant)
            };
            let n = env.store.record_count(&t.conn, &full).await?;
            counts.insert(model, n);
        }
        // The run's checkpoint (zero-yaml), `null` when there is none.
        let checkpoint_key = if t.variant == "base" {
            t.name.clone()
        } else {
            format!("{}::{}", t.name, t.variant)
        };
        let checkpoint =
            sluice_runtime::records::RecordStore::checkpoint(&env.store, &t.conn, &checkpoint_key)
                .await
                .map_err(|e| ApiError::internal(format!("reading the sync's checkpoint: {e}")))?;
        let mut entry = json!({
            "id": sync_id(&t.conn, &t.name, &t.variant),
            "connection_id": t.conn.connection_id,
            "name": t.name,
            "variant": t.variant,
            "status": status,
            // As the original reports it: its job type is `FULL` for a
            // full sync's run (and a first run), `INCREMENTAL` for an
            // incremental sync's with a `lastSyncDate`, and the status
            // shows anything not incremental as `INITIAL`.
            "type": match last.map(|r| r.run_type) {
                Some(crate::runner::RunType::Incremental) => "INCREMENTAL",
                _ => "INITIAL",
            },
            "finishedAt": last.map(|r| r.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "nextScheduledSyncAt": app.scheduler.next_run(&env, &t.key)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "frequency": frequency,
            "latestResult": latest,
            "latestExecutionStatus": if running { Some("RUNNING") } else {
                last.map(|r| if r.success { "SUCCESS" } else { "STOPPED" })
            },
            "recordCount": counts,
            "checkpoint": checkpoint,
        });
        // The original's latest job is then the running one: not finished
        // (the current original leaves `finishedAt` out, so an app waiting
        // for it to change waits for the run's end) and its result (counts
        // so far there; none here). The last run's belonged to another.
        if running {
            if let Some(fields) = entry.as_object_mut() {
                fields.remove("finishedAt");
            }
            entry["latestResult"] = json!({});
        } else if last.is_none()
            && let Some(fields) = entry.as_object_mut()
        {
            // A sync that never ran has no latest job: the original leaves
            // its fields out.
            for key in ["finishedAt", "latestResult", "latestExecutionStatus"] {
                fields.remove(key);
            }
        }
        out.push(entry);
    }
    Ok(Json(json!({ "syncs": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyBody {
    sync_name: String,
    #[serde(default)]
    sync_variant: Option<String>,
    provider_config_key: String,
    connection_id: String,
    /// Required, `null` included (a body without it reset the frequency).
    #[serde(deserialize_with = "nullable")]
    frequency: Option<String>,
}

/// An `Option` whose key must be present (serde lets a missing one be
/// `None`).
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// `PUT /sync/update-connection-frequency`: the connection's own
/// frequency of a sync, or (`null`) back to nango.yaml's.
pub async fn update_frequency(
    State(app): State<Arc<App>>,
    Env(env): Env,
    super::ApiQuery(super::providers::NoQuery {}): super::ApiQuery<super::providers::NoQuery>,
    JsonBody(body): JsonBody<FrequencyBody>,
) -> ApiResult<Json<Value>> {
    // The body is checked before what it names is looked up, as the
    // original's: a bad frequency is 400 `invalid_body` whatever the
    // connection.
    let requested = match &body.frequency {
        Some(f) if !sluice_nango_yaml::api_frequency_shape(f) => {
            return Err(ApiError::invalid_body(format!(
                "`{f}` is not a valid frequency: a whole number and a unit of seconds to days (`every 30m`, `every 2 hours`, `1d`), or `every month`, `week`, `half day`, `half hour` or `quarter hour`"
            )));
        }
        Some(f) => match interval(f)? {
            every if every > sluice_nango_yaml::MAX_API_INTERVAL => {
                return Err(ApiError::invalid_body(format!(
                    "`{f}` is not a valid frequency: at most a century"
                )));
            }
            every => Some((sluice_nango_yaml::interval_text(f), every)),
        },
        None => None,
    };
    let variant = body.sync_variant.unwrap_or_else(|| "base".into());
    let name = (body.sync_name.clone(), variant);
    // The original's answers here: 400 `unknown_connection` (an unknown
    // integration is a connection not found), 400 `unknown_sync`.
    let targets = targets(
        &app,
        &env,
        &body.provider_config_key,
        Some(body.connection_id),
        std::slice::from_ref(&name),
    )
    .await
    .map_err(|mut e| {
        match e.code.as_str() {
            "unknown_provider_config" | "unknown_connection" => {
                e.status = axum::http::StatusCode::BAD_REQUEST;
                e.code = "unknown_connection".into();
            }
            "no_syncs_found" => {
                e.status = axum::http::StatusCode::BAD_REQUEST;
                e.code = "unknown_sync".into();
            }
            _ => {}
        }
        e
    })?;
    let catalog = env.catalog()?;
    let default = catalog
        .sync_config(&body.provider_config_key, &body.sync_name)
        .map(|s| (s.runs.clone(), s.interval))
        .ok_or_else(|| ApiError::bad_request("unknown_sync", "the sync is not deployed"))?;
    let (shown, every) = requested.unwrap_or(default);
    for t in targets {
        app.scheduler
            .set_frequency(&env, &t.key, body.frequency.clone(), every)
            .await?;
    }
    Ok(Json(json!({ "frequency": shown })))
}

/// A variant name: not `base` (in any case), and what a model name can
/// carry after `::`.
fn valid_variant(v: &str) -> bool {
    !v.eq_ignore_ascii_case("base")
        && !v.is_empty()
        && v.len() <= 255
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The connection a variant route names — in the body, as the original's
/// SDK sends it, or in the connection headers — and its integration's
/// sync if it is deployed.
async fn variant_target(
    env: &EnvState,
    headers: ConnectionHeaders,
    body: &[u8],
    name: &str,
    variant: &str,
) -> ApiResult<(ConnectionRef, Option<sluice_nango_yaml::SyncConfig>)> {
    if !valid_variant(variant) {
        return Err(ApiError::bad_request(
            "invalid_variant",
            format!(
                "a variant is 1 to 255 letters, digits, `_` or `-`, and not `base`; got `{variant}`"
            ),
        ));
    }
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Body {
        provider_config_key: Option<String>,
        connection_id: Option<String>,
    }
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        super::parse_json(body)?
    };
    let pck = body.provider_config_key.or(headers.provider_config_key);
    let cid = body.connection_id.or(headers.connection_id);
    let (Some(pck), Some(cid)) = (pck, cid) else {
        return Err(ApiError::bad_request(
            "missing_connection",
            "`provider_config_key` and `connection_id` are required (in the body, or the Provider-Config-Key and Connection-Id headers)",
        ));
    };
    // The original looks the connection up first: 400 `unknown_connection`
    // for an integration it does not have too.
    if env.store.integration(&pck).await?.is_none()
        || !env.store.connection_exists(&pck, &cid).await?
    {
        return Err(variant_unknown_connection(&pck, &cid));
    }
    let sync = env
        .catalog()?
        .config
        .integration(&pck)
        .and_then(|i| i.sync(name))
        .cloned();
    let conn = ConnectionRef {
        provider_config_key: pck,
        connection_id: cid,
    };
    Ok((conn, sync))
}

fn no_such_sync(pck: &str, name: &str) -> ApiError {
    ApiError::bad_request(
        "unknown_sync",
        format!("integration `{pck}` has no sync `{name}`"),
    )
}

/// The variant routes' unknown connection: 400, as the original's.
fn variant_unknown_connection(pck: &str, cid: &str) -> ApiError {
    ApiError::bad_request(
        "unknown_connection",
        format!("No connection `{cid}` for integration `{pck}`"),
    )
}

/// `POST /sync/:name/variant/:variant`: a variant of a sync for the
/// connection, scheduled as the base one is; its records are the models'
/// `Model::variant`.
pub async fn create_variant(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    super::ApiPath((name, variant)): super::ApiPath<(String, String)>,
    super::DecodedBody(body): super::DecodedBody,
) -> ApiResult<Json<Value>> {
    let (conn, sync) = variant_target(&env, headers, &body, &name, &variant).await?;
    let sync = sync.ok_or_else(|| no_such_sync(&conn.provider_config_key, &name))?;
    let key = sync_key(&conn, &name, &variant);
    // One at a time with the connection's deletion, and with another
    // creation of it.
    let _running = env.runs.enter(&conn).await;
    let _one_creator = env.variants_lock.lock().await;
    if !env
        .store
        .connection_exists(&conn.provider_config_key, &conn.connection_id)
        .await?
    {
        return Err(variant_unknown_connection(
            &conn.provider_config_key,
            &conn.connection_id,
        ));
    }
    if let Some(doc) = env.store.doc::<Value>(SYNC_VARIANTS, &key).await? {
        if doc["deleting"] == true {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "sync_variant_being_deleted",
                format!(
                    "variant `{variant}` of sync `{name}` is being deleted: repeat the DELETE, then create it"
                ),
            ));
        }
        return Err(ApiError::bad_request(
            "sync_variant_already_exists",
            format!("sync `{name}` already has variant `{variant}` for this connection"),
        ));
    }
    // Its models are kept with it: deleting it clears exactly those, even
    // once its sync is no longer deployed.
    env.store
        .put_doc(
            SYNC_VARIANTS,
            &key,
            &json!({
                "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "models": sync.output,
            }),
        )
        .await?;
    app.scheduler.variant_created(&env, &key, &sync).await?;
    Ok(Json(json!({
        "id": sync_id(&conn, &name, &variant),
        "name": name,
        "variant": variant,
    })))
}

/// `DELETE /sync/:name/variant/:variant`: marks the variant deleted,
/// stops its run if one is going, then removes its schedule, its records
/// and its checkpoint (also when its sync is no longer deployed), and the
/// variant last.
pub async fn delete_variant(
    State(app): State<Arc<App>>,
    Env(env): Env,
    headers: ConnectionHeaders,
    super::ApiPath((name, variant)): super::ApiPath<(String, String)>,
    super::DecodedBody(body): super::DecodedBody,
) -> ApiResult<Json<Value>> {
    let (conn, sync) = variant_target(&env, headers, &body, &name, &variant).await?;
    let key = sync_key(&conn, &name, &variant);
    let Some(mut doc) = env.store.doc::<Value>(SYNC_VARIANTS, &key).await? else {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "connection `{}` has no variant `{variant}` of sync `{name}`",
                conn.connection_id
            ),
        ));
    };
    // Marked first (flushed): from here it is gone for every route and
    // for the scheduler, and a DELETE cut short (a crash, a dropped
    // request) is finished by repeating it; the document goes last.
    doc["deleting"] = json!(true);
    env.store.put_doc(SYNC_VARIANTS, &key, &doc).await?;
    // Its run stops and ends (its last state written) before anything
    // goes; runs asked meanwhile wait, then find it gone.
    let _stopped = env.runs.close_variant(&key).await;
    app.scheduler.variant_deleted(&env, &key).await?;
    let suffix = format!("::{variant}");
    let models: Vec<String> = match doc["models"].as_array() {
        Some(models) => models
            .iter()
            .filter_map(Value::as_str)
            .map(|m| format!("{m}{suffix}"))
            .collect(),
        None => sync
            .map(|s| s.output.iter().map(|m| format!("{m}{suffix}")).collect())
            .unwrap_or_default(),
    };
    for model in &models {
        env.store.clear_records(&conn, model).await?;
    }
    // Its checkpoint and its trackDeletes starts (a variant made again
    // under the name counts its jobs from 1: a start of the old one's
    // would delete what the new one saves).
    let sync_name = format!("{name}{suffix}");
    let mut keys = vec![sync_name.clone()];
    keys.extend(models.iter().map(|m| {
        sluice_runtime::track_deletes_key(&sync_name, m.strip_suffix(&suffix).unwrap_or(m))
    }));
    for key in keys {
        sluice_runtime::records::RecordStore::set_checkpoint(&env.store, &conn, &key, None)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    env.store.delete_doc(SYNC_VARIANTS, &key).await?;
    Ok(Json(json!({ "success": true })))
}
