//! The suite every backend passes, through the [`Store`] API.
//!
//! A backend's tests are one line: `sluice_store::backend_tests!(|| make())`
//! where `make` returns a [`Reopen`] over fresh, empty storage. Each case is
//! a `pub async fn(&Reopen)`; the macro makes one `#[tokio::test]` per case,
//! so a failure names its case. Record semantics are checked against the
//! runtime's `MemoryRecords`, the reference, fed the same writes.
//!
//! This module is test code compiled into the library (behind the
//! `testsuite` feature) so other crates can run it; like tests, it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use sluice_runtime::connection::{Connection, ConnectionError, ConnectionStore};
use sluice_runtime::records::{
    self as rt, Changes, ConnectionRef, MemoryRecords, Merging, Position, RecordError, RecordStore,
    StoredRecord, WriteContext, WriteKind,
};
use uuid::Uuid;

use crate::{
    Backend, EnvStore, Integration, MasterKey, MemoryBackend, Op, RecordFilter, RecordsQuery,
    Store, StoreError, Table, keys,
};

/// Opens a test case's storage: empty the first time; every later call
/// (made after the previous store was dropped) reopens the same data, as a
/// process restart would.
pub struct Reopen {
    open: Box<dyn Fn() -> Arc<dyn Backend> + Send + Sync>,
}

impl Reopen {
    pub fn new(open: impl Fn() -> Arc<dyn Backend> + Send + Sync + 'static) -> Self {
        Reopen {
            open: Box::new(open),
        }
    }

    /// An in-memory backend; "reopening" makes a new `Store` over the same
    /// maps, which exercises everything a restart does but the disk.
    pub fn memory(backend: MemoryBackend) -> Self {
        Reopen::new(move || Arc::new(backend.clone()))
    }

    pub fn open(&self) -> Arc<dyn Backend> {
        (self.open)()
    }
}

/// What a backend's `$make` may return: a [`Reopen`], or `None` when the
/// backend's server is not there to test.
pub trait IntoReopen {
    fn into_reopen(self) -> Option<Reopen>;
}

impl IntoReopen for Reopen {
    fn into_reopen(self) -> Option<Reopen> {
        Some(self)
    }
}

impl IntoReopen for Option<Reopen> {
    fn into_reopen(self) -> Option<Reopen> {
        self
    }
}

/// One `#[tokio::test]` per case of the suite, over the [`Reopen`] that
/// `$make` (a closure) returns.
#[macro_export]
macro_rules! backend_tests {
    ($make:expr) => {
        $crate::backend_tests!(@cases $make;
            environments_are_created_once,
            secret_keys_authenticate_their_environment,
            secret_keys_can_be_replaced,
            wrong_master_key_is_refused,
            a_key_hash_put_in_place_without_the_master_key_is_refused,
            unreadable_metadata_is_refused,
            environments_are_isolated,
            integrations_round_trip,
            connections_round_trip_and_list_by_prefix,
            connection_store_reads_and_writes_metadata,
            a_refresh_replaces_only_the_credentials_it_read,
            variables_round_trip,
            documents_scan_by_prefix_and_cursor,
            a_document_deeper_than_a_parse_reads_back,
            long_scans_match_an_ordered_map_both_ways,
            concurrent_writes_of_every_kind_keep_their_order,
            blobs_are_content_addressed,
            secrets_are_sealed_at_rest,
            save_delete_and_undelete_match_the_reference,
            duplicates_in_a_chunk_first_wins,
            batch_update_deep_merges_like_the_reference,
            an_update_cannot_grow_a_record_past_its_limit,
            ignore_if_modified_after_protects_newer_rows,
            paging_visits_every_record_once_in_order,
            a_page_of_big_records_stops_at_its_byte_bound,
            paging_survives_updates_between_pages,
            raw_pages_match_decoded_pages,
            filter_modified_after_and_ids,
            delete_stale_soft_deletes_untouched_rows,
            track_deletes_lands_each_batch_after_the_ones_before,
            a_page_holds_each_record_once_while_a_sync_writes,
            a_job_run_notes_what_it_saw_unchanged,
            a_start_kept_across_runs_keeps_what_each_run_saw,
            a_job_run_takes_over_what_another_sync_stamped,
            a_scopes_count_row_knows_who_stamps_it,
            clear_records_counts_and_models,
            pruning_empties_payloads_up_to_a_cursor,
            delete_connection_removes_its_records_and_docs,
            concurrent_writers_of_one_scope,
            data_key_rotation_keeps_secrets_readable,
            master_key_rewrap,
            reopen_keeps_everything,
            a_store_is_copied_whole,
            a_snapshot_sees_one_moment,
            a_format_1_store_is_migrated,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // `$make` returns a `Reopen`, or an `Option` of one for a
                // backend that needs a server the machine may not have
                // (`None`: the case does not run; `$make` says why).
                if let Some(backend) = $crate::testsuite::IntoReopen::into_reopen(($make)()) {
                    $crate::testsuite::$case(&backend).await;
                }
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

fn initial() -> Vec<(String, Option<String>)> {
    vec![
        ("dev".into(), None),
        ("prod".into(), Some("prod-secret-given".into())),
    ]
}

async fn open(b: &Reopen, master: &MasterKey) -> Store {
    Store::open(b.open(), master.clone(), &initial())
        .await
        .unwrap()
        .0
}

async fn fresh(b: &Reopen) -> (Store, MasterKey) {
    let master = MasterKey::generate();
    (open(b, &master).await, master)
}

fn dev(store: &Store) -> EnvStore {
    store.environment("dev").unwrap()
}

fn prod(store: &Store) -> EnvStore {
    store.environment("prod").unwrap()
}

fn conn(pck: &str, cid: &str) -> ConnectionRef {
    ConnectionRef {
        provider_config_key: pck.into(),
        connection_id: cid.into(),
    }
}

fn connection(pck: &str, cid: &str, token: &str) -> Connection {
    Connection {
        connection_id: cid.into(),
        provider_config_key: pck.into(),
        provider: "github".into(),
        credentials: serde_json::from_value(json!({
            "type": "OAUTH2", "access_token": token, "refresh_token": "refresh-1234"
        }))
        .unwrap(),
        connection_config: json!({"subdomain": "acme"}).as_object().cloned().unwrap(),
        metadata: json!({"team": "a"}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        end_user: json!({"id": "u-1", "email": "u@example.com"}),
        tags: [("end_user_id".to_string(), "u-1".to_string())].into(),
        webhook_url_override: Some("https://hooks.example.com/c".into()),
        // Kept by every backend (compared whole when read back).
        token_host_from_browser: true,
    }
}

fn integration(key: &str, secret: &str) -> Integration {
    Integration {
        unique_key: key.into(),
        provider: "github".into(),
        display_name: Some(format!("GitHub {key}")),
        oauth_client_id: Some("client-id-123".into()),
        oauth_client_secret: Some(secret.into()),
        oauth_scopes: Some("repo,user".into()),
        webhook_secret: Some("whsec-webhook-456".into()),
        forward_webhooks: true,
        app_link: Some("https://github.com/apps/sluice-test".into()),
        registered_redirect: Some("https://sluice.example.com/oauth/callback".into()),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn objs(v: Value) -> Vec<Map<String, Value>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().cloned().unwrap())
        .collect()
}

/// Writes stamped for a sync's job, made by something other than the
/// job's run (a webhook script's).
fn job(sync: &str, job: u64) -> WriteContext {
    WriteContext {
        sync_id: Some(sync.into()),
        job_id: Some(job),
        job_run: false,
        max_record_bytes: None,
    }
}

/// Writes of a sync job's run.
fn run(sync: &str, job: u64) -> WriteContext {
    WriteContext {
        job_run: true,
        ..self::job(sync, job)
    }
}

/// The seen notes a store holds, once the writes of `scope` have landed.
async fn seen_notes(env: &EnvStore, c: &ConnectionRef, model: &str) -> usize {
    // A write takes the scope's lock, which a note keeps until written.
    write(
        env,
        WriteKind::Save,
        c,
        model,
        json!([]),
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await;
    env.backend()
        .scan(Table::RecordSeen, &[], None, usize::MAX, false)
        .await
        .unwrap()
        .len()
}

/// A batchSave to model `M` of `c`, written as `ctx`.
async fn save_as(env: &EnvStore, c: &ConnectionRef, records: Value, ctx: WriteContext) -> Changes {
    write(
        env,
        WriteKind::Save,
        c,
        "M",
        records,
        &ctx,
        &mut Merging::Override,
    )
    .await
}

/// Who last stamped these records of model `M` of `c`, in order.
async fn stamps_of(
    env: &EnvStore,
    c: &ConnectionRef,
    ids: &[&str],
) -> Vec<(Option<String>, Option<u64>)> {
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    env.get_by_ids(c, "M", &ids)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sync_id, r.job_id))
        .collect()
}

/// One chunk through the runtime's `RecordStore` trait, as the runtime
/// writes (ids checked, first duplicate kept).
async fn write(
    store: &dyn RecordStore,
    kind: WriteKind,
    c: &ConnectionRef,
    model: &str,
    records: Value,
    ctx: &WriteContext,
    merging: &mut Merging,
) -> Changes {
    let (chunk, _) = rt::prepare_chunk(objs(records), 0).unwrap();
    store
        .write(kind, c, model, chunk, ctx, merging)
        .await
        .unwrap()
}

async fn save(env: &EnvStore, c: &ConnectionRef, model: &str, records: Value) -> Changes {
    write(
        env,
        WriteKind::Save,
        c,
        model,
        records,
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await
}

fn records(from: usize, to: usize, version: u32) -> Value {
    Value::Array(
        (from..to)
            .map(|i| json!({"id": format!("r{i:05}"), "v": version, "pad": "x".repeat(200)}))
            .collect(),
    )
}

async fn save_many(
    env: &EnvStore,
    c: &ConnectionRef,
    model: &str,
    from: usize,
    to: usize,
    version: u32,
) {
    let mut start = from;
    while start < to {
        let end = (start + rt::CHUNK_SIZE).min(to);
        save(env, c, model, records(start, end, version)).await;
        start = end;
    }
}

/// Every record by paging with `query` (its `after` is the start), checking
/// each page's cursor contract on the way.
async fn page_all(
    env: &EnvStore,
    c: &ConnectionRef,
    model: &str,
    mut query: RecordsQuery,
) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    loop {
        let page = env.records_page(c, model, &query).await.unwrap();
        assert!(page.records.len() <= query.limit);
        match page.next {
            Some(next) => {
                assert_eq!(
                    page.records.len(),
                    query.limit,
                    "a page before the last is full"
                );
                assert_eq!(
                    Some(next.clone()),
                    page.records.last().map(StoredRecord::position)
                );
                out.extend(page.records);
                query.after = Some(next);
            }
            None => {
                out.extend(page.records);
                return out;
            }
        }
    }
}

fn assert_ordered_unique(rows: &[StoredRecord]) {
    for pair in rows.windows(2) {
        assert!(
            pair[0].position() < pair[1].position(),
            "out of order: {:?} then {:?}",
            pair[0].position(),
            pair[1].position()
        );
    }
}

/// What must agree between the store and the reference (times differ:
/// each took its own `now`).
type Essence = (
    String,
    Uuid,
    Value,
    String,
    &'static str,
    Option<String>,
    Option<u64>,
);

fn essence(r: &StoredRecord) -> Essence {
    (
        r.external_id.clone(),
        r.internal_id,
        Value::Object(r.json.clone()),
        r.data_hash.clone(),
        r.last_action(),
        r.sync_id.clone(),
        r.job_id,
    )
}

/// The store and the reference, fed the same writes.
struct Twin {
    env: EnvStore,
    reference: MemoryRecords,
    conn: ConnectionRef,
    model: &'static str,
}

impl Twin {
    fn new(env: EnvStore) -> Self {
        Twin {
            env,
            reference: MemoryRecords::new(),
            conn: conn("github", "c1"),
            model: "Issue",
        }
    }

    async fn write(&self, kind: WriteKind, records: Value, ctx: &WriteContext) -> Changes {
        let mut m1 = Merging::Override;
        let mut m2 = Merging::Override;
        let ours = write(
            &self.env,
            kind,
            &self.conn,
            self.model,
            records.clone(),
            ctx,
            &mut m1,
        )
        .await;
        let theirs = write(
            &self.reference,
            kind,
            &self.conn,
            self.model,
            records,
            ctx,
            &mut m2,
        )
        .await;
        assert_eq!(ours, theirs, "changes differ from the reference");
        ours
    }

    /// The stored rows of `ids` agree with the reference's.
    async fn check(&self, ids: &[&str]) -> Vec<StoredRecord> {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let ours = self
            .env
            .get_by_ids(&self.conn, self.model, &ids)
            .await
            .unwrap();
        let theirs = self
            .reference
            .get_by_ids(&self.conn, self.model, &ids)
            .await
            .unwrap();
        assert_eq!(
            ours.iter().map(essence).collect::<Vec<_>>(),
            theirs.iter().map(essence).collect::<Vec<_>>()
        );
        let alive = self
            .reference
            .all(&self.conn, self.model)
            .iter()
            .filter(|r| r.deleted_at.is_none())
            .count();
        assert_eq!(
            self.env.record_count(&self.conn, self.model).await.unwrap(),
            alive as u64,
            "the count follows the writes"
        );
        ours
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every key and value the backend holds, for at-rest assertions.
async fn raw_dump(backend: &dyn Backend) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for table in Table::ALL {
        for (k, v) in backend
            .scan(table, &[], None, usize::MAX, false)
            .await
            .unwrap()
        {
            out.push((table, k, v));
        }
    }
    out
}

async fn raw_contains(backend: &dyn Backend, needle: &str) -> bool {
    raw_dump(backend)
        .await
        .iter()
        .any(|(_, k, v)| contains(k, needle.as_bytes()) || contains(v, needle.as_bytes()))
}

// ---------------------------------------------------------------- environments

pub async fn environments_are_created_once(b: &Reopen) {
    let master = MasterKey::generate();
    let (store, created) = Store::open(b.open(), master.clone(), &initial())
        .await
        .unwrap();
    let created: BTreeMap<_, _> = created.into_iter().collect();
    assert_eq!(created.len(), 2);
    let dev_key = &created["dev"];
    assert_eq!(Uuid::parse_str(dev_key).unwrap().get_version_num(), 4);
    assert_eq!(created["prod"], "prod-secret-given");
    let names: Vec<_> = store
        .environments()
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    assert_eq!(names, ["dev", "prod"]);
    let ids = (dev(&store).id(), prod(&store).id());
    assert_ne!(ids.0, ids.1);
    assert_eq!(store.environment_by_id(ids.1).unwrap().name(), "prod");
    let backend = b.open_shared(&store);
    assert!(
        !raw_contains(backend.as_ref(), dev_key).await,
        "keys are stored hashed"
    );
    assert!(!raw_contains(backend.as_ref(), "prod-secret-given").await);
    drop((store, backend));

    let more = vec![("dev".into(), None), ("staging".into(), None)];
    let (store, created) = Store::open(b.open(), master, &more).await.unwrap();
    assert!(created.is_empty(), "nothing is created on a later start");
    assert_eq!((dev(&store).id(), prod(&store).id()), ids);
    assert!(store.environment("staging").is_none());
}

impl Reopen {
    /// The backend a store was opened over (for raw assertions), without
    /// opening it again.
    fn open_shared(&self, store: &Store) -> Arc<dyn Backend> {
        Arc::clone(&dev(store).inner.shared.backend)
    }
}

pub async fn secret_keys_authenticate_their_environment(b: &Reopen) {
    let master = MasterKey::generate();
    let (store, created) = Store::open(b.open(), master, &initial()).await.unwrap();
    let created: BTreeMap<_, _> = created.into_iter().collect();
    assert_eq!(
        store.environment_by_key(&created["dev"]).unwrap().name(),
        "dev"
    );
    assert_eq!(
        store
            .environment_by_key("prod-secret-given")
            .unwrap()
            .name(),
        "prod"
    );
    assert!(store.environment_by_key("prod-secret-given ").is_none());
    assert!(store.environment_by_key("").is_none());
    assert!(
        store
            .environment_by_key(&created["dev"].to_uppercase())
            .is_none()
    );

    // Two environments given one key would make a key ambiguous.
    let other = Reopen::memory(MemoryBackend::new());
    let same = vec![
        ("a".into(), Some("the-same-key-given-twice".into())),
        ("b".into(), Some("the-same-key-given-twice".into())),
    ];
    let err = Store::open(other.open(), MasterKey::generate(), &same)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same secret key"), "{err}");

    // A key anyone could guess, or one an `Authorization` header cannot
    // carry, is refused, naming why; nothing is created.
    for (key, why) in [
        ("a", "fewer than 16"),
        ("short-key", "fewer than 16"),
        ("has a space in the middle", "a space"),
        ("tab\tseparated-secret-key", "a space"),
    ] {
        let weak = Reopen::memory(MemoryBackend::new());
        let err = Store::open(
            weak.open(),
            MasterKey::generate(),
            &[("dev".into(), Some(key.into()))],
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains(why) && err.contains("`dev`"), "{key:?}: {err}");
        let (_, created) = Store::open(weak.open(), MasterKey::generate(), &[("dev".into(), None)])
            .await
            .unwrap();
        assert_eq!(created.len(), 1, "the refused start created something");
    }
}

/// A lost or leaked key is replaced: the new one authenticates (after a
/// reopen too) and signs, the old one no longer does, the data stays.
pub async fn secret_keys_can_be_replaced(b: &Reopen) {
    let master = MasterKey::generate();
    let (store, created) = Store::open(b.open(), master.clone(), &initial())
        .await
        .unwrap();
    let created: BTreeMap<_, _> = created.into_iter().collect();
    dev(&store)
        .put_connection(&connection("github", "c1", "tok-1"))
        .await
        .unwrap();
    let err = match store
        .replace_secret_keys(&[("dev".into(), Some("prod-secret-given".into()))])
        .await
    {
        Ok(_) => panic!("a key another environment has was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("same secret key"), "{err}");
    // The key it has is not a new one (a leaked key given again).
    let (store, _) = Store::open(b.open(), master.clone(), &initial())
        .await
        .unwrap();
    let err = match store
        .replace_secret_keys(&[("dev".into(), Some(created["dev"].clone()))])
        .await
    {
        Ok(_) => panic!("the environment's own key was taken as a new one"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("the one it has"), "{err}");
    let (store, _) = Store::open(b.open(), master.clone(), &initial())
        .await
        .unwrap();
    // A key an environment gives up (for a generated one) may go to
    // another, in either order.
    for replace in [
        [
            ("prod".to_string(), None),
            ("dev".to_string(), Some("prod-secret-given".to_string())),
        ],
        [
            ("dev".to_string(), Some("prod-secret-given".to_string())),
            ("prod".to_string(), None),
        ],
    ] {
        store.check_new_keys(&replace).unwrap();
    }
    let (store, replaced) = store
        .replace_secret_keys(&[("dev".into(), None)])
        .await
        .unwrap();
    let new = &replaced[0].1;
    assert_eq!(replaced[0].0, "dev");
    assert_ne!(new, &created["dev"]);
    assert!(store.environment_by_key(&created["dev"]).is_none());
    assert_eq!(store.environment_by_key(new).unwrap().name(), "dev");
    drop(store);
    let (store, _) = Store::open(b.open(), master, &initial()).await.unwrap();
    assert!(store.environment_by_key(&created["dev"]).is_none());
    let env = store.environment_by_key(new).unwrap();
    assert_eq!(env.name(), "dev");
    assert_eq!(
        env.secret(crate::SECRET_KEY).await.unwrap().as_deref(),
        Some(new.as_str())
    );
    assert!(env.connection("github", "c1").await.unwrap().is_some());
    assert_eq!(
        store
            .environment_by_key("prod-secret-given")
            .unwrap()
            .name(),
        "prod"
    );
}

pub async fn wrong_master_key_is_refused(b: &Reopen) {
    let (store, master) = fresh(b).await;
    dev(&store)
        .put_connection(&connection("github", "c1", "tok-1"))
        .await
        .unwrap();
    drop(store);
    let err = Store::open(b.open(), MasterKey::generate(), &initial())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("master key") && text.contains("refusing"),
        "{text}"
    );
    // Nothing was changed: the right key still opens it.
    let store = open(b, &master).await;
    let c = dev(&store)
        .connection("github", "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.credentials.token(), Some("tok-1"));
}

/// One who can write the store but lacks the master key cannot give an
/// environment a key of their own by writing its hash.
pub async fn a_key_hash_put_in_place_without_the_master_key_is_refused(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let backend = b.open_shared(&store);
    let env_key = keys::env(dev(&store).id()).into_bytes();
    let row = backend
        .get(Table::Environments, &env_key)
        .await
        .unwrap()
        .unwrap();
    drop(store);
    let mut row: Value = serde_json::from_slice(&row).unwrap();
    let hash = Sha256::digest(b"the attacker's key");
    row["secret_key_sha256"] = json!(crate::store::hex(&hash));
    backend
        .apply(vec![Op::Put {
            table: Table::Environments,
            key: env_key,
            value: serde_json::to_vec(&row).unwrap(),
        }])
        .await
        .unwrap();
    let err = Store::open(Arc::clone(&backend), master, &initial())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sealed key"), "{err}");
}

pub async fn unreadable_metadata_is_refused(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let backend = b.open_shared(&store);
    let env_key = keys::env(dev(&store).id()).into_bytes();
    let env_row = backend
        .get(Table::Environments, &env_key)
        .await
        .unwrap()
        .unwrap();
    drop(store);

    let put = |table, key: &[u8], value: &[u8]| Op::Put {
        table,
        key: key.to_vec(),
        value: value.to_vec(),
    };
    backend
        .apply(vec![put(Table::Meta, b"format", b"something else 9")])
        .await
        .unwrap();
    let err = Store::open(Arc::clone(&backend), master.clone(), &initial())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("metadata") && err.to_string().contains("format"),
        "{err}"
    );

    backend
        .apply(vec![Op::Delete {
            table: Table::Meta,
            key: b"format".to_vec(),
        }])
        .await
        .unwrap();
    let err = Store::open(Arc::clone(&backend), master.clone(), &initial())
        .await
        .unwrap_err();
    // Refused either way: a backend that can lose its contents says no
    // store may be made over it; the others find the environments.
    assert!(
        err.to_string().contains("marker is missing")
            || err.to_string().contains("no format marker"),
        "{err}"
    );

    backend
        .apply(vec![put(Table::Meta, b"format", b"sluice-store 1")])
        .await
        .unwrap();
    backend
        .apply(vec![put(Table::Environments, &env_key, b"{not json")])
        .await
        .unwrap();
    let err = Store::open(Arc::clone(&backend), master.clone(), &initial())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Metadata(_)), "{err:?}");

    // Restored, it opens again: nothing was recreated meanwhile.
    backend
        .apply(vec![put(Table::Environments, &env_key, &env_row)])
        .await
        .unwrap();
    let (store, created) = Store::open(backend, master, &initial()).await.unwrap();
    assert!(created.is_empty());
    assert_eq!(keys::env(dev(&store).id()).into_bytes(), env_key);
}

pub async fn environments_are_isolated(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let (d, p) = (dev(&store), prod(&store));
    let c = conn("github", "c1");
    for (env, tag) in [(&d, "dev"), (&p, "prod")] {
        let mut i = integration("github", &format!("secret-{tag}"));
        i.display_name = Some(tag.into());
        env.put_integration(&i).await.unwrap();
        env.put_connection(&connection("github", "c1", &format!("tok-{tag}")))
            .await
            .unwrap();
        save(env, &c, "Issue", json!([{"id": "1", "env": tag}])).await;
        env.put_doc("sync", "s1", &json!({"env": tag}))
            .await
            .unwrap();
        env.put_connection_doc(&c, "state", "k", &json!(tag))
            .await
            .unwrap();
        env.set_variables(vec![("A".into(), tag.into())])
            .await
            .unwrap();
    }
    save(&d, &c, "DevOnly", json!([{"id": "x"}])).await;
    d.put_doc("sync", "dev-only", &json!(1)).await.unwrap();

    for (env, tag) in [(&d, "dev"), (&p, "prod")] {
        assert_eq!(
            env.integration("github")
                .await
                .unwrap()
                .unwrap()
                .display_name
                .as_deref(),
            Some(tag)
        );
        assert_eq!(env.integrations().await.unwrap().len(), 1);
        let got = env.connection("github", "c1").await.unwrap().unwrap();
        assert_eq!(got.credentials.token(), Some(format!("tok-{tag}").as_str()));
        assert_eq!(env.connections(None).await.unwrap().len(), 1);
        let page = env
            .records_page(&c, "Issue", &RecordsQuery::default())
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].json["env"], tag);
        assert_eq!(
            env.doc::<Value>("sync", "s1").await.unwrap(),
            Some(json!({"env": tag}))
        );
        assert_eq!(
            env.connection_doc::<Value>(&c, "state", "k").await.unwrap(),
            Some(json!(tag))
        );
        assert_eq!(
            env.variables().await.unwrap(),
            vec![("A".to_string(), tag.to_string())]
        );
    }
    assert!(
        p.records_page(&c, "DevOnly", &RecordsQuery::default())
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert_eq!(p.record_count(&c, "DevOnly").await.unwrap(), 0);
    assert_eq!(p.models(&c).await.unwrap(), ["Issue"]);
    assert_eq!(d.models(&c).await.unwrap(), ["DevOnly", "Issue"]);
    assert!(p.doc::<Value>("sync", "dev-only").await.unwrap().is_none());
    assert_eq!(
        p.docs::<Value>("sync", "", None, 10, false)
            .await
            .unwrap()
            .len(),
        1
    );

    // Deleting in one environment leaves the other's alone.
    assert!(d.delete_connection("github", "c1").await.unwrap());
    assert!(d.delete_integration("github").await.unwrap());
    assert!(p.connection("github", "c1").await.unwrap().is_some());
    assert!(p.integration("github").await.unwrap().is_some());
    assert_eq!(p.record_count(&c, "Issue").await.unwrap(), 1);
    assert_eq!(
        p.connection_doc::<Value>(&c, "state", "k").await.unwrap(),
        Some(json!("prod"))
    );

    // And by layout: every per-environment key starts with an env's id.
    let backend = b.open_shared(&store);
    let prefixes = [
        keys::env(d.id()).into_bytes(),
        keys::env(p.id()).into_bytes(),
    ];
    for (table, key, _) in raw_dump(backend.as_ref()).await {
        if !matches!(table, Table::Meta | Table::Blobs) {
            assert!(
                prefixes.iter().any(|pre| key.starts_with(pre)),
                "{table:?} key outside any environment"
            );
        }
    }
}

// ---------------------------------------------------------------- integrations, connections

pub async fn integrations_round_trip(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let mut a = integration("github", "client-secret-xyz");
    let bee = Integration {
        oauth_client_secret: None,
        webhook_secret: None,
        forward_webhooks: false,
        ..integration("github-2", "unused")
    };
    env.put_integration(&bee).await.unwrap();
    env.put_integration(&a).await.unwrap();
    assert_eq!(env.integration("github").await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        env.integration("github-2").await.unwrap().as_ref(),
        Some(&bee)
    );
    assert!(env.integration("git").await.unwrap().is_none());
    let keys: Vec<_> = env
        .integrations()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.unique_key)
        .collect();
    assert_eq!(keys, ["github", "github-2"]);
    a.oauth_scopes = None;
    a.oauth_client_secret = Some("rotated-secret".into());
    env.put_integration(&a).await.unwrap();
    assert_eq!(env.integration("github").await.unwrap().as_ref(), Some(&a));
    assert!(env.delete_integration("github").await.unwrap());
    assert!(!env.delete_integration("github").await.unwrap());
    assert_eq!(env.integrations().await.unwrap(), vec![bee]);
}

pub async fn connections_round_trip_and_list_by_prefix(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    // `gh` is a string prefix of `gh2`; listing `gh` must not include it.
    for (pck, cid) in [("gh2", "a"), ("gh", "b"), ("gh", "a"), ("hub", "a")] {
        env.put_connection(&connection(pck, cid, &format!("tok-{pck}-{cid}")))
            .await
            .unwrap();
    }
    let list = |pck: Option<&'static str>| {
        let env = env.clone();
        async move {
            env.connections(pck)
                .await
                .unwrap()
                .into_iter()
                .map(|c| format!("{}/{}", c.provider_config_key, c.connection_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some("gh")).await, ["gh/a", "gh/b"]);
    assert_eq!(list(Some("g")).await, Vec::<String>::new());
    assert_eq!(list(None).await, ["gh/a", "gh/b", "gh2/a", "hub/a"]);
    let c = env.connection("gh2", "a").await.unwrap().unwrap();
    assert_eq!(c, connection("gh2", "a", "tok-gh2-a").with_times(&c));
    assert!(env.connection_exists("gh2", "a").await.unwrap());
    assert!(!env.connection_exists("gh2", "zz").await.unwrap());
    assert!(!env.connection_exists("gh", "a2").await.unwrap());
    assert!(env.connection("gh", "c").await.unwrap().is_none());
    assert!(env.delete_connection("gh", "a").await.unwrap());
    assert!(!env.delete_connection("gh", "a").await.unwrap());
    assert_eq!(list(Some("gh")).await, ["gh/b"]);

    // Many connections list in one pass, in order, with their credentials.
    for i in 0..1_200 {
        env.put_connection(&connection("bulk", &format!("{i:05}"), &format!("t{i}")))
            .await
            .unwrap();
    }
    let bulk = env.connections(Some("bulk")).await.unwrap();
    assert_eq!(bulk.len(), 1_200);
    assert!(
        bulk.windows(2)
            .all(|w| w[0].connection_id < w[1].connection_id)
    );
    assert_eq!(bulk[1_111].credentials.token(), Some("t1111"));
}

trait WithTimes {
    fn with_times(self, other: &Connection) -> Connection;
}

impl WithTimes for Connection {
    fn with_times(mut self, other: &Connection) -> Connection {
        self.created_at = other.created_at;
        self.updated_at = other.updated_at;
        self
    }
}

pub async fn connection_store_reads_and_writes_metadata(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let cs: &dyn ConnectionStore = &env;
    assert!(matches!(
        cs.get("github", "c1").await,
        Err(ConnectionError::NotFound { .. })
    ));
    assert!(matches!(
        cs.set_metadata("github", "c1", json!({})).await,
        Err(ConnectionError::NotFound { .. })
    ));
    let original = connection("github", "c1", "tok-1");
    env.put_connection(&original).await.unwrap();
    assert_eq!(cs.get("github", "c1").await.unwrap(), original);

    cs.update_metadata(
        "github",
        "c1",
        json!({"b": {"x": 1}}).as_object().cloned().unwrap(),
        1 << 20,
    )
    .await
    .unwrap();
    cs.update_metadata(
        "github",
        "c1",
        json!({"b": {"y": 2}}).as_object().cloned().unwrap(),
        1 << 20,
    )
    .await
    .unwrap();
    let got = cs.get("github", "c1").await.unwrap();
    assert_eq!(
        got.metadata,
        json!({"team": "a", "b": {"y": 2}}),
        "a shallow merge"
    );
    // A merge that would pass the bound changes nothing.
    assert!(matches!(
        cs.update_metadata(
            "github",
            "c1",
            json!({"c": "x".repeat(200)}).as_object().cloned().unwrap(),
            100,
        )
        .await,
        Err(ConnectionError::MetadataTooLarge { max: 100 })
    ));
    assert_eq!(cs.get("github", "c1").await.unwrap().metadata, got.metadata);
    assert_eq!(got.credentials, original.credentials);
    assert!(got.updated_at >= original.updated_at);
    assert_eq!(cs.metadata("github", "c1").await.unwrap(), got.metadata);

    cs.set_metadata("github", "c1", json!({"only": true}))
        .await
        .unwrap();
    assert_eq!(
        cs.get("github", "c1").await.unwrap().metadata,
        json!({"only": true})
    );
    assert!(matches!(
        cs.set_metadata("github", "c1", json!([1])).await,
        Err(ConnectionError::InvalidMetadata(_))
    ));
    cs.set_metadata("github", "c1", Value::Null).await.unwrap();
    assert_eq!(cs.get("github", "c1").await.unwrap().metadata, Value::Null);

    // Concurrent patches of one connection are serialised: none is lost.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let patch = json!({ format!("k{i}"): i }).as_object().cloned().unwrap();
            env.update_metadata("github", "c1", patch, 1 << 20)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        cs.get("github", "c1")
            .await
            .unwrap()
            .metadata
            .as_object()
            .unwrap()
            .len(),
        20
    );
}

pub async fn variables_round_trip(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    assert!(env.variables().await.unwrap().is_empty());
    let vars = vec![
        ("Z".to_string(), "1".to_string()),
        ("A".into(), "api-key-789".into()),
    ];
    env.set_variables(vars.clone()).await.unwrap();
    assert_eq!(env.variables().await.unwrap(), vars);
    env.set_variables(Vec::new()).await.unwrap();
    assert!(env.variables().await.unwrap().is_empty());
}

// ---------------------------------------------------------------- documents, blobs

/// The port's scan (and `scan_where`) over more entries than a backend
/// reads in one go, both directions, from the start and after a key,
/// against an ordered map.
pub async fn long_scans_match_an_ordered_map_both_ways(b: &Reopen) {
    let backend = b.open();
    let mut model = BTreeMap::new();
    let mut ops = Vec::new();
    for i in 0..60u32 {
        for prefix in [&b"a/"[..], b"b/", b"c"] {
            let key = [prefix, format!("{i:03}").as_bytes()].concat();
            model.insert(key.clone(), i.to_be_bytes().to_vec());
            ops.push(Op::Put {
                table: Table::Docs,
                key,
                value: i.to_be_bytes().to_vec(),
            });
        }
    }
    backend.apply(ops).await.unwrap();
    let in_b: Vec<(Vec<u8>, Vec<u8>)> = model
        .iter()
        .filter(|(k, _)| k.starts_with(b"b/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for limit in [1, 16, 17, 40, 100] {
        for after in [None, Some(b"b/010".to_vec()), Some(b"b/050".to_vec())] {
            let forward: Vec<_> = in_b
                .iter()
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
                .take(limit)
                .cloned()
                .collect();
            let backward: Vec<_> = in_b
                .iter()
                .rev()
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k < a))
                .take(limit)
                .cloned()
                .collect();
            for (reverse, expected) in [(false, forward), (true, backward)] {
                let got = backend
                    .scan(Table::Docs, b"b/", after.as_deref(), limit, reverse)
                    .await
                    .unwrap();
                assert_eq!(
                    got, expected,
                    "limit {limit}, after {after:?}, reverse {reverse}"
                );
                // The same scan keeping only even values: every key, the
                // values kept.
                let filtered = backend
                    .scan_where(
                        Table::Docs,
                        b"b/",
                        after.as_deref(),
                        limit,
                        reverse,
                        &mut |v| v[3] % 2 == 0,
                    )
                    .await
                    .unwrap();
                let expected: Vec<_> = expected
                    .into_iter()
                    .map(|(k, v)| {
                        let even = v[3] % 2 == 0;
                        (k, even.then_some(v))
                    })
                    .collect();
                assert_eq!(
                    filtered, expected,
                    "scan_where, limit {limit}, reverse {reverse}"
                );
            }
        }
    }
}

/// Writers of every kind at once (durable batches, unflushed ones, ops in
/// order, single ops), several on shared keys: a backend may group them
/// (the writer threads do) but every writer's own writes land in its
/// order, each batch whole, and all of it is there after reopening.
pub async fn concurrent_writes_of_every_kind_keep_their_order(b: &Reopen) {
    let backend = b.open();
    let put = |key: String, value: String| Op::Put {
        table: Table::Docs,
        key: key.into_bytes(),
        value: value.into_bytes(),
    };
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            for round in 0..25u32 {
                let v = format!("{w}:{round}");
                let own = |name: &str| format!("w{w}/{name}");
                match (w + round) % 4 {
                    // A batch over two tables, with a later op on the same
                    // key winning.
                    0 => backend
                        .apply(vec![
                            put(own("a"), "stale".into()),
                            put(own("a"), v.clone()),
                            Op::Put {
                                table: Table::Meta,
                                key: own("m").into_bytes(),
                                value: v.clone().into_bytes(),
                            },
                        ])
                        .await
                        .unwrap(),
                    1 => backend
                        .apply_unflushed(vec![put(own("a"), v.clone())])
                        .await
                        .unwrap(),
                    2 => backend
                        .apply_unflushed_in_order(vec![
                            put(own("a"), "stale".into()),
                            put(own("b"), v.clone()),
                            put(own("a"), v.clone()),
                            Op::Delete {
                                table: Table::Docs,
                                key: own("gone").into_bytes(),
                            },
                        ])
                        .await
                        .unwrap(),
                    _ => backend
                        .apply(vec![put(own("gone"), v.clone())])
                        .await
                        .unwrap(),
                }
                // Shared keys: the last writer wins, whoever it is.
                backend
                    .apply_unflushed_in_order(vec![put("shared".into(), v)])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Durable once more, so a reopen sees the unflushed writes too.
    backend
        .apply(vec![put("done".into(), "1".into())])
        .await
        .unwrap();
    drop(backend);
    let backend = b.open();
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8(v).unwrap());
    for w in 0..8u32 {
        let get = |table: Table, name: &str| {
            let backend = Arc::clone(&backend);
            let key = format!("w{w}/{name}").into_bytes();
            async move { text(backend.get(table, &key).await.unwrap()) }
        };
        let last_of = |kind: u32| (0..25u32).rev().find(|r| (w + r) % 4 == kind).unwrap();
        // Kinds 0, 1 and 2 write `a`.
        let a = last_of(0).max(last_of(1)).max(last_of(2));
        assert_eq!(get(Table::Docs, "a").await, Some(format!("{w}:{a}")));
        assert_eq!(
            get(Table::Meta, "m").await,
            Some(format!("{w}:{}", last_of(0)))
        );
        assert_eq!(
            get(Table::Docs, "b").await,
            Some(format!("{w}:{}", last_of(2)))
        );
        // `gone` is put by kind 3 and deleted by kind 2: whichever came last.
        let gone = get(Table::Docs, "gone").await;
        if last_of(3) > last_of(2) {
            assert_eq!(gone, Some(format!("{w}:{}", last_of(3))));
        } else {
            assert_eq!(gone, None);
        }
    }
    let shared = text(backend.get(Table::Docs, b"shared").await.unwrap()).unwrap();
    assert!(shared.ends_with(":24"), "a writer's last round: {shared}");
}

pub async fn documents_scan_by_prefix_and_cursor(b: &Reopen) {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Deployment {
        version: u32,
        scripts: Vec<String>,
    }
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    for (i, key) in ["a1", "a2", "b1", "a10"].iter().enumerate() {
        let d = Deployment {
            version: i as u32,
            scripts: vec![key.to_string()],
        };
        env.put_doc("deployments", key, &d).await.unwrap();
    }
    env.put_doc("deployments2", "a0", &json!("other collection"))
        .await
        .unwrap();
    env.put_doc(
        "deploy",
        "mentsa0",
        &json!("no bleeding across collection names"),
    )
    .await
    .unwrap();

    let got: Option<Deployment> = env.doc("deployments", "a2").await.unwrap();
    assert_eq!(got.unwrap().version, 1);
    let names = |v: Vec<(String, Deployment)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        names(env.docs("deployments", "a", None, 10, false).await.unwrap()),
        ["a1", "a10", "a2"]
    );
    assert_eq!(
        names(env.docs("deployments", "", None, 10, false).await.unwrap()),
        ["a1", "a10", "a2", "b1"]
    );
    assert_eq!(
        names(
            env.docs("deployments", "a", Some("a1"), 10, false)
                .await
                .unwrap()
        ),
        ["a10", "a2"]
    );
    assert_eq!(
        names(
            env.docs("deployments", "a", Some("a1"), 1, false)
                .await
                .unwrap()
        ),
        ["a10"]
    );
    assert_eq!(
        names(env.docs("deployments", "", None, 10, true).await.unwrap()),
        ["b1", "a2", "a10", "a1"]
    );
    assert_eq!(
        names(
            env.docs("deployments", "", Some("a2"), 10, true)
                .await
                .unwrap()
        ),
        ["a10", "a1"]
    );
    assert_eq!(
        names(env.docs("deployments", "", None, 2, true).await.unwrap()),
        ["b1", "a2"]
    );
    assert!(
        env.docs::<Deployment>("deployments", "c", None, 10, false)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(env.delete_doc("deployments", "a1").await.unwrap());
    assert!(!env.delete_doc("deployments", "a1").await.unwrap());
    assert!(
        env.doc::<Deployment>("deployments", "a1")
            .await
            .unwrap()
            .is_none()
    );
    // A document of another shape is reported, not misread.
    assert!(env.doc::<Deployment>("deployments2", "a0").await.is_err());

    let c = conn("github", "c1");
    env.put_connection_doc(&c, "state", "sync-a", &json!(1))
        .await
        .unwrap();
    env.put_connection_doc(&c, "state", "sync-b", &json!(2))
        .await
        .unwrap();
    let listed: Vec<(String, Value)> = env
        .connection_docs(&c, "state", "sync-", None, 10, false)
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![
            ("sync-a".to_string(), json!(1)),
            ("sync-b".to_string(), json!(2))
        ]
    );
    assert!(
        env.doc::<Value>("state", "sync-a").await.unwrap().is_none(),
        "connection docs are apart"
    );
    assert!(
        env.delete_connection_doc(&c, "state", "sync-a")
            .await
            .unwrap()
    );
    assert!(
        env.connection_doc::<Value>(&c, "state", "sync-a")
            .await
            .unwrap()
            .is_none()
    );
    // A queue entry moves to a new key in one write; an unflushed delete
    // takes it out.
    env.put_doc("queue", "001-a", &json!({"n": 1}))
        .await
        .unwrap();
    env.move_doc("queue", "001-a", "005-a", &json!({"n": 2}))
        .await
        .unwrap();
    let queue: Vec<(String, Value)> = env.docs("queue", "", None, 10, false).await.unwrap();
    assert_eq!(queue, vec![("005-a".to_string(), json!({"n": 2}))]);
    env.delete_doc_unflushed("queue", "005-a").await.unwrap();
    assert!(
        env.docs::<Value>("queue", "", None, 10, false)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A value read from outside at the JSON parser's depth limit, stored a
/// few levels down in a document (an upstream's error in a sync's state, a
/// webhook body in its queue entry), reads back, after a restart too.
pub async fn a_document_deeper_than_a_parse_reads_back(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let env = dev(&store);
    let parsed: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(127), "]".repeat(127)))
        .expect("127 levels parse");
    let doc = json!({"last_run": {"error": {"upstream": {"data": parsed}}}});
    env.put_doc("sync-state", "s1", &doc).await.unwrap();
    let read: Option<Value> = env.doc("sync-state", "s1").await.unwrap();
    assert_eq!(read.as_ref(), Some(&doc));
    let listed: Vec<(String, Value)> = env.docs("sync-state", "", None, 10, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    drop((env, store));
    let store = open(b, &master).await;
    let read: Option<Value> = dev(&store).doc("sync-state", "s1").await.unwrap();
    assert_eq!(read, Some(doc));
}

pub async fn blobs_are_content_addressed(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let small = b"\0asm component".to_vec();
    let hash = store.put_blob(&small).await.unwrap();
    let expected: String = Sha256::digest(&small)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, expected);
    assert_eq!(store.blob(&hash).await.unwrap(), Some(small.clone()));
    assert_eq!(
        store.blob(&hash.to_uppercase()).await.unwrap(),
        Some(small.clone())
    );
    assert_eq!(
        store.put_blob(&small).await.unwrap(),
        hash,
        "the same bytes, the same blob"
    );
    let missing: String = "0".repeat(64);
    assert_eq!(store.blob(&missing).await.unwrap(), None);
    assert!(matches!(
        store.blob("xyz").await,
        Err(StoreError::Invalid(_))
    ));

    // Component files run to ~12 MB.
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let big_hash = store.put_blob(&big).await.unwrap();
    assert_eq!(
        store.blob(&big_hash).await.unwrap().as_deref(),
        Some(big.as_slice())
    );

    // Listed by hash, in order; a deleted one is gone after a reopen too,
    // and deleting it again is no error.
    let mut both = vec![hash.clone(), big_hash.clone()];
    both.sort();
    assert_eq!(store.blob_hashes().await.unwrap(), both);
    assert!(store.has_blob(&big_hash).await.unwrap());
    store.delete_blob(&big_hash.to_uppercase()).await.unwrap();
    assert!(!store.has_blob(&big_hash).await.unwrap());
    store.delete_blob(&big_hash).await.unwrap();
    assert_eq!(store.blob(&big_hash).await.unwrap(), None);
    drop(store);
    let store = open(b, &master).await;
    assert_eq!(store.blob_hashes().await.unwrap(), vec![hash.clone()]);
    assert_eq!(store.blob(&hash).await.unwrap(), Some(small));
    assert!(matches!(
        store.delete_blob("xyz").await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn secrets_are_sealed_at_rest(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    env.put_connection(&connection("github", "c1", "sekret-token-123"))
        .await
        .unwrap();
    env.put_integration(&integration("github", "client-secret-xyz"))
        .await
        .unwrap();
    env.set_variables(vec![("KEY".into(), "api-key-789".into())])
        .await
        .unwrap();
    env.put_doc("notes", "plain", &json!("plaintext-marker-000"))
        .await
        .unwrap();
    assert_eq!(
        env.connection("github", "c1")
            .await
            .unwrap()
            .unwrap()
            .credentials
            .token(),
        Some("sekret-token-123")
    );
    let backend = b.open_shared(&store);
    // The check sees plaintext where there is some…
    assert!(raw_contains(backend.as_ref(), "plaintext-marker-000").await);
    assert!(raw_contains(backend.as_ref(), "client-id-123").await);
    // …and none of the secrets.
    for secret in [
        "sekret-token-123",
        "refresh-1234",
        "client-secret-xyz",
        "whsec-webhook-456",
        "api-key-789",
    ] {
        assert!(
            !raw_contains(backend.as_ref(), secret).await,
            "`{secret}` is stored in plaintext"
        );
    }
}

// ---------------------------------------------------------------- record semantics

pub async fn save_delete_and_undelete_match_the_reference(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let t = Twin::new(dev(&store));
    let c = t
        .write(
            WriteKind::Save,
            json!([{"id": 1, "a": 1}, {"id": "2", "b": [1]}]),
            &job("s", 1),
        )
        .await;
    assert_eq!((c.added, c.updated, c.unchanged), (2, 0, 0));
    let first = t.check(&["1", "2"]).await;
    assert!(first.iter().all(|r| r.last_action() == "ADDED"));

    tokio::time::sleep(Duration::from_millis(2)).await;
    let c = t
        .write(
            WriteKind::Save,
            json!([{"id": 1, "a": 2}, {"id": "2", "b": [1]}]),
            &job("s", 2),
        )
        .await;
    assert_eq!((c.added, c.updated, c.unchanged), (0, 1, 1));
    let second = t.check(&["1", "2"]).await;
    assert_eq!(second[0].last_action(), "UPDATED");
    assert!(second[0].updated_at > first[0].updated_at);
    assert_eq!(second[0].created_at, first[0].created_at);
    // Unchanged: same body and times, new stamp.
    assert_eq!(second[1].json, first[1].json);
    assert_eq!(
        (second[1].created_at, second[1].updated_at),
        (first[1].created_at, first[1].updated_at)
    );
    assert_eq!(second[1].job_id, Some(2));

    let c = t
        .write(
            WriteKind::Delete,
            json!([{"id": "2", "gone": true}, {"id": "9"}]),
            &job("s", 3),
        )
        .await;
    // The unknown id is stored deleted, not counted as a deletion.
    assert_eq!((c.deleted, c.unchanged), (1, 1));
    let deleted = t.check(&["2", "9"]).await;
    assert!(deleted.iter().all(|r| r.last_action() == "DELETED"));
    assert_eq!(
        deleted[0].json["gone"], true,
        "a delete keeps the json passed in"
    );

    let c = t
        .write(
            WriteKind::Delete,
            json!([{"id": "2", "again": 1}]),
            &job("s", 4),
        )
        .await;
    assert_eq!((c.deleted, c.unchanged), (0, 1));
    assert_eq!(t.check(&["2"]).await[0].json["again"], 1);

    tokio::time::sleep(Duration::from_millis(2)).await;
    let c = t
        .write(
            WriteKind::Save,
            json!([{"id": "2", "back": true}]),
            &job("s", 5),
        )
        .await;
    assert_eq!(c.added, 1, "re-saving a deleted record undeletes it");
    let back = &t.check(&["2"]).await[0];
    assert_eq!(back.last_action(), "ADDED");
    assert_eq!(back.created_at, back.updated_at);
    assert!(back.created_at > first[1].created_at);
    // The index moved with every write: one page holds each record once.
    let all = page_all(&t.env, &t.conn, t.model, RecordsQuery::default()).await;
    assert_eq!(all.len(), 3);
    assert_ordered_unique(&all);
    assert_eq!(
        t.env.newest_position(&t.conn, t.model).await.unwrap(),
        all.last().map(StoredRecord::position)
    );
}

pub async fn duplicates_in_a_chunk_first_wins(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let t = Twin::new(dev(&store));
    let c = t
        .write(
            WriteKind::Save,
            json!([{"id": 1, "v": "a"}, {"id": 1, "v": "b"}, {"id": 2}]),
            &job("s", 1),
        )
        .await;
    assert_eq!(c.added, 2);
    assert_eq!(t.check(&["1"]).await[0].json["v"], "a");
    // Across chunks the later one wins.
    t.write(WriteKind::Save, json!([{"id": 1, "v": "c"}]), &job("s", 1))
        .await;
    assert_eq!(t.check(&["1"]).await[0].json["v"], "c");

    // A chunk that reaches the store with a repeated id (not through
    // `prepare_chunk`) still leaves one row, one index entry, right counts.
    let env = dev(&store);
    let chunk = vec![
        rt::Incoming {
            external_id: "d".into(),
            json: json!({"id": "d", "n": 1}).as_object().cloned().unwrap(),
            hash: "h1".into(),
        },
        rt::Incoming {
            external_id: "d".into(),
            json: json!({"id": "d", "n": 2}).as_object().cloned().unwrap(),
            hash: "h2".into(),
        },
    ];
    let c2 = conn("github", "dups");
    env.write(
        WriteKind::Save,
        &c2,
        "M",
        chunk,
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await
    .unwrap();
    let all = page_all(&env, &c2, "M", RecordsQuery::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(env.record_count(&c2, "M").await.unwrap(), 1);
}

pub async fn batch_update_deep_merges_like_the_reference(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let t = Twin::new(dev(&store));
    t.write(
        WriteKind::Save,
        json!([{"id": "1", "o": {"a": 1, "b": 2}, "l": [1, 2]}, {"id": "2", "x": 1}]),
        &job("s", 1),
    )
    .await;
    let c = t
        .write(
            WriteKind::Update,
            json!([{"id": "1", "o": {"b": 3}, "l": [9]}, {"id": "404", "x": 1}]),
            &job("s", 2),
        )
        .await;
    assert_eq!((c.updated, c.added), (1, 0));
    let row = &t.check(&["1", "404"]).await;
    assert_eq!(row.len(), 1, "an update of an unknown id is skipped");
    assert_eq!(
        Value::Object(row[0].json.clone()),
        json!({"id": "1", "o": {"a": 1, "b": 3}, "l": [9]})
    );
    assert_eq!(row[0].last_action(), "UPDATED");

    let c = t
        .write(
            WriteKind::Update,
            json!([{"id": "1", "o": {"b": 3}}]),
            &job("s", 3),
        )
        .await;
    assert_eq!(
        (c.updated, c.unchanged),
        (0, 1),
        "a merge that changes nothing"
    );
    t.check(&["1"]).await;

    t.write(WriteKind::Delete, json!([{"id": "2"}]), &job("s", 4))
        .await;
    let c = t
        .write(
            WriteKind::Update,
            json!([{"id": "2", "y": 2}]),
            &job("s", 5),
        )
        .await;
    assert_eq!(c.updated, 1);
    let undeleted = &t.check(&["2"]).await[0];
    assert!(undeleted.deleted_at.is_none(), "an update undeletes");
    assert_eq!(undeleted.json["y"], 2);
}

pub async fn an_update_cannot_grow_a_record_past_its_limit(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("p", "c");
    save(&env, &c, "M", json!([{"id": "a"}, {"id": "b"}])).await;
    let ctx = WriteContext {
        max_record_bytes: Some(300),
        ..job("s", 2)
    };
    let update = |records: Value| {
        let (chunk, _) = rt::prepare_chunk(objs(records), 0).unwrap();
        let env = env.clone();
        let c = c.clone();
        let ctx = ctx.clone();
        async move {
            env.write(
                WriteKind::Update,
                &c,
                "M",
                chunk,
                &ctx,
                &mut Merging::Override,
            )
            .await
        }
    };
    // Updates that each add a key grow `a` until one would pass 300 bytes.
    let mut refused = None;
    for n in 0..10 {
        match update(json!([{"id": "b", "n": n}, {"id": "a", format!("k{n}"): "x".repeat(50)}]))
            .await
        {
            Ok(changes) => assert_eq!(changes.updated, 2),
            Err(e) => {
                refused = Some((n, e));
                break;
            }
        }
    }
    let Some((n, RecordError::TooLarge { id, max: 300 })) = refused else {
        panic!("no update was refused: {refused:?}");
    };
    assert_eq!(id, "a");
    // Nothing of the refused chunk was written, `b` included; what was
    // stored before is intact.
    let rows = env
        .get_by_ids(&c, "M", &["a".into(), "b".into()])
        .await
        .unwrap();
    let (a, b) = (&rows[0], &rows[1]);
    assert!(!a.json.contains_key(&format!("k{n}")));
    assert!(a.json.contains_key(&format!("k{}", n - 1)));
    assert_eq!(b.json["n"], n - 1);
    assert!(
        serde_json::to_vec(&a.json).unwrap().len() <= 300,
        "{}",
        Value::Object(a.json.clone())
    );
}

pub async fn ignore_if_modified_after_protects_newer_rows(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save(&env, &c, "M", json!([{"id": "old", "v": 1}])).await;
    let mut merging = Merging::IgnoreIfModifiedAfter {
        cursor: env.newest_position(&c, "M").await.unwrap(),
    };
    // Another execution modifies the row after our strategy was set.
    tokio::time::sleep(Duration::from_millis(2)).await;
    save(&env, &c, "M", json!([{"id": "old", "v": 2}])).await;
    let changes = write(
        &env,
        WriteKind::Save,
        &c,
        "M",
        json!([{"id": "old", "v": 3}, {"id": "new"}]),
        &WriteContext::default(),
        &mut merging,
    )
    .await;
    assert_eq!((changes.added, changes.updated), (1, 0));
    let rows = env
        .get_by_ids(&c, "M", &["old".into(), "new".into()])
        .await
        .unwrap();
    assert_eq!(rows[0].json["v"], 2);
    let Merging::IgnoreIfModifiedAfter { cursor } = merging else {
        panic!("the strategy stays")
    };
    assert_eq!(
        cursor,
        Some(rows[1].position()),
        "the cursor follows this execution's writes"
    );
}

// ---------------------------------------------------------------- paging

pub async fn a_page_of_big_records_stops_at_its_byte_bound(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    // 24 records of 2 MiB: 48 MiB, more than a page reads.
    for i in 0..24 {
        save(
            &env,
            &c,
            "Blob",
            json!([{"id": format!("b{i:02}"), "blob": "x".repeat(2 << 20)}]),
        )
        .await;
    }
    let q = RecordsQuery {
        limit: 100,
        ..Default::default()
    };
    let first = env.records_page(&c, "Blob", &q).await.unwrap();
    let n = first.records.len();
    let bound = crate::PAGE_BYTES / (2 << 20);
    assert!(
        (bound..=bound + 1).contains(&n),
        "{n} records on the first page"
    );
    assert!(first.next.is_some(), "a cut page has a cursor");
    let rest = env
        .records_page(
            &c,
            "Blob",
            &RecordsQuery {
                after: first.next,
                ..q
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 24 - n);
    assert_eq!(rest.next, None);
    let mut ids: Vec<String> = first
        .records
        .iter()
        .chain(&rest.records)
        .map(|r| r.external_id.clone())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 24);
}

pub async fn paging_visits_every_record_once_in_order(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save_many(&env, &c, "Issue", 0, 2_345, 1).await;
    // A neighbour scope must not show up.
    save_many(&env, &c, "Issue2", 0, 10, 1).await;
    save_many(&env, &conn("github", "c10"), "Issue", 0, 10, 1).await;

    let everything = page_all(
        &env,
        &c,
        "Issue",
        RecordsQuery {
            limit: 10_000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(everything.len(), 2_345);
    assert_ordered_unique(&everything);
    for limit in [1, 97, 100, 2_345] {
        if limit == 1 {
            // Page by one through the first 50 only: every step is a seek.
            let mut q = RecordsQuery {
                limit: 1,
                ..Default::default()
            };
            for expected in &everything[..50] {
                let page = env.records_page(&c, "Issue", &q).await.unwrap();
                assert_eq!(page.records, vec![expected.clone()]);
                q.after = page.next;
            }
            continue;
        }
        let paged = page_all(
            &env,
            &c,
            "Issue",
            RecordsQuery {
                limit,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(paged, everything, "limit {limit}");
    }
    // A page deep in the records starts right after its cursor.
    let deep = env
        .records_page(
            &c,
            "Issue",
            &RecordsQuery {
                after: Some(everything[1_999].position()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(deep.records, everything[2_000..2_100]);
    assert_eq!(deep.next, Some(everything[2_099].position()));
    let tail = env
        .records_page(
            &c,
            "Issue",
            &RecordsQuery {
                after: Some(everything[2_300].position()),
                limit: 44,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (tail.records.len(), tail.next),
        (44, None),
        "no next when nothing follows"
    );
    // A cursor that names no stored record still orders correctly.
    let between = Position {
        updated_at: everything[500].updated_at,
        internal_id: Uuid::nil(),
    };
    let page = env
        .records_page(
            &c,
            "Issue",
            &RecordsQuery {
                after: Some(between),
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first_at_that_time = everything
        .iter()
        .find(|r| r.updated_at == everything[500].updated_at)
        .unwrap();
    assert_eq!(page.records[0], *first_at_that_time);
    assert!(matches!(
        env.records_page(
            &c,
            "Issue",
            &RecordsQuery {
                limit: 0,
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn paging_survives_updates_between_pages(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save_many(&env, &c, "Issue", 0, 1_000, 1).await;
    let mut q = RecordsQuery {
        limit: 100,
        ..Default::default()
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let page = env.records_page(&c, "Issue", &q).await.unwrap();
        seen.extend(page.records);
        q.after = page.next;
    }
    // Update 50 records already read and 50 not yet read, delete 10 unread.
    let read: Vec<String> = seen[..50].iter().map(|r| r.external_id.clone()).collect();
    let ahead_ids: HashSet<String> = seen.iter().map(|r| r.external_id.clone()).collect();
    let unread: Vec<String> = (0..1_000)
        .map(|i| format!("r{i:05}"))
        .filter(|id| !ahead_ids.contains(id))
        .take(60)
        .collect();
    let updated: Vec<Value> = read
        .iter()
        .chain(&unread[..50])
        .map(|id| json!({"id": id, "v": 2}))
        .collect();
    save(&env, &c, "Issue", Value::Array(updated)).await;
    let deletes: Vec<Value> = unread[50..].iter().map(|id| json!({"id": id})).collect();
    write(
        &env,
        WriteKind::Delete,
        &c,
        "Issue",
        Value::Array(deletes),
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await;
    seen.extend(page_all(&env, &c, "Issue", q).await);

    assert_ordered_unique(&seen);
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for r in &seen {
        *times.entry(r.external_id.clone()).or_default() += 1;
    }
    assert_eq!(times.len(), 1_000, "no record is missed");
    let changed: HashSet<&String> = read.iter().chain(&unread).collect();
    for (id, n) in &times {
        let expected = if read.contains(id) { 2 } else { 1 };
        assert_eq!(*n, expected, "{id} seen {n} times");
        let last = seen.iter().rev().find(|r| &r.external_id == id).unwrap();
        if changed.contains(id) {
            assert!(
                last.json.get("v") == Some(&json!(2)) || last.deleted_at.is_some(),
                "{id}: its latest version comes last"
            );
        }
    }
}

pub async fn raw_pages_match_decoded_pages(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save(
        &env,
        &c,
        "M",
        json!([
            {"id": 1},
            {"id": "quote\"d", "text": "line\nbreak \u{1F600} \\ é", "n": [1.5, null, {"x": {}}]},
            {"id": "own-meta", "_nango_metadata": {"mine": true}, "after": 1},
            {"id": "nested", "o": {"_nango_metadata": 1}},
            {"id": "to-update", "v": 1},
            {"id": "to-delete"},
        ]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    save(&env, &c, "M", json!([{"id": "to-update", "v": 2}])).await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "M",
        json!([{"id": "to-delete", "x": 1}]),
        &job("s", 1),
        &mut Merging::Override,
    )
    .await;

    for query in [
        RecordsQuery {
            limit: 4,
            ..Default::default()
        },
        RecordsQuery {
            limit: 100,
            ..Default::default()
        },
        RecordsQuery {
            ids: vec!["nested".into(), "1".into()],
            ..Default::default()
        },
    ] {
        let decoded = env.records_page(&c, "M", &query).await.unwrap();
        let raw = env.records_page_raw(&c, "M", &query).await.unwrap();
        assert_eq!(raw.next, decoded.next);
        assert_eq!(raw.records.len(), decoded.records.len());
        for (r, d) in raw.records.iter().zip(&decoded.records) {
            let mut view = Vec::new();
            r.write_view(&mut view).unwrap();
            assert_eq!(
                String::from_utf8(view).unwrap(),
                serde_json::to_string(&d.to_view()).unwrap(),
                "the spliced view is the decoded one, byte for byte"
            );
            let mut stored = r.to_stored().unwrap();
            assert_eq!((stored.sync_id.take(), stored.job_id.take()), (None, None));
            let mut expected = d.clone();
            expected.sync_id = None;
            expected.job_id = None;
            assert_eq!(stored, expected);
            assert_eq!(r.last_action(), d.last_action());
        }
    }
}

pub async fn filter_modified_after_and_ids(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save(
        &env,
        &c,
        "M",
        json!([{"id": "a"}, {"id": "b", "v": 1}, {"id": "c"}]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    save(&env, &c, "M", json!([{"id": "b", "v": 2}])).await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "M",
        json!([{"id": "c"}]),
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    // Apart, so that their order is by time, not by internal id.
    save(&env, &c, "M", json!([{"id": "d"}])).await;
    save(&env, &c, "M", json!([{"id": "e"}])).await;

    let ids = |rows: Vec<StoredRecord>| rows.into_iter().map(|r| r.external_id).collect::<Vec<_>>();
    let query = |filter: &str| RecordsQuery {
        filter: Some(RecordFilter::parse(filter).unwrap()),
        limit: 2,
        ..Default::default()
    };
    // Paged with a small limit so filtered-out rows sit between pages.
    assert_eq!(
        ids(page_all(&env, &c, "M", query("added")).await),
        ["a", "d", "e"]
    );
    assert_eq!(ids(page_all(&env, &c, "M", query("UPDATED")).await), ["b"]);
    assert_eq!(ids(page_all(&env, &c, "M", query("deleted")).await), ["c"]);
    assert_eq!(
        ids(page_all(&env, &c, "M", query("deleted, Added")).await),
        ["a", "c", "d", "e"]
    );
    assert!(RecordFilter::parse("added,removed").is_none());
    assert!(RecordFilter::parse("").is_none());
    let f = RecordFilter::parse("added").unwrap();
    let all = page_all(&env, &c, "M", RecordsQuery::default()).await;
    assert_eq!(all.iter().filter(|r| f.matches(r)).count(), 3);

    // modified_after is inclusive: `updated_at >= value`.
    let b_row = all.iter().find(|r| r.external_id == "b").unwrap().clone();
    let since = |t| RecordsQuery {
        modified_after: Some(t),
        limit: 1,
        ..Default::default()
    };
    assert_eq!(
        ids(page_all(&env, &c, "M", since(b_row.updated_at)).await),
        ["b", "c", "d", "e"]
    );
    let just_after = b_row.updated_at + chrono::Duration::microseconds(1);
    assert_eq!(
        ids(page_all(&env, &c, "M", since(just_after)).await),
        ["c", "d", "e"]
    );
    // With a cursor too, the later bound wins.
    let both = RecordsQuery {
        modified_after: Some(b_row.updated_at),
        after: Some(
            all.iter()
                .find(|r| r.external_id == "d")
                .unwrap()
                .position(),
        ),
        ..Default::default()
    };
    assert_eq!(ids(page_all(&env, &c, "M", both).await), ["e"]);

    // ids: looked up directly, ordered, unknown and repeated ids ignored.
    let by_ids = |list: &[&str], limit| RecordsQuery {
        ids: list.iter().map(|s| s.to_string()).collect(),
        limit,
        ..Default::default()
    };
    assert_eq!(
        ids(page_all(&env, &c, "M", by_ids(&["e", "a", "zz", "a", "c"], 10)).await),
        ["a", "c", "e"]
    );
    let first = env
        .records_page(&c, "M", &by_ids(&["e", "a", "c"], 2))
        .await
        .unwrap();
    assert_eq!(ids(first.records.clone()), ["a", "c"]);
    assert_eq!(first.next, Some(first.records[1].position()));
    assert_eq!(
        ids(page_all(&env, &c, "M", by_ids(&["e", "a", "c"], 1)).await),
        ["a", "c", "e"]
    );
    let mut filtered = by_ids(&["a", "b", "c"], 10);
    filtered.filter = RecordFilter::parse("updated,deleted");
    assert_eq!(ids(page_all(&env, &c, "M", filtered).await), ["b", "c"]);
}

// ---------------------------------------------------------------- deletes, counts

pub async fn delete_stale_soft_deletes_untouched_rows(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let w = |records: Value, ctx: WriteContext| save_as(&env, &c, records, ctx);
    w(
        json!([{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}, {"id": "gone"}]),
        job("s1", 1),
    )
    .await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "M",
        json!([{"id": "gone"}]),
        &job("s1", 1),
        &mut Merging::Override,
    )
    .await;
    w(json!([{"id": "other"}]), job("s2", 1)).await;
    w(json!([{"id": "manual"}]), WriteContext::default()).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    // Job 2 saves a (changed) and b (unchanged: only its stamp moves), in
    // one chunk; then d in a chunk where nothing changed (only its stamp
    // is written).
    let ch = w(json!([{"id": "a", "v": 2}, {"id": "b"}]), job("s1", 2)).await;
    assert_eq!((ch.updated, ch.unchanged), (1, 1));
    let ch = w(json!([{"id": "d"}]), job("s1", 2)).await;
    assert_eq!((ch.updated, ch.unchanged), (0, 1));
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 6);

    let n = env.delete_stale(&c, "M", "s1", 2).await.unwrap();
    assert_eq!(n, 1, "only c: untouched by job 2, not already deleted");
    let rows = env
        .get_by_ids(
            &c,
            "M",
            &[
                "a".into(),
                "b".into(),
                "c".into(),
                "d".into(),
                "other".into(),
                "manual".into(),
            ],
        )
        .await
        .unwrap();
    let state: Vec<_> = rows
        .iter()
        .map(|r| (r.external_id.as_str(), r.last_action()))
        .collect();
    assert_eq!(
        state,
        [
            ("a", "UPDATED"),
            ("b", "ADDED"),
            ("c", "DELETED"),
            ("d", "ADDED"),
            ("other", "ADDED"),
            ("manual", "ADDED")
        ]
    );
    let stale = &rows[2];
    assert_eq!(stale.deleted_at, Some(stale.updated_at));
    assert_eq!(stale.json["id"], "c", "the body is kept");
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 5);
    assert_eq!(env.delete_stale(&c, "M", "s1", 2).await.unwrap(), 0);
    // The deleted row is found after the others in paging order.
    let all = page_all(&env, &c, "M", RecordsQuery::default()).await;
    assert_ordered_unique(&all);
    assert_eq!(all.last().unwrap().external_id, "c");
}

/// `track_deletes` writes its deletions a batch at a time, and a client
/// may page by cursor between two batches: each batch lands after every
/// record of the batches before it, so a cursor taken after one batch
/// finds the later ones after it (one time for all put them in id order,
/// some behind such a cursor).
pub async fn track_deletes_lands_each_batch_after_the_ones_before(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let n = 2_500;
    let mut start = 0;
    while start < n {
        let end = (start + rt::CHUNK_SIZE).min(n);
        let ids: Vec<Value> = (start..end)
            .map(|i| json!({"id": format!("r{i:05}")}))
            .collect();
        save_as(&env, &c, Value::Array(ids), job("s1", 1)).await;
        start = end;
    }
    assert_eq!(env.delete_stale(&c, "M", "s1", 2).await.unwrap(), 2_500);
    let all = page_all(&env, &c, "M", RecordsQuery::default()).await;
    assert_ordered_unique(&all);
    assert_eq!(all.len(), n);
    assert!(all.iter().all(|r| r.deleted_at.is_some()));
    // The batches go in the order of the stamps, by id: a thousand each.
    let batch_of = |r: &StoredRecord| r.external_id[1..].parse::<usize>().unwrap() / 1_000;
    for pair in all.windows(2) {
        assert!(
            batch_of(&pair[0]) <= batch_of(&pair[1]),
            "{} (batch {}) comes before {} (batch {})",
            pair[0].external_id,
            batch_of(&pair[0]),
            pair[1].external_id,
            batch_of(&pair[1])
        );
    }
}

/// A page is read in several scans of the paging index, with no snapshot
/// across them: a record a sync moves to the end of the order meanwhile
/// is still in the page once, at its new place.
pub async fn a_page_holds_each_record_once_while_a_sync_writes(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save_many(&env, &c, "Issue", 0, 3_000, 1).await;
    let writing = std::sync::atomic::AtomicBool::new(true);
    let writer = async {
        for version in 2..8 {
            save_many(&env, &c, "Issue", 0, 3_000, version).await;
        }
        writing.store(false, std::sync::atomic::Ordering::SeqCst);
    };
    let reader = async {
        let query = RecordsQuery {
            limit: 10_000,
            ..Default::default()
        };
        let mut pages = 0;
        while writing.load(std::sync::atomic::Ordering::SeqCst) || pages == 0 {
            let page = env.records_page(&c, "Issue", &query).await.unwrap();
            let ids: HashSet<&str> = page
                .records
                .iter()
                .map(|r| r.external_id.as_str())
                .collect();
            assert_eq!(ids.len(), page.records.len(), "a record is in a page twice");
            assert_eq!(ids.len(), 3_000);
            assert_ordered_unique(&page.records);
            pages += 1;
            tokio::task::yield_now().await;
        }
        pages
    };
    let ((), pages) = tokio::join!(writer, reader);
    assert!(pages > 0);
}

pub async fn a_job_run_notes_what_it_saw_unchanged(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let w = |records: Value, ctx: WriteContext| save_as(&env, &c, records, ctx);
    let ids = |n: std::ops::Range<usize>| {
        json!(
            n.map(|i| json!({"id": format!("r{i}")}))
                .collect::<Vec<_>>()
        )
    };
    w(ids(0..1500), run("s1", 1)).await;
    assert_eq!(seen_notes(&env, &c, "M").await, 0);
    // Job 2 sees r0..r1200 unchanged: a chunk of 1,000 and one of 200.
    let ch = w(ids(0..1000), run("s1", 2)).await;
    assert_eq!(ch.unchanged, 1000);
    let ch = w(ids(1000..1200), run("s1", 2)).await;
    assert_eq!(ch.unchanged, 200);
    assert_eq!(seen_notes(&env, &c, "M").await, 2, "a note per chunk");
    // Their stamps wait for `track_deletes`.
    let r5 = env.get_by_ids(&c, "M", &["r5".into()]).await.unwrap();
    assert_eq!(r5[0].job_id, Some(1));
    assert_eq!(env.delete_stale(&c, "M", "s1", 2).await.unwrap(), 300);
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 1200);
    let r5 = env.get_by_ids(&c, "M", &["r5".into()]).await.unwrap();
    assert_eq!((r5[0].job_id, r5[0].last_action()), (Some(2), "ADDED"));
    assert_eq!(seen_notes(&env, &c, "M").await, 0, "settled notes are gone");

    // A run that tracks no deletes forgets its notes at its end; they do
    // not keep a later job from deleting what that job did not see.
    w(ids(0..1000), run("s1", 3)).await;
    w(ids(1000..1200), run("s1", 3)).await;
    assert_eq!(seen_notes(&env, &c, "M").await, 2);
    env.forget_seen(&c, "M", "s1").await.unwrap();
    assert_eq!(seen_notes(&env, &c, "M").await, 0);
    w(ids(0..10), run("s1", 4)).await;
    assert_eq!(env.delete_stale(&c, "M", "s1", 4).await.unwrap(), 1190);
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 10);
    // Notes go with the records.
    w(ids(0..10), run("s1", 5)).await;
    assert_eq!(seen_notes(&env, &c, "M").await, 1);
    env.clear_records(&c, "M").await.unwrap();
    assert_eq!(seen_notes(&env, &c, "M").await, 0);
}

/// A `trackDeletesStart` an earlier run made (a sync resuming from its
/// checkpoint): its end deletes only what no run since the start saw, the
/// notes of a run that did not finish (a crash) or whose notes were kept
/// (`keep_seen`, a failed run) included.
pub async fn a_start_kept_across_runs_keeps_what_each_run_saw(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let w = |records: Value, ctx: WriteContext| save_as(&env, &c, records, ctx);
    let ids = |n: std::ops::Range<usize>| {
        json!(
            n.map(|i| json!({"id": format!("r{i}")}))
                .collect::<Vec<_>>()
        )
    };
    w(ids(0..100), run("s1", 1)).await;
    // Job 2 starts, sees r0..r29 unchanged and fails: its notes are kept
    // (stamped); job 3 sees r30..r49 and is cut short (its notes stay);
    // job 4 sees r50..r59 and ends.
    w(ids(0..30), run("s1", 2)).await;
    env.keep_seen(&c, "M", "s1").await.unwrap();
    assert_eq!(seen_notes(&env, &c, "M").await, 0);
    assert_eq!(stamps_of(&env, &c, &["r0"]).await[0].1, Some(2));
    w(ids(30..50), run("s1", 3)).await;
    w(ids(50..60), run("s1", 4)).await;
    assert_eq!(env.delete_stale(&c, "M", "s1", 2).await.unwrap(), 40);
    let alive: Vec<String> = page_all(&env, &c, "M", RecordsQuery::default())
        .await
        .into_iter()
        .filter(|r| r.deleted_at.is_none())
        .map(|r| r.external_id)
        .collect();
    assert_eq!(alive.len(), 60);
    assert!(
        alive
            .iter()
            .all(|id| id[1..].parse::<usize>().unwrap() < 60)
    );
    // A stamp never goes back: an older job's note does not lower it.
    w(ids(0..1), run("s1", 6)).await;
    w(json!([{"id": "r0", "v": 2}]), run("s1", 7)).await;
    assert_eq!(env.delete_stale(&c, "M", "s1", 7).await.unwrap(), 59);
    assert_eq!(stamps_of(&env, &c, &["r0"]).await[0].1, Some(7));
}

pub async fn a_job_run_takes_over_what_another_sync_stamped(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let w = |records: Value, ctx: WriteContext| save_as(&env, &c, records, ctx);
    w(json!([{"id": "x"}, {"id": "y"}, {"id": "z"}]), run("s2", 1)).await;
    w(json!([{"id": "mine"}]), run("s1", 1)).await;
    // s1 sees x and y unchanged (and its own record): they are s1's now,
    // as a stamp would have made them.
    let ch = w(
        json!([{"id": "x"}, {"id": "y"}, {"id": "mine"}]),
        run("s1", 2),
    )
    .await;
    assert_eq!(ch.unchanged, 3);
    assert_eq!(
        env.delete_stale(&c, "M", "s2", 2).await.unwrap(),
        1,
        "only z is s2's"
    );
    // y is saved by s2 after s1 saw it: it is s2's again, and s1's
    // `track_deletes` leaves it.
    w(json!([{"id": "y", "v": 2}]), job("s2", 3)).await;
    assert_eq!(env.delete_stale(&c, "M", "s1", 2).await.unwrap(), 0);
    assert_eq!(
        stamps_of(&env, &c, &["x", "y", "mine"]).await,
        [
            (Some("s1".into()), Some(2)),
            (Some("s2".into()), Some(3)),
            (Some("s1".into()), Some(2))
        ]
    );
    // s1's next job sees none of them: x and mine go, y is s2's.
    w(json!([{"id": "new"}]), run("s1", 3)).await;
    assert_eq!(env.delete_stale(&c, "M", "s1", 3).await.unwrap(), 2);
    let alive: Vec<String> = page_all(&env, &c, "M", RecordsQuery::default())
        .await
        .into_iter()
        .filter(|r| r.deleted_at.is_none())
        .map(|r| r.external_id)
        .collect();
    assert_eq!(alive, ["y", "new"]);
}

pub async fn a_scopes_count_row_knows_who_stamps_it(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let w = |records: Value, ctx: WriteContext| save_as(&env, &c, records, ctx);
    let count_key = crate::keys::connection(env.id(), "github", "c1").tail("M");
    let count_row = || async {
        env.backend()
            .get(Table::RecordCounts, &count_key)
            .await
            .unwrap()
            .unwrap()
    };
    w(json!([{"id": "a"}, {"id": "b"}]), run("s1", 1)).await;
    // A webhook script of s2 saves b unchanged: s2 stamps it, and the
    // scope's count row learns that s2 stamps some of its records.
    let ch = w(json!([{"id": "b"}]), job("s2", 1)).await;
    assert_eq!(ch.unchanged, 1);
    // So s1's next run, seeing both unchanged, reads their stamps and
    // takes b over (with the row saying only s1 it would not).
    w(json!([{"id": "a"}, {"id": "b"}]), run("s1", 2)).await;
    assert_eq!(env.delete_stale(&c, "M", "s2", 2).await.unwrap(), 0);
    assert_eq!(
        stamps_of(&env, &c, &["b"]).await[0].0.as_deref(),
        Some("s1")
    );

    // A count row written before owners were kept (the count alone)
    // leaves them unknown: a job run reads the stamps again.
    let legacy = count_row().await[..8].to_vec();
    env.backend()
        .apply(vec![Op::Put {
            table: Table::RecordCounts,
            key: count_key.clone(),
            value: legacy.clone(),
        }])
        .await
        .unwrap();
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 2);
    w(json!([{"id": "a"}]), job("s3", 1)).await;
    assert_eq!(count_row().await, legacy, "unknown owners stay unknown");
    w(json!([{"id": "a"}, {"id": "b"}]), run("s1", 3)).await;
    assert_eq!(env.delete_stale(&c, "M", "s3", 2).await.unwrap(), 0);
    // `track_deletes` reads every stamp, and keeps the exact list.
    assert_eq!(env.delete_stale(&c, "M", "s1", 3).await.unwrap(), 0);
    assert!(count_row().await.len() > 8);
    assert_eq!(
        stamps_of(&env, &c, &["a", "b"]).await,
        [(Some("s1".into()), Some(3)), (Some("s1".into()), Some(3))]
    );
}

pub async fn clear_records_counts_and_models(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    assert_eq!(env.record_count(&c, "A").await.unwrap(), 0);
    assert!(env.models(&c).await.unwrap().is_empty());
    save_many(&env, &c, "A", 0, 1_500, 1).await;
    save(&env, &c, "B", json!([{"id": 1}])).await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "A",
        json!([{"id": "r00001"}, {"id": "unknown"}]),
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await;
    assert_eq!(env.record_count(&c, "A").await.unwrap(), 1_499);
    assert_eq!(env.models(&c).await.unwrap(), ["A", "B"]);

    assert_eq!(
        env.clear_records(&c, "A").await.unwrap(),
        1_501,
        "every row, deleted ones too"
    );
    assert_eq!(env.record_count(&c, "A").await.unwrap(), 0);
    assert_eq!(env.models(&c).await.unwrap(), ["B"]);
    assert!(
        env.records_page(&c, "A", &RecordsQuery::default())
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert_eq!(env.newest_position(&c, "A").await.unwrap(), None);
    assert_eq!(env.record_count(&c, "B").await.unwrap(), 1);
    // Saved again, they are new.
    let ch = save(&env, &c, "A", records(0, 3, 1)).await;
    assert_eq!(ch.added, 3);
    assert_eq!(env.clear_records(&c, "Nope").await.unwrap(), 0);
}

pub async fn pruning_empties_payloads_up_to_a_cursor(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save(&env, &c, "M", records(0, 300, 1)).await;
    let before = page_all(&env, &c, "M", RecordsQuery::default()).await;
    let until = before[199].position();
    let pruned = env.prune_records(&c, "M", &until, 150).await.unwrap();
    assert_eq!((pruned.count, pruned.has_more), (150, true));
    let pruned = env.prune_records(&c, "M", &until, 150).await.unwrap();
    assert_eq!((pruned.count, pruned.has_more), (50, false));
    let pruned = env.prune_records(&c, "M", &until, 150).await.unwrap();
    assert_eq!((pruned.count, pruned.has_more), (0, false));
    // Exactly as many as were left: nothing more.
    let last = before[249].position();
    let pruned = env.prune_records(&c, "M", &last, 50).await.unwrap();
    assert_eq!((pruned.count, pruned.has_more), (50, false));

    drop(env);
    drop(store);
    let store = open(b, &master).await;
    let env = dev(&store);
    let after = page_all(&env, &c, "M", RecordsQuery::default()).await;
    assert_eq!(after.len(), 300);
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 300);
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert_eq!(
            (a.position(), &a.external_id, a.created_at),
            (b.position(), &b.external_id, b.created_at),
            "pruning moves nothing"
        );
        let view = a.to_view();
        if i < 250 {
            assert!(a.json.is_empty() && a.pruned_at.is_some(), "{i}");
            assert_eq!(view["id"], json!(a.external_id));
            assert!(view.get("pad").is_none());
            assert!(view["_nango_metadata"]["pruned_at"].is_string());
        } else {
            assert_eq!(a.json, b.json);
            assert_eq!(view["_nango_metadata"]["pruned_at"], Value::Null);
        }
    }
    // The spliced view of a pruned record is the decoded one.
    let raw = env
        .records_page_raw(&c, "M", &RecordsQuery::default())
        .await
        .unwrap();
    let mut spliced = Vec::new();
    raw.records[0].write_view(&mut spliced).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&spliced).unwrap(),
        after[0].to_view()
    );

    // Saved again unchanged, a pruned record gets its payload back and
    // keeps its place; changed, it is updated; merged into, it is the
    // merge.
    let first = &before[0];
    let changed = &before[1];
    let merged = &before[2];
    let ch = save(&env, &c, "M", json!([first.json])).await;
    assert_eq!((ch.unchanged, ch.updated), (1, 0));
    let mut edited = changed.json.clone();
    edited.insert("v".into(), json!(2));
    let ch = save(&env, &c, "M", json!([edited])).await;
    assert_eq!(ch.updated, 1);
    write(
        &env,
        WriteKind::Update,
        &c,
        "M",
        json!([{"id": merged.external_id, "note": "n"}]),
        &WriteContext::default(),
        &mut Merging::Override,
    )
    .await;
    let ids = [
        first.external_id.clone(),
        changed.external_id.clone(),
        merged.external_id.clone(),
    ];
    let got = env.records_by_ids(&c, "M", &ids).await.unwrap();
    assert_eq!(got[0].json, first.json);
    assert_eq!(got[0].position(), first.position());
    assert_eq!(got[0].pruned_at, None);
    assert_eq!(got[1].json, edited);
    assert_eq!(got[1].pruned_at, None);
    assert_eq!(
        Value::Object(got[2].json.clone()),
        json!({"id": merged.external_id, "note": "n"})
    );
    assert_eq!(got[2].pruned_at, None);
    // Pruning again takes only what is whole.
    let pruned = env.prune_records(&c, "M", &last, 1000).await.unwrap();
    assert_eq!((pruned.count, pruned.has_more), (1, false));
}

pub async fn a_refresh_replaces_only_the_credentials_it_read(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let read = connection("github", "c", "old-token");
    env.put_connection(&read).await.unwrap();
    let new = |token: &str| -> sluice_runtime::connection::Credentials {
        serde_json::from_value(
            json!({"type": "OAUTH2", "access_token": token, "refresh_token": "r2"}),
        )
        .unwrap()
    };

    // Metadata written while the provider answered stays; the new token
    // is stored.
    env.put_connection(&Connection {
        metadata: json!({"team": "b"}),
        ..read.clone()
    })
    .await
    .unwrap();
    let now = env
        .refresh_credentials("github", "c", &read.credentials, new("refreshed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.credentials, new("refreshed"));
    assert_eq!(now.metadata, json!({"team": "b"}));
    assert_eq!(
        env.connection("github", "c").await.unwrap(),
        Some(now.clone())
    );

    // Credentials imported again meanwhile are not overwritten by a
    // refresh of the ones before.
    env.put_connection(&connection("github", "c", "imported"))
        .await
        .unwrap();
    let kept = env
        .refresh_credentials("github", "c", &now.credentials, new("stale"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.credentials.field("access_token"), Some("imported"));

    // A connection deleted meanwhile is not made again.
    assert!(env.delete_connection("github", "c").await.unwrap());
    let gone = env
        .refresh_credentials("github", "c", &kept.credentials, new("late"))
        .await
        .unwrap();
    assert_eq!(gone, None);
    assert_eq!(env.connection("github", "c").await.unwrap(), None);
}

pub async fn delete_connection_removes_its_records_and_docs(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let (c, neighbour) = (conn("github", "c"), conn("github", "c2"));
    for x in [&c, &neighbour] {
        env.put_connection(&connection(&x.provider_config_key, &x.connection_id, "t"))
            .await
            .unwrap();
        save(&env, x, "A", records(0, 10, 1)).await;
        save(&env, x, "B", records(0, 5, 1)).await;
        env.put_connection_doc(x, "state", "s", &json!(1))
            .await
            .unwrap();
        env.set_checkpoint(x, "issues", Some(json!({"page": 3})))
            .await
            .unwrap();
        // A checkpoint where earlier versions kept them (the environment's
        // documents) is read until the connection writes its own.
        let legacy = format!("github\u{1f}{}\u{1f}prs", x.connection_id);
        env.put_doc("checkpoints", &legacy, &json!({"old": true}))
            .await
            .unwrap();
        assert_eq!(
            env.checkpoint(x, "prs").await.unwrap(),
            Some(json!({"old": true}))
        );
    }
    env.set_checkpoint(&neighbour, "prs", Some(json!({"new": true})))
        .await
        .unwrap();
    let legacy = "github\u{1f}c2\u{1f}prs";
    assert_eq!(env.doc::<Value>("checkpoints", legacy).await.unwrap(), None);
    assert_eq!(
        env.checkpoint(&neighbour, "prs").await.unwrap(),
        Some(json!({"new": true}))
    );
    env.put_doc("state", "s", &json!("env-wide")).await.unwrap();
    assert!(env.delete_connection("github", "c").await.unwrap());
    // A connection made again under the same id starts without the old
    // one's checkpoints.
    assert_eq!(env.checkpoint(&c, "issues").await.unwrap(), None);
    assert_eq!(env.checkpoint(&c, "prs").await.unwrap(), None);
    assert_eq!(
        env.checkpoint(&neighbour, "issues").await.unwrap(),
        Some(json!({"page": 3}))
    );
    // Left in the earlier place by an earlier version's deletion: a new
    // connection of the id clears them before it can read them.
    env.put_doc(
        "checkpoints",
        "github\u{1f}c\u{1f}issues",
        &json!({"stale": 1}),
    )
    .await
    .unwrap();
    assert_eq!(
        env.checkpoint(&c, "issues").await.unwrap(),
        Some(json!({"stale": 1}))
    );
    env.delete_legacy_checkpoints(&c).await.unwrap();
    assert_eq!(env.checkpoint(&c, "issues").await.unwrap(), None);
    assert_eq!(
        env.checkpoint(&neighbour, "prs").await.unwrap(),
        Some(json!({"new": true}))
    );
    assert!(env.connection("github", "c").await.unwrap().is_none());
    assert!(env.models(&c).await.unwrap().is_empty());
    assert!(
        env.records_page(&c, "A", &RecordsQuery::default())
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert!(
        env.get_by_ids(&c, "B", &["r00001".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        env.connection_doc::<Value>(&c, "state", "s")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.record_count(&neighbour, "A").await.unwrap(), 10);
    assert_eq!(env.models(&neighbour).await.unwrap(), ["A", "B"]);
    assert!(
        env.connection_doc::<Value>(&neighbour, "state", "s")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        env.doc::<Value>("state", "s").await.unwrap(),
        Some(json!("env-wide"))
    );
    // Nothing of `c` is left in any record table.
    let backend = b.open_shared(&store);
    let prefix = keys::connection(env.id(), "github", "c").into_bytes();
    for (table, key, _) in raw_dump(backend.as_ref()).await {
        assert!(
            !key.starts_with(&prefix),
            "{table:?} still holds a key of the deleted connection"
        );
    }
    assert!(!env.delete_connection("github", "c").await.unwrap());
}

pub async fn concurrent_writers_of_one_scope(b: &Reopen) {
    let (store, _) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    let mut tasks = Vec::new();
    for t in 0..8usize {
        for model in ["Same", if t % 2 == 0 { "Even" } else { "Odd" }] {
            let env = env.clone();
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..3u32 {
                    // Overlapping ids across tasks: counts must still add up.
                    save(&env, &c, model, records(t * 40, t * 40 + 60, round)).await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let same = page_all(&env, &c, "Same", RecordsQuery::default()).await;
    assert_eq!(same.len(), 7 * 40 + 60);
    assert_ordered_unique(&same);
    assert_eq!(env.record_count(&c, "Same").await.unwrap(), 340);
    // Even tasks write 0..60, 80..140, …: four disjoint ranges of 60.
    assert_eq!(env.record_count(&c, "Even").await.unwrap(), 240);
    assert_eq!(env.record_count(&c, "Odd").await.unwrap(), 240);
}

// ---------------------------------------------------------------- keys, persistence

pub async fn data_key_rotation_keeps_secrets_readable(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let env = dev(&store);
    for i in 0..30 {
        env.put_connection(&connection("github", &format!("c{i}"), &format!("tok-{i}")))
            .await
            .unwrap();
    }
    env.put_integration(&integration("github", "client-secret-xyz"))
        .await
        .unwrap();
    env.set_variables(vec![("K".into(), "v".into())])
        .await
        .unwrap();
    env.set_secret("webhook-signing", "whsec_abc")
        .await
        .unwrap();
    let backend = b.open_shared(&store);
    let before = raw_dump(backend.as_ref()).await;
    assert_eq!(env.data_key_id().await, 1);

    assert_eq!(env.rotate_data_key().await.unwrap(), 2);
    assert_eq!(env.data_key_id().await, 2);
    assert_eq!(
        env.connection("github", "c7")
            .await
            .unwrap()
            .unwrap()
            .credentials
            .token(),
        Some("tok-7")
    );
    let after = raw_dump(backend.as_ref()).await;
    let sealed_with = |table: Table, value: &[u8]| -> Vec<Option<u32>> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        match table {
            Table::Variables => vec![crate::crypto::sealed_key_id(value)],
            Table::Connections => {
                let row: Value = serde_json::from_slice(value).unwrap();
                let sealed = b64.decode(row["credentials"].as_str().unwrap()).unwrap();
                vec![crate::crypto::sealed_key_id(&sealed)]
            }
            _ => {
                let row: Value = serde_json::from_slice(value).unwrap();
                ["oauth_client_secret", "webhook_secret"]
                    .iter()
                    .map(|f| {
                        crate::crypto::sealed_key_id(&b64.decode(row[f].as_str().unwrap()).unwrap())
                    })
                    .collect()
            }
        }
    };
    let mut resealed = 0;
    for (table, key, value) in &after {
        if matches!(
            table,
            Table::Connections | Table::Integrations | Table::Variables
        ) && key.starts_with(&keys::env(env.id()).into_bytes())
        {
            let old = before
                .iter()
                .find(|(t, k, _)| t == table && k == key)
                .unwrap();
            assert!(sealed_with(*table, &old.2).iter().all(|id| *id == Some(1)));
            assert!(
                sealed_with(*table, value).iter().all(|id| *id == Some(2)),
                "{table:?} re-sealed"
            );
            resealed += 1;
        }
    }
    // 30 connections, the integration, the variables, two secrets (the
    // environment's own key, sealed at creation, and one set above).
    assert_eq!(resealed, 34);
    assert_eq!(
        env.secret("webhook-signing").await.unwrap().as_deref(),
        Some("whsec_abc")
    );
    assert_eq!(
        prod(&store)
            .secret(crate::SECRET_KEY)
            .await
            .unwrap()
            .as_deref(),
        Some("prod-secret-given")
    );
    assert_eq!(env.secret("nothing").await.unwrap(), None);
    // Only the new key is kept.
    let row = backend
        .get(Table::Environments, &keys::env(env.id()).into_bytes())
        .await
        .unwrap()
        .unwrap();
    let row: Value = serde_json::from_slice(&row).unwrap();
    assert_eq!(row["data_keys"].as_array().unwrap().len(), 1);
    // Prod is untouched.
    assert_eq!(prod(&store).data_key_id().await, 1);
    drop((store, env, backend));

    let store = open(b, &master).await;
    let env = dev(&store);
    assert_eq!(env.data_key_id().await, 2);
    assert_eq!(
        env.integration("github")
            .await
            .unwrap()
            .unwrap()
            .oauth_client_secret
            .as_deref(),
        Some("client-secret-xyz")
    );
    assert_eq!(
        env.variables().await.unwrap(),
        vec![("K".to_string(), "v".to_string())]
    );
    assert_eq!(env.connections(None).await.unwrap().len(), 30);
}

pub async fn master_key_rewrap(b: &Reopen) {
    let (store, old) = fresh(b).await;
    dev(&store)
        .put_connection(&connection("github", "c1", "tok-1"))
        .await
        .unwrap();
    let new = MasterKey::generate();
    store.rewrap(new.clone()).await.unwrap();
    // The running store goes on (and seals with the same data keys).
    dev(&store)
        .put_connection(&connection("github", "c2", "tok-2"))
        .await
        .unwrap();
    dev(&store).rotate_data_key().await.unwrap();
    drop(store);
    assert!(matches!(
        Store::open(b.open(), old, &initial()).await,
        Err(StoreError::WrongMasterKey { .. })
    ));
    let store = open(b, &new).await;
    assert_eq!(dev(&store).connections(None).await.unwrap().len(), 2);
    assert_eq!(
        dev(&store)
            .connection("github", "c2")
            .await
            .unwrap()
            .unwrap()
            .credentials
            .token(),
        Some("tok-2")
    );
}

pub async fn reopen_keeps_everything(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    env.put_integration(&integration("github", "s"))
        .await
        .unwrap();
    env.put_connection(&connection("github", "c1", "tok"))
        .await
        .unwrap();
    env.set_variables(vec![("A".into(), "1".into())])
        .await
        .unwrap();
    env.put_doc("d", "k", &json!({"x": 1})).await.unwrap();
    let hash = store.put_blob(b"blob").await.unwrap();
    save_many(&env, &c, "M", 0, 1_200, 1).await;
    write(
        &env,
        WriteKind::Save,
        &c,
        "M",
        records(0, 10, 2),
        &job("s", 7),
        &mut Merging::Override,
    )
    .await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "M",
        json!([{"id": "r00500"}]),
        &job("s", 7),
        &mut Merging::Override,
    )
    .await;
    let before = page_all(&env, &c, "M", RecordsQuery::default()).await;
    let id = env.id();
    drop((store, env));

    let (store, created) = Store::open(b.open(), master, &initial()).await.unwrap();
    assert!(created.is_empty());
    let env = dev(&store);
    assert_eq!(env.id(), id);
    assert!(env.integration("github").await.unwrap().is_some());
    assert_eq!(
        env.connection("github", "c1")
            .await
            .unwrap()
            .unwrap()
            .credentials
            .token(),
        Some("tok")
    );
    assert_eq!(env.variables().await.unwrap().len(), 1);
    assert_eq!(
        env.doc::<Value>("d", "k").await.unwrap(),
        Some(json!({"x": 1}))
    );
    assert_eq!(
        store.blob(&hash).await.unwrap().as_deref(),
        Some(&b"blob"[..])
    );
    let after = page_all(&env, &c, "M", RecordsQuery::default()).await;
    assert_eq!(after, before);
    assert_eq!(env.record_count(&c, "M").await.unwrap(), 1_199);
    assert_eq!(after.iter().filter(|r| r.job_id == Some(7)).count(), 11);
    // Writes go on after the last position.
    save(&env, &c, "M", json!([{"id": "later"}])).await;
    let newest = env.newest_position(&c, "M").await.unwrap().unwrap();
    assert!(newest > before.last().unwrap().position());
}

/// `copy_store` onto this backend and off it: everything reads back as
/// it did (environments, keys, sealed credentials, variables, documents,
/// blobs, records and their paging, stamps and counts) under the same
/// master key; a destination with rows, a source that is no store, and a
/// copy cut short (environments, no format marker) are refused.
/// A snapshot reads the store as it was when taken, whatever is written
/// meanwhile (a backend may hold those writes back until it is dropped),
/// and takes no write itself.
pub async fn a_snapshot_sees_one_moment(b: &Reopen) {
    let backend = b.open();
    let put = |k: &str, v: &str| Op::Put {
        table: Table::Docs,
        key: format!("snap/{k}").into_bytes(),
        value: v.as_bytes().to_vec(),
    };
    backend
        .apply(vec![put("a", "1"), put("b", "1")])
        .await
        .unwrap();
    let Some(snapshot) = backend.snapshot().await.unwrap() else {
        // This backend's store is backed up by its own tools.
        return;
    };
    let writer = backend.clone();
    let write = tokio::spawn(async move {
        writer
            .apply(vec![
                put("a", "2"),
                Op::Delete {
                    table: Table::Docs,
                    key: b"snap/b".to_vec(),
                },
                put("c", "1"),
            ])
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let seen = snapshot
        .scan(Table::Docs, b"snap/", None, 10, false)
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![
            (b"snap/a".to_vec(), b"1".to_vec()),
            (b"snap/b".to_vec(), b"1".to_vec())
        ]
    );
    assert_eq!(snapshot.get(Table::Docs, b"snap/c").await.unwrap(), None);
    assert_eq!(
        snapshot
            .get_many(Table::Docs, &[b"snap/a".to_vec(), b"snap/c".to_vec()])
            .await
            .unwrap(),
        vec![Some(b"1".to_vec()), None]
    );
    let refused = snapshot.apply(vec![put("d", "1")]).await.unwrap_err();
    assert!(refused.to_string().contains("read only"), "{refused}");
    drop(snapshot);
    tokio::time::timeout(std::time::Duration::from_secs(10), write)
        .await
        .expect("a write held back by a snapshot did not land once it was dropped")
        .unwrap()
        .unwrap();
    let now = backend
        .scan(Table::Docs, b"snap/", None, 10, false)
        .await
        .unwrap();
    assert_eq!(
        now,
        vec![
            (b"snap/a".to_vec(), b"2".to_vec()),
            (b"snap/c".to_vec(), b"1".to_vec())
        ]
    );
    let again = backend.snapshot().await.unwrap().unwrap();
    assert_eq!(
        again.get(Table::Docs, b"snap/a").await.unwrap(),
        Some(b"2".to_vec())
    );
}

pub async fn a_store_is_copied_whole(b: &Reopen) {
    let source = Reopen::memory(MemoryBackend::new());
    let (store, master) = fresh(&source).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    env.put_integration(&integration("github", "s"))
        .await
        .unwrap();
    env.put_connection(&connection("github", "c1", "tok"))
        .await
        .unwrap();
    env.set_variables(vec![("A".into(), "1".into())])
        .await
        .unwrap();
    env.put_doc("d", "k", &json!({"x": 1})).await.unwrap();
    let hash = store.put_blob(&vec![7u8; 3 << 20]).await.unwrap();
    save_many(&env, &c, "M", 0, 2_500, 1).await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "M",
        json!([{"id": "r00500"}]),
        &job("s", 7),
        &mut Merging::Override,
    )
    .await;
    let before = page_all(&env, &c, "M", RecordsQuery::default()).await;
    let id = env.id();
    drop((store, env));

    let mut seen = Vec::new();
    let report = crate::copy_store(&*source.open(), &*b.open(), |t, n| seen.push((t, n)))
        .await
        .unwrap();
    assert!(report.rows() > 2_500, "{report:?}");
    assert!(report.bytes() > 3 << 20, "{report:?}");
    assert!(
        seen.iter()
            .any(|(t, n)| *t == Table::Records && *n == 2_500)
    );

    let (before, c, hash) = (&before, &c, &hash);
    let check = |store: Store| async move {
        let env = dev(&store);
        assert_eq!(env.id(), id);
        assert!(store.environment_by_key("prod-secret-given").is_some());
        assert_eq!(
            env.connection("github", "c1")
                .await
                .unwrap()
                .unwrap()
                .credentials
                .token(),
            Some("tok")
        );
        assert_eq!(env.variables().await.unwrap().len(), 1);
        assert_eq!(
            env.doc::<Value>("d", "k").await.unwrap(),
            Some(json!({"x": 1}))
        );
        assert_eq!(
            store.blob(hash).await.unwrap().map(|b| b.len()),
            Some(3 << 20)
        );
        assert_eq!(
            &page_all(&env, c, "M", RecordsQuery::default()).await,
            before
        );
        assert_eq!(env.record_count(c, "M").await.unwrap(), 2_499);
    };
    let (copied, created) = Store::open(b.open(), master.clone(), &initial())
        .await
        .unwrap();
    assert!(created.is_empty());
    check(copied).await;

    // Off this backend, onto another.
    let back = Reopen::memory(MemoryBackend::new());
    crate::copy_store(&*b.open(), &*back.open(), |_, _| {})
        .await
        .unwrap();
    check(open(&back, &master).await).await;

    // Onto a store: refused before anything is written (it is a whole
    // store, not one to empty), and it opens as it did.
    let err = crate::copy_store(&*source.open(), &*b.open(), |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, crate::CopyError::NotEmpty { .. }) && !err.wrote(),
        "{err:?}"
    );
    let said = err.to_string();
    assert!(said.contains("the destination is not empty"), "{said}");
    assert!(said.contains("nothing was written to it"), "{said}");
    check(open(b, &master).await).await;
    let empty = Reopen::memory(MemoryBackend::new());
    let err = crate::copy_store(&*empty.open(), &*back.open(), |_, _| {})
        .await
        .unwrap_err();
    assert!(!err.wrote(), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("holds no sluice store"), "{err}");
    // A destination that fails once written to: the copy stopped after
    // writing, which the error says.
    let refusing = crate::ReadOnly::new(MemoryBackend::new(), ());
    let err = crate::copy_store(&*source.open(), &refusing, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.wrote(), "{err:?}");
    // A store a newer sluice wrote may hold tables this one would drop.
    let newer = MemoryBackend::new();
    newer
        .apply(vec![Op::Put {
            table: Table::Meta,
            key: b"format".to_vec(),
            value: b"sluice-store 99".to_vec(),
        }])
        .await
        .unwrap();
    let fresh_back = MemoryBackend::new();
    let err = crate::copy_store(&newer, &fresh_back, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("which this sluice does not know"), "{err}");

    // Cut short after the environments: refused, not taken for new.
    let cut = MemoryBackend::new();
    let rows = source
        .open()
        .scan(Table::Environments, &[], None, usize::MAX, false)
        .await
        .unwrap();
    cut.apply(
        rows.into_iter()
            .map(|(key, value)| Op::Put {
                table: Table::Environments,
                key,
                value,
            })
            .collect(),
    )
    .await
    .unwrap();
    let err = Store::open(Arc::new(cut), master, &initial())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("copy-store"), "{err}");
}

/// A store written in format 1 (each record's JSON in its row by id, its
/// paging entry holding the bare id, md5 hashes) opens migrated: every
/// record pages and looks up as before, saving it again finds it
/// unchanged, a migration cut short by a crash (some entries already
/// rewritten) finishes on the next open, and an index entry naming no
/// record is dropped.
pub async fn a_format_1_store_is_migrated(b: &Reopen) {
    let (store, master) = fresh(b).await;
    let env = dev(&store);
    let c = conn("github", "c1");
    save_many(&env, &c, "M", 0, 2_500, 1).await;
    write(
        &env,
        WriteKind::Delete,
        &c,
        "M",
        json!([{"id": "r00007"}]),
        &job("s", 3),
        &mut Merging::Override,
    )
    .await;
    let before = page_all(&env, &c, "M", RecordsQuery::default()).await;
    drop((store, env));

    // Format 1, but for the first ten entries (already migrated).
    let backend = b.open();
    let entries = backend
        .scan(Table::RecordIndex, b"", None, usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2_500);
    let mut ops = vec![Op::Put {
        table: Table::Meta,
        key: b"format".to_vec(),
        value: b"sluice-store 1".to_vec(),
    }];
    for (key, entry) in entries.iter().skip(10) {
        let (id, row) = crate::rows::decode_entry(entry).unwrap();
        let (mut header, json) = crate::rows::decode_header(row).unwrap();
        header.data_hash = "d41d8cd98f00b204e9800998ecf8427e".into();
        let full_row = header.encode_entry_with(id, json)[2 + id.len()..].to_vec();
        let row_key = [&key[..key.len() - keys::POSITION_LEN], id.as_bytes()].concat();
        ops.push(Op::Put {
            table: Table::Records,
            key: row_key,
            value: full_row,
        });
        ops.push(Op::Put {
            table: Table::RecordIndex,
            key: key.clone(),
            value: id.as_bytes().to_vec(),
        });
    }
    // And an entry naming no record, which the format-1 reader skipped.
    let mut ghost = entries[20].0.clone();
    *ghost.last_mut().unwrap() ^= 0xff;
    ops.push(Op::Put {
        table: Table::RecordIndex,
        key: ghost,
        value: b"ghost".to_vec(),
    });
    backend.apply(ops).await.unwrap();
    drop(backend);

    for _ in 0..2 {
        let store = open(b, &master).await;
        let env = dev(&store);
        assert_eq!(
            page_all(&env, &c, "M", RecordsQuery::default()).await,
            before
        );
        let ids = ["r00007".to_string(), "r02000".into(), "nope".into()];
        let found = env.records_by_ids(&c, "M", &ids).await.unwrap();
        let expected: Vec<_> = before
            .iter()
            .filter(|r| ids.contains(&r.external_id))
            .cloned()
            .collect();
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|r| expected.contains(r)), "{found:?}");
        assert_eq!(env.record_count(&c, "M").await.unwrap(), 2_499);
        let changes = save(&env, &c, "M", records(1_000, 2_000, 1)).await;
        assert_eq!((changes.unchanged, changes.updated), (1_000, 0));
    }

    // Formats 2 (before rows could be pruned) and 3 (before a connection's
    // webhook URL) read as they are and are marked format 4, so a build
    // that cannot read what this one writes refuses the store; a format
    // from a later build is refused here.
    let marker = |value: &'static [u8]| {
        vec![Op::Put {
            table: Table::Meta,
            key: b"format".to_vec(),
            value: value.to_vec(),
        }]
    };
    for older in [b"sluice-store 2", b"sluice-store 3"] {
        let backend = b.open();
        backend.apply(marker(older)).await.unwrap();
        drop(backend);
        let store = open(b, &master).await;
        assert_eq!(
            page_all(&dev(&store), &c, "M", RecordsQuery::default())
                .await
                .len(),
            before.len()
        );
        drop(store);
        let backend = b.open();
        assert_eq!(
            backend
                .get(Table::Meta, b"format")
                .await
                .unwrap()
                .as_deref(),
            Some(b"sluice-store 4".as_slice())
        );
    }
    let backend = b.open();
    backend.apply(marker(b"sluice-store 5")).await.unwrap();
    let err = Store::open(backend, master.clone(), &initial())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sluice-store 5"), "{err}");
}

/// A TCP proxy (to a database server, say) whose `cut` closes the client side of
/// every connection and leaves the server side open, as a NAT that forgot
/// the connections, or a crashed machine, leaves them: the server does not
/// know its sessions are gone.
pub struct CutProxy {
    pub port: u16,
    /// `true` cuts every connection and each new one at once; `false`
    /// lets new ones through again.
    pub cut: tokio::sync::watch::Sender<bool>,
}

impl CutProxy {
    pub async fn start(target: std::net::SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let (cut, cuts) = tokio::sync::watch::channel(false);
        let kept: Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let mut cuts = cuts.clone();
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let (mut client, mut server) = (client, server);
                    let cut = {
                        let (mut cr, mut cw) = client.split();
                        let (mut sr, mut sw) = server.split();
                        tokio::select! {
                            _ = tokio::io::copy(&mut cr, &mut sw) => false,
                            _ = tokio::io::copy(&mut sr, &mut cw) => false,
                            _ = cuts.wait_for(|cut| *cut) => true,
                        }
                    };
                    if cut {
                        kept.lock().unwrap_or_else(|e| e.into_inner()).push(server);
                    }
                    drop(client);
                });
            }
        });
        CutProxy { port, cut }
    }
}
