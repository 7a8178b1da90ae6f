//! A standby server (`sluice serve --standby`, PostgreSQL stores): it
//! waits while another server holds the store, and takes over once that
//! one lets go (stopped, killed, or cut off long enough for the database
//! to end its session).
//!
//! Meanwhile it listens, answering `GET /records` from the store (read
//! over connections of its own: reads scale out onto standbys) and every
//! other request 503 `standby` (so a load balancer's health check sees it
//! is not serving), checks with a read-only connection that its master
//! key opens the store (a standby that could not read the credentials
//! would be found out only at the takeover otherwise), reads the
//! environments and their keys again every ten seconds (a key replaced
//! on the server stops working here too), and compiles each environment's
//! active deployment into its component cache, so the takeover loads them
//! without compiling.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_runtime::Runtime;
use sluice_store::{Backend, BackendError, MasterKey, Store, StoreError};
use sluice_store_postgres::PostgresBackend;

use crate::app::{ACTIVE, DEPLOYMENTS, DeploymentDoc, deployment_key};
use crate::{ServerConfig, ServerError, StoreKind};

/// How long one attempt waits for the store's lock (the lock is polled
/// every 100 ms meanwhile), and how often the standby looks for new
/// deployments to compile.
const ATTEMPT: Duration = Duration::from_secs(10);
/// The pause after an attempt that failed for another reason (the
/// database out of reach): longer than the server's own reconnects (every
/// five seconds), so after a database restart the server that held the
/// store takes it back rather than a standby taking over.
const RETRY_AFTER: Duration = Duration::from_secs(15);

/// Waits for the store `config` names, answering on `listener`
/// meanwhile; returns it once this process holds it.
pub(crate) async fn take_store(
    config: &ServerConfig,
    master: &MasterKey,
    runtime: &Runtime,
    listener: &tokio::net::TcpListener,
) -> Result<Arc<dyn Backend>, ServerError> {
    let StoreKind::Postgres(url) = &config.store else {
        return Err(ServerError::Config(format!(
            "a standby waits for a store another server holds, which needs --store postgres (a {} store is in this server's data directory, where no other server can hold it)",
            config.store.name()
        )));
    };
    let at = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.to_string());
    let reading = Reading::default();
    let slots = crate::ConnectionSlots::new(config.max_connections, config.events.clone());
    // Dropped when this returns: the standby's connections then finish
    // the request in flight and close (the server answers from here on).
    let (_serving, taken) = tokio::sync::watch::channel(());
    tokio::select! {
        taken = wait(config, url, master, runtime, &at, &reading) => taken,
        never = refresh(&reading) => match never {},
        never = answer_standby(listener, slots, reading.clone(), taken) => match never {},
    }
}

/// Reads the environments and their keys again every [`ATTEMPT`], apart
/// from the compiles (a key replaced on the server stops working here
/// within that, however long a compile takes); `None` while the store
/// cannot be read.
async fn refresh(reading: &Reading) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(ATTEMPT).await;
        let current = reading.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(store) = current {
            let fresh = store.reload().await.ok();
            *reading.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
    }
}

/// The store as a standby reads it, once it could be opened (and again
/// every [`ATTEMPT`]); `None` while it cannot be read.
type Reading = Arc<std::sync::RwLock<Option<Store>>>;

async fn wait(
    config: &ServerConfig,
    url: &str,
    master: &MasterKey,
    runtime: &Runtime,
    at: &str,
    shared: &Reading,
) -> Result<Arc<dyn Backend>, ServerError> {
    // The first attempt does not wait: a standby says at once what it
    // waits for, and checks its master key then. A standby that cannot
    // start at all says so at once; one that loses the database later
    // waits for it.
    match attempt(url, Duration::ZERO).await? {
        Ok(backend) => return Ok(Arc::new(backend)),
        Err(BackendError::Busy { location, .. }) => config.events.say(&format!(
            "standby: another server holds the store at {location}; this one answers 503 on {at} until it takes over"
        )),
        Err(e) => return Err(ServerError::Open(e)),
    }
    // The lock is asked for all along, also while deployments compile.
    // Once it is had, a compile under way is finished first (the start
    // then finds it cached, rather than compiling it again beside it).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ready = keep_ready(config, url, master, runtime, stopped, shared);
    tokio::pin!(ready);
    tokio::select! {
        taken = take(config, url) => {
            let _ = stop.send(true);
            let _ = ready.await;
            taken
        }
        failed = &mut ready => match failed {
            Some(e) => Err(e),
            None => std::future::pending().await,
        },
    }
}

/// One try for the store, waiting at most `wait` for its lock.
async fn attempt(
    url: &str,
    wait: Duration,
) -> Result<Result<PostgresBackend, BackendError>, ServerError> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || PostgresBackend::open_waiting(&url, wait))
        .await
        .map_err(|e| {
            ServerError::Open(BackendError::Storage(format!(
                "opening the store failed: {e}"
            )))
        })
}

/// Asks for the store until it is this process's.
async fn take(config: &ServerConfig, url: &str) -> Result<Arc<dyn Backend>, ServerError> {
    let mut last_said = String::new();
    loop {
        match attempt(url, ATTEMPT).await? {
            Ok(backend) => {
                config
                    .events
                    .say("standby: the store is free; this server takes it over");
                return Ok(Arc::new(backend));
            }
            Err(BackendError::Busy { .. }) => {}
            Err(e) => {
                let line = format!("standby: {e}; trying again");
                if line != last_said {
                    config.events.say(&line);
                    last_said = line;
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Checks the master key and compiles the deployments, again every
/// [`ATTEMPT`], until `stop` says so (then `None`, once the compile under
/// way has finished); returns the error that ends the standby (a master
/// key that does not open the store).
async fn keep_ready(
    config: &ServerConfig,
    url: &str,
    master: &MasterKey,
    runtime: &Runtime,
    mut stop: tokio::sync::watch::Receiver<bool>,
    shared: &Reading,
) -> Option<ServerError> {
    let mut compiled: HashSet<(String, u64)> = HashSet::new();
    let mut reading: Option<Store> = None;
    let mut last_said = String::new();
    loop {
        match prepare(
            config,
            url,
            master,
            runtime,
            &mut reading,
            &mut compiled,
            &stop,
            shared,
        )
        .await
        {
            Ok(()) => {}
            Err(e @ StoreError::WrongMasterKey { .. }) => return Some(e.into()),
            Err(e) => {
                // Opened again next time.
                reading = None;
                *shared.write().unwrap_or_else(|e| e.into_inner()) = None;
                let line = format!("standby: cannot read the store yet: {e}");
                if line != last_said {
                    config.events.say(&line);
                    last_said = line;
                }
            }
        }
        if *stop.borrow() {
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep(ATTEMPT) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// Opens the store for reading (once: `reading` keeps it), which checks
/// that `master` opens it, and compiles each environment's active
/// deployment not compiled yet.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    config: &ServerConfig,
    url: &str,
    master: &MasterKey,
    runtime: &Runtime,
    reading: &mut Option<Store>,
    compiled: &mut HashSet<(String, u64)>,
    stop: &tokio::sync::watch::Receiver<bool>,
    shared: &Reading,
) -> Result<(), StoreError> {
    let fresh = match reading.as_ref() {
        // The environments and their keys as they are now.
        Some(store) => store.reload().await?,
        None => {
            let backend = {
                let url = url.to_string();
                tokio::task::spawn_blocking(move || PostgresBackend::open_reading(&url))
                    .await
                    .map_err(|e| {
                        BackendError::Storage(format!("opening the store failed: {e}"))
                    })??
            };
            Store::open(Arc::new(backend), master.clone(), &[]).await?.0
        }
    };
    *shared.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
    *reading = Some(fresh);
    let Some(store) = reading.as_ref() else {
        return Ok(());
    };
    for env in store.environments() {
        if *stop.borrow() {
            return Ok(());
        }
        let Some(version) = env.doc::<u64>(ACTIVE, "version").await? else {
            continue;
        };
        let key = (env.name().to_string(), version);
        if compiled.contains(&key) {
            continue;
        }
        let Some(doc) = env
            .doc::<DeploymentDoc>(DEPLOYMENTS, &deployment_key(version))
            .await?
        else {
            continue;
        };
        let mut blobs = std::collections::HashMap::new();
        for c in &doc.manifest.components {
            if let Some(b) = store.blob(&c.sha256).await? {
                blobs.insert(c.sha256.clone(), b);
            }
        }
        let runtime = runtime.clone();
        let manifest = doc.manifest;
        let installed = tokio::task::spawn_blocking(move || {
            manifest.install(&runtime, |sha| blobs.get(sha).cloned())
        })
        .await;
        // Tried once: a deployment that does not load here fails the
        // takeover's own load too, which names it, as any start would.
        match installed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => config.events.say(&format!(
                "standby: deployment {version} of environment `{}` does not load: {e}",
                key.0
            )),
            Err(e) => config.events.say(&format!(
                "standby: compiling deployment {version} of environment `{}` stopped: {e}",
                key.0
            )),
        }
        compiled.insert(key);
    }
    Ok(())
}

/// Answers `GET /records` from the store, and every other request 503
/// `standby`, on `listener`.
async fn answer_standby(
    listener: &tokio::net::TcpListener,
    slots: crate::ConnectionSlots,
    reading: Reading,
    taken: tokio::sync::watch::Receiver<()>,
) -> std::convert::Infallible {
    loop {
        let slot = slots.take().await;
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let reading = reading.clone();
        let mut taken = taken.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let store = reading.read().unwrap_or_else(|e| e.into_inner()).clone();
                async move { Ok::<_, std::convert::Infallible>(answer(store, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::time::timeout(Duration::from_secs(600), async {
                tokio::select! {
                    _ = connection.as_mut() => true,
                    // The store was taken: no keep-alive past the request
                    // in flight.
                    _ = taken.changed() => false,
                }
            })
            .await;
            if matches!(ended, Ok(false)) {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            }
        });
    }
}

/// A standby's answer: `GET /records` from the store once it can be read,
/// 503 `standby` to everything else.
async fn answer(
    store: Option<Store>,
    request: hyper::Request<hyper::body::Incoming>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    // As the server's router: a trailing slash (`@nangohq/node` asks for
    // `/records/`) and HEAD are taken.
    let path = request.uri().path();
    let records = path.strip_suffix('/').unwrap_or(path) == "/records";
    if matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD)
        && records
        && let Some(store) = store
    {
        return match crate::api::records::standby_page(
            &store,
            request.headers(),
            request.uri().query(),
        )
        .await
        {
            Ok(page) => page,
            Err(e) => e.into_response(),
        };
    }
    let body = serde_json::json!({"error": {
        "code": "standby",
        "message": "this sluice server is a standby: it answers GET /records, and serves everything once the server holding the store stops",
    }});
    let mut response = axum::response::Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
