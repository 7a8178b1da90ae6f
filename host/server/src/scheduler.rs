//! The scheduler: one schedule per (connection, sync, variant), run on the
//! sync's interval, in this process, persisted in the sync state documents.
//!
//! - Runs fall on a grid, `anchor + k × interval`. A slot missed while a
//!   run was still going, or while the server was down, is skipped: after
//!   downtime a sync runs once, then back on its grid.
//! - A sync never runs twice at once for one connection: a schedule is
//!   either waiting in its environment's due queue or running, never both.
//!   A manual trigger during a run waits for it and then runs; a full
//!   refresh stops (cancels) the run going first.
//! - Slots are few and shared fairly: the dispatcher takes one due schedule
//!   per environment in turn, so an environment with 10,000 due syncs
//!   delays another's single due sync by at most one slot.
//! - A run a crash interrupted is found at start (its running mark) and
//!   recorded as failed; the schedule moves on. A trigger not yet run is
//!   stored before it is answered, and a start queues it again.
//!
//! The state of a schedule in memory is small (an entry keyed by its sync
//! state key, which the due queue shares); everything else is in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sluice_runtime::records::ConnectionRef;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use crate::app::{App, EnvState};
use crate::error::{ApiError, ApiResult};
use crate::runner::{
    self, RunSummary, SYNC_STATE, ScheduleState, SyncMode, SyncState, parse_sync_key, sync_key,
    update_sync_state,
};

/// What a waiter of a triggered run gets.
pub type RunResult = Result<RunSummary, ApiError>;

/// One schedule in memory.
struct Entry {
    /// Milliseconds between runs (already divided by the time scale).
    interval_ms: i64,
    anchor_ms: i64,
    /// The next slot of the grid.
    next_ms: i64,
    paused: bool,
    running: bool,
    /// A manual trigger waiting to run: its mode and when it was asked
    /// (always after the last dispatch, see `dispatched_ms`).
    queued: Option<(SyncMode, i64)>,
    /// The queued run is only the retry of a run a crash cut short, which
    /// a pause drops (as it would the schedule's next run); a trigger
    /// someone asked for runs even when paused.
    queued_resumed: bool,
    /// When the dispatcher last took it: a run takes the stored triggers
    /// asked at or before it, and a trigger asked after is later.
    dispatched_ms: i64,
    /// Where the entry sits in its environment's due queue, if it does.
    due_at: Option<i64>,
    /// Callers waiting for the next run to end.
    /// (Boxed: most schedules never have one, and an entry stays small.)
    waiters: Option<Box<Waiters>>,
    /// Dropped (its connection or sync is gone) while a run was going: it
    /// goes when the run ends, and meanwhile nothing starts it again.
    removed: bool,
}

impl Entry {
    /// The first slot of the grid strictly after `now`.
    fn slot_after(&self, now: i64) -> i64 {
        if now < self.anchor_ms {
            return self.anchor_ms;
        }
        let k = (now - self.anchor_ms) / self.interval_ms + 1;
        self.anchor_ms
            .saturating_add(k.saturating_mul(self.interval_ms))
    }

    /// Pauses or resumes it at `now`: resumed, it runs now and then on a
    /// grid from now; paused, a queued retry of a run a crash cut short
    /// goes too.
    fn set_paused(&mut self, paused: bool, now: i64) {
        if self.paused && !paused {
            self.anchor_ms = now;
            self.next_ms = now;
        }
        self.paused = paused;
        if paused && self.queued_resumed {
            self.queued = None;
            self.queued_resumed = false;
        }
    }

    /// When it should be dispatched, if at all.
    fn wants(&self) -> Option<i64> {
        if self.running || self.removed {
            return None;
        }
        match self.queued {
            Some((_, at)) => Some(at),
            None if self.paused => None,
            None => Some(self.next_ms),
        }
    }
}

type Key = Arc<str>;

/// The callers waiting for a schedule's next run.
#[derive(Default)]
struct Waiters(Vec<oneshot::Sender<RunResult>>);

#[derive(Default)]
struct State {
    entries: HashMap<(Uuid, Key), Entry>,
    /// Per environment, its waiting schedules by due time.
    due: BTreeMap<Uuid, BTreeSet<(i64, Key)>>,
    /// The environment served last.
    last_served: Option<Uuid>,
    /// Per environment, how late its last scheduled runs started (ms
    /// after their slot).
    delays: HashMap<Uuid, std::collections::VecDeque<i64>>,
    /// Per environment, its runs going.
    running: HashMap<Uuid, usize>,
    /// Most runs one environment may have going ([`crate::fair_share`] of
    /// the slots; 0 before it is set: no bound).
    share: usize,
    /// The runs going, each with its cancel (a full refresh triggered
    /// during it stops it); kept beside the entries, which stay small.
    cancels: HashMap<(Uuid, Key), tokio::sync::watch::Sender<bool>>,
}

/// The type of a run of `key` starting from `state`, as `run_sync` gives
/// it: initial without a `lastSyncDate`, incremental with one for an
/// incremental sync, full otherwise.
fn run_type(env: &EnvState, key: &str, state: &SyncState) -> runner::RunType {
    let incremental = parse_sync_key(key)
        .and_then(|(conn, sync, _)| {
            env.deployment()?
                .catalog
                .sync_config(&conn.provider_config_key, sync)
                .map(|s| s.sync_type == sluice_nango_yaml::SyncType::Incremental)
        })
        .unwrap_or(false);
    match (state.last_sync_date, incremental) {
        (None, _) => runner::RunType::Initial,
        (Some(_), true) => runner::RunType::Incremental,
        (Some(_), false) => runner::RunType::Full,
    }
}

/// The keys a trigger stores in one write, holding their state locks.
const TRIGGER_CHUNK: usize = 128;

/// Dispatch delays kept for [`Scheduler::dispatch_delays`].
const DELAYS_KEPT: usize = 100_000;

impl State {
    /// Puts the entry in its due queue where it wants to be (or takes it
    /// out).
    fn place(&mut self, env: Uuid, key: &Key) {
        let Some(entry) = self.entries.get_mut(&(env, key.clone())) else {
            return;
        };
        let want = entry.wants();
        if entry.due_at == want {
            return;
        }
        if let Some(at) = entry.due_at.take()
            && let Some(q) = self.due.get_mut(&env)
        {
            q.remove(&(at, key.clone()));
        }
        if let Some(at) = want {
            entry.due_at = Some(at);
            self.due.entry(env).or_default().insert((at, key.clone()));
        }
    }

    fn remove(&mut self, env: Uuid, key: &Key) -> Option<Entry> {
        let mut entry = self.entries.remove(&(env, key.clone()))?;
        if let Some(at) = entry.due_at.take()
            && let Some(q) = self.due.get_mut(&env)
        {
            q.remove(&(at, key.clone()));
        }
        Some(entry)
    }

    /// The next schedule to start, taking environments in turn.
    fn pick(&mut self, now: i64) -> Option<Job> {
        let after = match self.last_served {
            Some(e) => (Bound::Excluded(e), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let before = match self.last_served {
            Some(e) => (Bound::Unbounded, Bound::Included(e)),
            None => (Bound::Unbounded, Bound::Excluded(Uuid::nil())),
        };
        // An environment with its share of the slots going waits, so
        // another's runs are never all held up behind its (hanging) ones.
        let share = self.share;
        let running = &self.running;
        let env = self
            .due
            .range(after)
            .chain(self.due.range(before))
            .filter(|(env, _)| share == 0 || running.get(env).copied().unwrap_or(0) < share)
            .find(|(_, q)| q.first().is_some_and(|(at, _)| *at <= now))
            .map(|(env, _)| *env)?;
        let (due_at, key) = self.due.get_mut(&env)?.pop_first()?;
        self.last_served = Some(env);
        *self.running.entry(env).or_default() += 1;
        let entry = self.entries.get_mut(&(env, key.clone()))?;
        entry.due_at = None;
        entry.running = true;
        let mut waiters = Vec::new();
        entry.dispatched_ms = entry.queued.map_or(now, |(_, at)| at.max(now));
        let dispatched_ms = entry.dispatched_ms;
        entry.queued_resumed = false;
        let (mode, scheduled) = match entry.queued.take() {
            Some((mode, _)) => {
                // Those who asked for this run wait for this one.
                waiters = entry.waiters.take().map(|w| w.0).unwrap_or_default();
                (mode, false)
            }
            None => {
                entry.next_ms = entry.slot_after(now);
                (SyncMode::Incremental, true)
            }
        };
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        self.cancels.insert((env, key.clone()), cancel);
        if scheduled {
            let delays = self.delays.entry(env).or_default();
            if delays.len() == DELAYS_KEPT {
                delays.pop_front();
            }
            delays.push_back(now - due_at);
        }
        Some(Job {
            env,
            key,
            mode,
            scheduled,
            due_at,
            dispatched_ms,
            waiters,
            cancelled,
        })
    }

    /// The earliest due time of any waiting schedule that may start (an
    /// environment running its share waits for one of its runs to end,
    /// which wakes the dispatcher).
    fn earliest(&self) -> Option<i64> {
        self.due
            .iter()
            .filter(|(env, _)| {
                self.share == 0 || self.running.get(env).copied().unwrap_or(0) < self.share
            })
            .filter_map(|(_, q)| q.first().map(|(at, _)| *at))
            .min()
    }
}

/// A run the dispatcher started.
struct Job {
    env: Uuid,
    key: Key,
    mode: SyncMode,
    /// When the dispatcher took it.
    dispatched_ms: i64,
    /// From the grid (not a manual trigger).
    scheduled: bool,
    due_at: i64,
    /// The callers waiting for this run (a trigger's).
    waiters: Vec<oneshot::Sender<RunResult>>,
    /// `true` when a full refresh triggered during the run cancels it.
    cancelled: tokio::sync::watch::Receiver<bool>,
}

/// The schedules of every environment, and the task that runs them.
pub struct Scheduler {
    state: Mutex<State>,
    wake: Notify,
    slots: Arc<Semaphore>,
    scale: i64,
    max_run: Duration,
    max_wait_ms: i64,
    /// Triggers waiting (`wait: true`) for their runs, per environment:
    /// each holds a client connection until its runs end.
    waits: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// Most such triggers one environment may have waiting (a quarter of
    /// `--max-connections`), and all environments together (half).
    max_waits: (usize, usize),
}

/// A trigger's place among those waiting for their runs
/// ([`Scheduler::admit_wait`]); given back when dropped (the answer sent,
/// or the request dropped).
pub struct WaitTicket {
    waits: Arc<Mutex<HashMap<Uuid, usize>>>,
    env: Uuid,
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waits.get_mut(&self.env) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waits.remove(&self.env);
            }
        }
    }
}

/// Why a waiting trigger was refused: the environment's waiting triggers
/// and its bound; `everyone` when it is the bound of all environments
/// together that was reached.
pub struct WaitsFull {
    pub waiting: usize,
    pub max: usize,
    pub everyone: bool,
}

/// Of two triggers' modes, the one that does more.
fn stronger(a: SyncMode, b: SyncMode) -> SyncMode {
    let rank = |m: SyncMode| match m {
        SyncMode::Incremental => 0,
        SyncMode::FullRefresh => 1,
        SyncMode::FullRefreshAndClearCache => 2,
    };
    if rank(a) >= rank(b) { a } else { b }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// An interval in ms, at most a century: a longer one (nango.yaml and
/// zero-yaml set no bound, as the original's) would put a schedule's next
/// date past what a timestamp holds, and the sync would never run again.
fn capped_ms(d: Duration) -> i64 {
    d.min(sluice_nango_yaml::MAX_API_INTERVAL).as_millis() as i64
}

/// The interval of a `runs` value, or `invalid_runs` naming the problem.
pub fn interval(runs: &str) -> ApiResult<Duration> {
    sluice_nango_yaml::parse_interval(runs).map_err(|code| {
        ApiError::invalid_body(format!(
            "`{runs}` is not a valid frequency ({code}): use the `runs` grammar, such as `every 30min`, `every hour` or `every day`, at least 30 s"
        ))
    })
}

impl Scheduler {
    pub fn new(config: &crate::ServerConfig) -> Self {
        Self {
            state: Mutex::new(State {
                share: crate::fair_share(config.sync_slots.max(1)),
                ..State::default()
            }),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(config.sync_slots.max(1))),
            scale: i64::from(config.schedule_time_scale.max(1)),
            max_run: config.sync_max_run,
            max_wait_ms: config.sync_max_wait.as_millis().min(i64::MAX as u128) as i64,
            waits: Arc::default(),
            max_waits: (
                (config.max_connections / 4).max(1),
                (config.max_connections / 2).max(1),
            ),
        }
    }

    /// A place for a trigger that waits for its runs (`wait: true`): it
    /// holds a client connection until they end, so one environment may
    /// have at most a quarter of `--max-connections` waiting, and all
    /// together half; other requests always find connections.
    pub fn admit_wait(&self, env: &EnvState) -> Result<WaitTicket, WaitsFull> {
        let id = env.store.id();
        let (own, all) = self.max_waits;
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let mine = waits.get(&id).copied().unwrap_or(0);
        let total: usize = waits.values().sum();
        if mine >= own || total >= all {
            return Err(WaitsFull {
                waiting: mine,
                max: own,
                everyone: mine < own,
            });
        }
        *waits.entry(id).or_default() += 1;
        Ok(WaitTicket {
            waits: self.waits.clone(),
            env: id,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets go of every trigger waiting (`wait: true`) for a run that has
    /// not started: a stopping server answers them 503 `server_stopping`
    /// at once rather than holding its stop until its grace runs out. The
    /// triggers themselves are kept (stored) and run after the restart.
    pub fn release_waiters(&self) {
        for entry in self.lock().entries.values_mut() {
            entry.waiters = None;
        }
    }

    fn scaled_ms(&self, d: Duration) -> i64 {
        (capped_ms(d) / self.scale).max(1)
    }

    /// How many schedules are loaded.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How late (ms after their slot) the last scheduled runs were
    /// dispatched, oldest first; emptied by the call.
    pub fn dispatch_delays(&self, env: &EnvState) -> Vec<i64> {
        self.lock()
            .delays
            .remove(&env.store.id())
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Per environment, its schedules and how many of them are running,
    /// in one pass.
    pub fn counts_by_environment(&self) -> HashMap<Uuid, (usize, usize)> {
        let st = self.lock();
        let mut out: HashMap<Uuid, (usize, usize)> = HashMap::new();
        for ((env, _), entry) in st.entries.iter().filter(|(_, e)| !e.removed) {
            let counts = out.entry(*env).or_default();
            counts.0 += 1;
            counts.1 += usize::from(entry.running);
        }
        out
    }

    /// The schedules of `env`, and how many of them are running.
    pub fn counts(&self, env: &EnvState) -> (usize, usize) {
        let id = env.store.id();
        let st = self.lock();
        let mine = st
            .entries
            .iter()
            .filter(|((e, _), entry)| *e == id && !entry.removed);
        let (mut all, mut running) = (0, 0);
        for (_, entry) in mine {
            all += 1;
            running += usize::from(entry.running);
        }
        (all, running)
    }

    /// The next scheduled run, `None` when paused or unknown.
    pub fn next_run(&self, env: &EnvState, key: &str) -> Option<DateTime<Utc>> {
        let st = self.lock();
        let e = st.entries.get(&(env.store.id(), Key::from(key)))?;
        if e.paused {
            return None;
        }
        time(e.next_ms)
    }

    pub fn is_running(&self, env: &EnvState, key: &str) -> bool {
        self.lock()
            .entries
            .get(&(env.store.id(), Key::from(key)))
            .is_some_and(|e| e.running)
    }

    pub fn is_scheduled(&self, env: &EnvState, key: &str) -> bool {
        self.lock()
            .entries
            .get(&(env.store.id(), Key::from(key)))
            .is_some_and(|e| !e.removed)
    }

    /// Adds or replaces the schedule `key` from its stored state; a slot
    /// missed since the last run (downtime) makes it due now, once.
    pub fn install(
        &self,
        env: Uuid,
        key: &str,
        schedule: &ScheduleState,
        state: &SyncState,
        every: Duration,
    ) {
        let now = now_ms();
        let key: Key = Key::from(key);
        let mut st = self.lock();
        let old = st.remove(env, &key);
        let interval_ms = self.scaled_ms(every);
        let mut entry = Entry {
            interval_ms,
            // At most one interval ahead: an older version stored the end
            // of the calendar for an interval past it, a slot never reached.
            anchor_ms: schedule
                .anchor
                .timestamp_millis()
                .min(now.saturating_add(interval_ms)),
            next_ms: 0,
            paused: schedule.paused,
            running: old.as_ref().is_some_and(|o| o.running),
            // A trigger in memory; at a start, one a previous process
            // stored and did not run.
            queued: match &old {
                Some(o) => o.queued,
                None => state.queued.map(|q| (q.mode, q.at_ms)),
            },
            queued_resumed: match &old {
                Some(o) => o.queued_resumed,
                None => state.queued.is_some_and(|q| q.resumed),
            },
            dispatched_ms: old.as_ref().map_or(0, |o| o.dispatched_ms),
            due_at: None,
            waiters: old.and_then(|o| o.waiters),
            removed: false,
        };
        // The latest slot at or before now; due now unless a run was
        // going at it or started after it (a slot that falls during a run
        // is skipped, as in memory: a sync resumed while it runs has its
        // anchor inside that run).
        // A run a crash cut short covers only the slots before its start
        // (its end is the restart that recorded it).
        let last_ended = state.last_run.as_ref().map(|r| {
            let interrupted = r
                .error
                .as_ref()
                .is_some_and(|e| e["type"] == "sync_interrupted");
            if interrupted {
                r.started_at.timestamp_millis()
            } else {
                r.finished_at.timestamp_millis()
            }
        });
        let latest_slot = if now < entry.anchor_ms {
            None
        } else {
            Some(entry.slot_after(now) - entry.interval_ms)
        };
        // A missed slot is run now, once (its wait counts from now: the
        // time the server was down is not time spent waiting for a slot).
        entry.next_ms = match latest_slot {
            Some(slot) if last_ended.is_none_or(|e| e < slot) => now,
            _ => entry.slot_after(now),
        };
        st.entries.insert((env, key.clone()), entry);
        st.place(env, &key);
        drop(st);
        self.wake.notify_one();
    }

    /// Forgets the schedules of `env` for which `keep` is false; returns
    /// those that had a trigger queued (stored too, see
    /// [`Scheduler::forget_queued`]).
    fn retain(&self, env: Uuid, keep: impl Fn(&str) -> bool) -> Vec<Key> {
        let mut st = self.lock();
        let gone: Vec<Key> = st
            .entries
            .keys()
            .filter(|(e, k)| *e == env && !keep(k))
            .map(|(_, k)| k.clone())
            .collect();
        let mut queued = Vec::new();
        for k in gone {
            if st
                .entries
                .get(&(env, k.clone()))
                .is_some_and(|e| e.queued.is_some())
            {
                queued.push(k.clone());
            }
            if let Some(entry) = st.entries.get_mut(&(env, k.clone()))
                && entry.running
            {
                // Its run ends by itself; then the entry goes. A trigger
                // queued behind it goes now (a deploy that brings the sync
                // back before the run ends must not find it).
                entry.removed = true;
                entry.queued = None;
                for w in entry.waiters.take().into_iter().flat_map(|w| w.0) {
                    let _ = w.send(Err(ApiError::not_found(
                        "unknown_sync",
                        "the sync's schedule was removed before it ran (the sync removed by a deploy, or its connection deleted)",
                    )));
                }
                st.place(env, &k);
                continue;
            }
            if let Some(entry) = st.remove(env, &k) {
                for w in entry.waiters.into_iter().flat_map(|w| w.0) {
                    let _ = w.send(Err(ApiError::not_found(
                        "unknown_sync",
                        "the sync's schedule was removed before it ran (the sync removed by a deploy, or its connection deleted)",
                    )));
                }
            }
        }
        queued
    }

    /// Deletes the stored triggers of schedules just removed: their callers
    /// were told the sync was removed before it ran, and a later deploy
    /// that brings the sync back must not run them then.
    async fn forget_queued(&self, env: &EnvState, keys: Vec<Key>) -> ApiResult<()> {
        for key in keys {
            // Under the state's lock, as [`Scheduler::trigger`] stores a
            // trigger: one it stores after this finds its schedule gone
            // (removed before this runs) and stores nothing.
            let _guard = env.sync_lock(&key).lock().await;
            let stored: Option<runner::SyncState> = env.store.doc(SYNC_STATE, &key).await?;
            if let Some(mut state) = stored.filter(|s| s.queued.is_some()) {
                state.queued = None;
                env.store.put_doc(SYNC_STATE, &key, &state).await?;
            }
        }
        Ok(())
    }

    /// Makes the schedules of `env` match its active deployment and its
    /// connections: a schedule for every sync of every connection (new
    /// ones with the sync's `auto_start`: running now, or paused), the
    /// intervals of nango.yaml, none for syncs no longer deployed. Stored
    /// state (pause, frequency, last run) is kept.
    pub async fn reconcile(&self, env: &EnvState) -> ApiResult<()> {
        let _one_at_a_time = env.schedules_lock.lock().await;
        let id = env.store.id();
        let Some(catalog) = env.deployment().map(|d| d.catalog.clone()) else {
            let queued = self.retain(id, |_| false);
            return self.forget_queued(env, queued).await;
        };
        // The variants created (few): each connection's are scheduled
        // beside its base syncs.
        let mut variants: HashMap<String, Vec<String>> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page: Vec<(String, serde_json::Value)> = env
                .store
                .docs(runner::SYNC_VARIANTS, "", after.as_deref(), 1000, false)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, doc) in page {
                if doc["deleting"] == true {
                    continue;
                }
                if let Some((conn, sync, variant)) = parse_sync_key(&key) {
                    variants
                        .entry(sync_key(&conn, sync, "base"))
                        .or_default()
                        .push(variant.to_string());
                }
            }
        }
        let mut wanted = std::collections::HashSet::new();
        for integration in &catalog.config.integrations {
            if integration.syncs.is_empty() {
                continue;
            }
            let pck = &integration.provider_config_key;
            for cid in env.store.connection_ids(pck).await? {
                let conn = ConnectionRef {
                    provider_config_key: pck.clone(),
                    connection_id: cid,
                };
                for sync in integration.distinct_syncs() {
                    let key = sync_key(&conn, &sync.name, "base");
                    let others = variants.get(&key).cloned().unwrap_or_default();
                    self.ensure(env, &key, sync).await?;
                    wanted.insert(key);
                    for variant in others {
                        let key = sync_key(&conn, &sync.name, &variant);
                        self.ensure(env, &key, sync).await?;
                        wanted.insert(key);
                    }
                }
            }
        }
        let queued = self.retain(id, |k| wanted.contains(k));
        self.forget_queued(env, queued).await
    }

    /// The schedules of a new connection (after it is stored).
    pub async fn connection_created(&self, env: &EnvState, conn: &ConnectionRef) -> ApiResult<()> {
        let _one_at_a_time = env.schedules_lock.lock().await;
        let Some(catalog) = env.deployment().map(|d| d.catalog.clone()) else {
            return Ok(());
        };
        let Some(integration) = catalog.config.integration(&conn.provider_config_key) else {
            return Ok(());
        };
        for sync in integration.distinct_syncs() {
            self.ensure(env, &sync_key(conn, &sync.name, "base"), sync)
                .await?;
        }
        Ok(())
    }

    /// The schedule of a variant just created (stored first).
    pub async fn variant_created(
        &self,
        env: &EnvState,
        key: &str,
        sync: &sluice_nango_yaml::SyncConfig,
    ) -> ApiResult<()> {
        let _one_at_a_time = env.schedules_lock.lock().await;
        // Checked under the lock its deletion takes too: a variant deleted
        // meanwhile gets no schedule.
        if !runner::variant_exists(env, key).await? {
            return Ok(());
        }
        self.ensure(env, key, sync).await
    }

    /// Forgets a deleted variant's schedule and its state (a run going
    /// ends first: the schedule goes with it).
    pub async fn variant_deleted(&self, env: &EnvState, key: &str) -> ApiResult<()> {
        let _one_at_a_time = env.schedules_lock.lock().await;
        self.retain(env.store.id(), |k| k != key);
        let _guard = env.sync_lock(key).lock().await;
        env.store.delete_doc(SYNC_STATE, key).await?;
        Ok(())
    }

    /// Forgets a deleted connection's schedules and their state.
    pub async fn connection_deleted(&self, env: &EnvState, conn: &ConnectionRef) -> ApiResult<()> {
        let _one_at_a_time = env.schedules_lock.lock().await;
        self.forget_connection(env, conn).await
    }

    /// [`Scheduler::connection_deleted`] once the connection is gone from
    /// the store: what a deploy or an import scheduled while it went, unless
    /// an import made it again meanwhile (its schedules are its own).
    pub async fn connection_gone(&self, env: &EnvState, conn: &ConnectionRef) -> ApiResult<()> {
        let _one_at_a_time = env.schedules_lock.lock().await;
        if env
            .store
            .connection_exists(&conn.provider_config_key, &conn.connection_id)
            .await?
        {
            return Ok(());
        }
        self.forget_connection(env, conn).await
    }

    /// The work of [`Scheduler::connection_deleted`] (the caller holds
    /// `schedules_lock`).
    async fn forget_connection(&self, env: &EnvState, conn: &ConnectionRef) -> ApiResult<()> {
        let prefix = runner::sync_key_prefix(conn);
        self.retain(env.store.id(), |k| !k.starts_with(&prefix));
        loop {
            let docs: Vec<(String, serde_json::Value)> = env
                .store
                .docs(runner::SYNC_VARIANTS, &prefix, None, 500, false)
                .await?;
            if docs.is_empty() {
                break;
            }
            for (k, _) in docs {
                env.store.delete_doc(runner::SYNC_VARIANTS, &k).await?;
            }
        }
        loop {
            let docs: Vec<(String, serde_json::Value)> = env
                .store
                .docs(SYNC_STATE, &prefix, None, 500, false)
                .await?;
            if docs.is_empty() {
                return Ok(());
            }
            for (k, _) in docs {
                let _guard = env.sync_lock(&k).lock().await;
                env.store.delete_doc(SYNC_STATE, &k).await?;
            }
        }
    }

    /// The schedule `key` of `sync`, created in the store if it has none.
    async fn ensure(
        &self,
        env: &EnvState,
        key: &str,
        sync: &sluice_nango_yaml::SyncConfig,
    ) -> ApiResult<()> {
        let stored: Option<SyncState> = env.store.doc(SYNC_STATE, key).await?;
        let state = match stored {
            Some(s) if s.schedule.is_some() => s,
            _ => {
                update_sync_state(env, key, |s| {
                    if s.schedule.is_none() {
                        s.schedule = Some(ScheduleState {
                            paused: !sync.auto_start,
                            frequency: None,
                            anchor: Utc::now(),
                        });
                    }
                    s.clone()
                })
                .await?
            }
        };
        let Some(schedule) = &state.schedule else {
            return Ok(());
        };
        let every = match &schedule.frequency {
            Some(f) => interval(f).unwrap_or(sync.interval),
            None => sync.interval,
        };
        let id = env.store.id();
        let unchanged = {
            let st = self.lock();
            // A sync removed while it ran and added back before its run
            // ended is reinstalled: its entry still carries the removal,
            // which would drop it when that run ends.
            st.entries.get(&(id, Key::from(key))).is_some_and(|e| {
                !e.removed
                    && e.interval_ms == self.scaled_ms(every)
                    && e.anchor_ms == schedule.anchor.timestamp_millis()
                    && e.paused == schedule.paused
            })
        };
        if !unchanged {
            self.install(id, key, schedule, &state, every);
        }
        Ok(())
    }

    /// At start: every environment's schedules from the store (runs a
    /// crash interrupted recorded as failed first), then reconciled with
    /// its deployment and connections.
    pub async fn load(&self, app: &App) -> ApiResult<()> {
        for env in app.envs() {
            let mut after: Option<String> = None;
            // The states with a trigger stored.
            let mut queued: Vec<String> = Vec::new();
            loop {
                let page: Vec<(String, SyncState)> = env
                    .store
                    .docs(SYNC_STATE, "", after.as_deref(), 1000, false)
                    .await?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (key, state) in page {
                    let models = || -> Vec<String> {
                        runner::parse_sync_key(&key)
                            .and_then(|(conn, sync, _)| {
                                env.deployment()?
                                    .catalog
                                    .sync_config(&conn.provider_config_key, sync)
                                    .map(|s| s.output.clone())
                            })
                            .unwrap_or_default()
                    };
                    if state.running.is_none()
                        && !state.webhooks_queued
                        && let Some(last) = &state.last_run
                    {
                        // The process stopped between a run's end and
                        // queueing its webhooks.
                        runner::queue_run_webhooks(app, env, &key, &models(), last).await;
                    }
                    if let Some(mark) = &state.running {
                        // The trigger the run took, counted as cut short
                        // by a crash; not by a stop on purpose.
                        let clean = env.after_clean_stop();
                        let trigger = mark.trigger.map(|t| match clean {
                            true => runner::QueuedRun {
                                attempts: t.attempts.saturating_sub(1),
                                ..t
                            },
                            false => t,
                        });
                        // A failed run like any other: in the history, and
                        // its failure webhook sent when the settings ask.
                        let message = match &trigger {
                            Some(t) if t.attempts >= runner::TRIGGER_ATTEMPTS => format!(
                                "the server stopped during the run; cut short {} times, the triggered run is not run again",
                                t.attempts
                            ),
                            _ => "the server stopped during the run".to_string(),
                        };
                        // The type `run_sync` gave it (a full refresh
                        // cleared `last_sync_date` with the running mark).
                        let mut summary = RunSummary {
                            run_type: run_type(env, &key, &state),
                            ..RunSummary::failed(
                                mark.job,
                                mark.started_at,
                                "sync_interrupted",
                                message.clone(),
                            )
                        };
                        // The history first: a crash before the state
                        // is written records it again (twice rather than
                        // never).
                        if let Some((conn, sync, variant)) = runner::parse_sync_key(&key) {
                            app.config.events.say(&format!(
                                "{}: sync `{}` of connection `{}` ({}) was running when the server stopped: recorded as failed ({message})",
                                env.name(),
                                runner::sync_label(sync, variant),
                                conn.connection_id,
                                conn.provider_config_key,
                            ));
                            let log_id = app
                                .logs
                                .record_interrupted(
                                    env,
                                    &conn,
                                    "sync",
                                    sync,
                                    mark.started_at,
                                    format!("sync_interrupted: {message}"),
                                )
                                .await;
                            summary.log_id = Some(log_id);
                        }
                        let last = summary.clone();
                        // The trigger it took runs again (queued with any
                        // asked since), unless it was cut short too often.
                        // A scheduled run (a new connection's first, say)
                        // runs again too, at once rather than a whole
                        // interval later, counted as a trigger's first
                        // attempt; unless its schedule is paused.
                        // Not for a sync the active deployment no longer
                        // has (removed while the run went): a deploy that
                        // brings it back must not run a trigger asked
                        // before its removal.
                        let paused = state.schedule.as_ref().is_some_and(|s| s.paused);
                        let deployed =
                            runner::parse_sync_key(&key).is_some_and(|(conn, sync, _)| {
                                env.deployment().is_some_and(|d| {
                                    d.catalog
                                        .sync_config(&conn.provider_config_key, sync)
                                        .is_some()
                                })
                            });
                        let retry = match trigger {
                            _ if !deployed => None,
                            Some(t) if t.resumed && paused => None,
                            Some(t) => Some(t),
                            None if paused => None,
                            None => Some(runner::QueuedRun {
                                mode: SyncMode::Incremental,
                                at_ms: Utc::now().timestamp_millis(),
                                attempts: u32::from(!clean),
                                resumed: true,
                            }),
                        }
                        .filter(|t| t.attempts < runner::TRIGGER_ATTEMPTS);
                        update_sync_state(env, &key, |s| {
                            s.running = None;
                            s.last_run = Some(last);
                            s.webhooks_queued = false;
                            if let Some(t) = retry {
                                s.queued = Some(match s.queued {
                                    Some(q) => runner::QueuedRun {
                                        mode: stronger(q.mode, t.mode),
                                        at_ms: q.at_ms.max(t.at_ms),
                                        attempts: t.attempts,
                                        resumed: q.resumed && t.resumed,
                                    },
                                    None => t,
                                });
                            }
                        })
                        .await?;
                        runner::queue_run_webhooks(app, env, &key, &models(), &summary).await;
                        if retry.is_some() || state.queued.is_some() {
                            queued.push(key.clone());
                        }
                    } else if state.queued.is_some() {
                        queued.push(key.clone());
                    }
                }
            }
            self.reconcile(env).await?;
            // A stored trigger whose schedule reconciling did not make (its
            // sync removed, or nothing deployed, before the stop): its
            // schedule's removal dropped it, so a deploy that brings the
            // sync back does not run it. As [`Scheduler::forget_queued`].
            let unscheduled: Vec<Key> = queued
                .into_iter()
                .filter(|k| !self.is_scheduled(env, k))
                .map(|k| Key::from(k.as_str()))
                .collect();
            self.forget_queued(env, unscheduled).await?;
        }
        Ok(())
    }

    /// Queues a run of each of `keys` now, in `mode`, even when paused;
    /// after the run in progress if there is one. With `wait`, each
    /// receiver gets its run's outcome; `None` for a key not scheduled.
    pub async fn trigger(
        &self,
        env: &EnvState,
        keys: &[&str],
        mode: SyncMode,
        wait: bool,
    ) -> ApiResult<Vec<Option<Option<oneshot::Receiver<RunResult>>>>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut queued = Vec::new();
        for key in keys {
            match self.queue(env, key, mode, wait) {
                Some((q, rx)) => {
                    queued.push((*key, q));
                    out.push(Some(rx));
                }
                None => out.push(None),
            }
        }
        // Stored before the answer, in a durable write per chunk of
        // `TRIGGER_CHUNK` keys (an every-connection trigger holds only its
        // chunk's state locks at a time, not every stripe while it reads
        // thousands of states): a restart runs them. Should a run start
        // (and clear its trigger) before this write, the write leaves it
        // stored until the next run: a crash meanwhile runs it again,
        // never loses it. Each key's state lock is held across its read
        // and write (a chunk's stripes once, in one order: no deadlock). A
        // failure part way answers an error, and the chunks written stay
        // queued, as a trigger repeated would queue them.
        for chunk in queued.chunks(TRIGGER_CHUNK) {
            let mut stripes: Vec<&tokio::sync::Mutex<()>> =
                chunk.iter().map(|(k, _)| env.sync_lock(k)).collect();
            stripes.sort_by_key(|m| std::ptr::from_ref(*m) as usize);
            stripes.dedup_by_key(|m| std::ptr::from_ref(*m) as usize);
            let mut guards = Vec::with_capacity(stripes.len());
            for m in stripes {
                guards.push(m.lock().await);
            }
            let mut batch = env.store.doc_batch();
            for (key, q) in chunk {
                // A schedule a deploy removed meanwhile: its callers were
                // told so, and a deploy that brings the sync back must not
                // run it.
                if !self.is_scheduled(env, key) {
                    continue;
                }
                // A scheduled sync has its state (written with its
                // schedule): none means its connection was deleted
                // meanwhile, and a state written now would outlive it.
                let Some(mut state) = env.store.doc::<SyncState>(SYNC_STATE, key).await? else {
                    continue;
                };
                // Merged with one stored: the later time, so that a run
                // that took the stored one (dispatched before this one was
                // asked) does not clear this one with it.
                state.queued = Some(match state.queued {
                    Some(old) => runner::QueuedRun {
                        mode: stronger(old.mode, q.mode),
                        at_ms: old.at_ms.max(q.at_ms),
                        attempts: old.attempts,
                        resumed: old.resumed && q.resumed,
                    },
                    None => *q,
                });
                batch.put(SYNC_STATE, key, &state)?;
            }
            batch.apply().await?;
            drop(guards);
        }
        self.wake.notify_one();
        Ok(out)
    }

    /// [`Scheduler::trigger`] in memory.
    fn queue(
        &self,
        env: &EnvState,
        key: &str,
        mode: SyncMode,
        wait: bool,
    ) -> Option<(runner::QueuedRun, Option<oneshot::Receiver<RunResult>>)> {
        let id = env.store.id();
        let key = Key::from(key);
        let mut st = self.lock();
        let entry = st
            .entries
            .get_mut(&(id, key.clone()))
            .filter(|e| !e.removed)?;
        let asked = mode;
        // A second trigger before the first ran keeps the stronger mode.
        let mode = entry.queued.map_or(mode, |(q, _)| stronger(q, mode));
        let at = entry
            .queued
            .map_or_else(|| now_ms().max(entry.dispatched_ms + 1), |(_, at)| at);
        entry.queued = Some((mode, at));
        entry.queued_resumed = false;
        let rx = wait.then(|| {
            let (tx, rx) = oneshot::channel();
            entry.waiters.get_or_insert_default().0.push(tx);
            rx
        });
        // A full refresh does not wait for the run going: it stops it
        // (recorded as cancelled) and runs next, as the original's
        // `runSyncCommand` cancels the running job first. (Under the
        // state's lock: the run cancelled is the one going now, never the
        // one this queues.)
        if entry.running
            && asked != SyncMode::Incremental
            && let Some(cancel) = st.cancels.get(&(id, key.clone()))
        {
            cancel.send_replace(true);
        }
        st.place(id, &key);
        Some((
            runner::QueuedRun {
                mode,
                at_ms: at,
                attempts: 0,
                resumed: false,
            },
            rx,
        ))
    }

    /// Pauses or resumes `key` (stored first). Resuming runs it now, then
    /// every interval from now. `false` when there is no such schedule.
    pub async fn set_paused(&self, env: &EnvState, key: &str, paused: bool) -> ApiResult<bool> {
        // One at a time with reconciling: a reconcile that read the state
        // before this change would install it again, undoing it in memory.
        let _one_at_a_time = env.schedules_lock.lock().await;
        if !self.is_scheduled(env, key) {
            return Ok(false);
        }
        let now = Utc::now();
        update_sync_state(env, key, |s| {
            if let Some(sch) = &mut s.schedule {
                if sch.paused && !paused {
                    sch.anchor = now;
                }
                sch.paused = paused;
            }
            // The retry of a run a crash cut short goes with a pause.
            if paused && s.queued.is_some_and(|q| q.resumed) {
                s.queued = None;
            }
        })
        .await?;
        let id = env.store.id();
        let key = Key::from(key);
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(&(id, key.clone())) {
            e.set_paused(paused, now.timestamp_millis());
        }
        st.place(id, &key);
        drop(st);
        self.wake.notify_one();
        Ok(true)
    }

    /// Sets the connection's own frequency of `key` (`None`: back to
    /// nango.yaml's `default`); the next run is one interval from now,
    /// unless a run is already due (a new connection's first run waiting
    /// for the dispatcher or a slot): that one still runs.
    pub async fn set_frequency(
        &self,
        env: &EnvState,
        key: &str,
        frequency: Option<String>,
        every: Duration,
    ) -> ApiResult<bool> {
        // See `set_paused`.
        let _one_at_a_time = env.schedules_lock.lock().await;
        if !self.is_scheduled(env, key) {
            return Ok(false);
        }
        // The new grid's first slot is one interval from now: the anchor
        // is that slot, not now (a start would take now for a slot
        // missed, and run at once). Unless a run is due (a new
        // connection's first, waiting for a slot): it still runs, now or
        // after a restart.
        let interval_ms = self.scaled_ms(every);
        let now = Utc::now();
        let due = self
            .lock()
            .entries
            .get(&(env.store.id(), Key::from(key)))
            .is_some_and(|e| !e.running && e.next_ms <= now.timestamp_millis());
        let first = if due {
            now
        } else {
            // Intervals are at most a century (`capped_ms`); past the
            // calendar would be a slot never reached, not an overflow.
            now.checked_add_signed(chrono::TimeDelta::milliseconds(interval_ms))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        update_sync_state(env, key, |s| {
            if let Some(sch) = &mut s.schedule {
                sch.frequency = frequency;
                sch.anchor = first;
            }
        })
        .await?;
        let id = env.store.id();
        let key = Key::from(key);
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(&(id, key.clone())) {
            e.interval_ms = interval_ms;
            e.anchor_ms = first.timestamp_millis();
            // A run due (or queued) stays due; otherwise the new grid's.
            if e.next_ms > now.timestamp_millis() {
                e.next_ms = e.anchor_ms;
            }
        }
        st.place(id, &key);
        drop(st);
        self.wake.notify_one();
        Ok(true)
    }

    /// Starts the dispatcher; it stops when the app is dropped.
    pub fn spawn(self: &Arc<Self>, app: &Arc<App>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let app = Arc::downgrade(app);
        tokio::spawn(async move { me.dispatch(app).await })
    }

    async fn dispatch(self: Arc<Self>, app: Weak<App>) {
        // The runs; dropped with this task, which aborts them.
        let mut runs = tokio::task::JoinSet::new();
        loop {
            while runs.try_join_next().is_some() {}
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = now_ms();
            let mut started: Vec<(Job, OwnedSemaphorePermit)> = Vec::new();
            let earliest = {
                let mut st = self.lock();
                while let Ok(permit) = self.slots.clone().try_acquire_owned() {
                    match st.pick(now) {
                        Some(job) => started.push((job, permit)),
                        None => break,
                    }
                }
                st.earliest()
            };
            for (job, permit) in started {
                let Some(app) = app.upgrade() else { return };
                runs.spawn(self.clone().run(app, job, permit));
            }
            if app.strong_count() == 0 {
                return;
            }
            match earliest {
                // Due but no slot: a run ending wakes us.
                Some(at) if at <= now => woken.await,
                Some(at) => {
                    let wait = Duration::from_millis((at - now) as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = woken => {}
                    }
                }
                None => {
                    // Nothing waiting; look again now and then so a
                    // dropped app ends this task.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = woken => {}
                    }
                }
            }
        }
    }

    async fn run(self: Arc<Self>, app: Arc<App>, mut job: Job, permit: OwnedSemaphorePermit) {
        use futures_util::FutureExt as _;
        // A panic in a run must not leave the schedule marked running.
        let result = std::panic::AssertUnwindSafe(self.execute(&app, &job))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the run failed inside sluice",
                ))
            });
        drop(permit);
        {
            let mut st = self.lock();
            if let Some(n) = st.running.get_mut(&job.env) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.running.remove(&job.env);
                }
            }
            let now = now_ms();
            let key = (job.env, job.key.clone());
            st.cancels.remove(&key);
            let removed = match st.entries.get_mut(&key) {
                Some(e) => {
                    e.running = false;
                    if e.next_ms <= now {
                        // Slots that fell during the run are skipped.
                        e.next_ms = e.slot_after(now);
                    }
                    e.removed
                }
                None => false,
            };
            if removed && let Some(gone) = st.remove(job.env, &job.key) {
                for w in gone.waiters.into_iter().flat_map(|w| w.0) {
                    let _ = w.send(Err(ApiError::not_found(
                        "unknown_sync",
                        "the sync's schedule was removed before it ran (the sync removed by a deploy, or its connection deleted)",
                    )));
                }
            }
            st.place(job.env, &job.key);
        }
        for w in std::mem::take(&mut job.waiters) {
            let _ = w.send(result.clone());
        }
        self.wake.notify_one();
    }

    async fn execute(&self, app: &App, job: &Job) -> RunResult {
        let env = app
            .envs()
            .find(|e| e.store.id() == job.env)
            .cloned()
            .ok_or_else(|| ApiError::not_found("not_found", "the environment is gone"))?;
        let (conn, sync, variant) = parse_sync_key(&job.key)
            .ok_or_else(|| ApiError::not_found("unknown_sync", "a malformed schedule key"))?;
        let waited = now_ms() - job.due_at;
        if job.scheduled && waited > self.max_wait_ms {
            let message = format!(
                "the run waited {} s for a free slot, longer than the {} s a sync may wait",
                waited / 1000,
                self.max_wait_ms / 1000
            );
            let mut summary =
                RunSummary::failed(0, Utc::now(), "sync_not_started", message.clone());
            // Only where a state still is (not for a connection or variant
            // deleted since the dispatch: a state written now would be
            // inherited by one made again under its id).
            let _guard = env.sync_lock(&job.key).lock().await;
            if let Some(mut state) = env.store.doc::<SyncState>(SYNC_STATE, &job.key).await? {
                // The type the run would have had (its failure webhook's
                // `syncType`).
                summary.run_type = run_type(&env, &job.key, &state);
                let log_id = app
                    .logs
                    .record_failure(
                        &env,
                        &conn,
                        "sync",
                        sync,
                        summary.started_at,
                        message.clone(),
                    )
                    .await;
                summary.log_id = Some(log_id);
                state.last_run = Some(summary.clone());
                state.webhooks_queued = false;
                env.store.put_doc(SYNC_STATE, &job.key, &state).await?;
                drop(_guard);
                // Told as every failed run is.
                app.config.events.say(&format!(
                    "{}: sync `{}` of connection `{}` ({}) failed: {message}",
                    env.name(),
                    runner::sync_label(sync, variant),
                    conn.connection_id,
                    conn.provider_config_key,
                ));
                let models = env
                    .deployment()
                    .and_then(|d| {
                        d.catalog
                            .sync_config(&conn.provider_config_key, sync)
                            .map(|s| s.output.clone())
                    })
                    .unwrap_or_default();
                runner::queue_run_webhooks(app, &env, &job.key, &models, &summary).await;
            }
            return Ok(summary);
        }
        runner::run_sync(
            app,
            &env,
            &conn,
            sync,
            variant,
            job.mode,
            job.dispatched_ms,
            self.max_run,
            job.cancelled.clone(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_stored_at_the_end_of_the_calendar_runs_again() {
        let data = tempfile::tempdir().unwrap();
        let scheduler = Scheduler::new(&crate::ServerConfig::new(
            data.path(),
            "127.0.0.1:0".parse().unwrap(),
        ));
        let env = Uuid::new_v4();
        let schedule = ScheduleState {
            paused: false,
            frequency: Some("every 100000000 years".into()),
            anchor: DateTime::<Utc>::MAX_UTC,
        };
        let state = SyncState {
            schedule: Some(schedule.clone()),
            ..Default::default()
        };
        scheduler.install(env, "k", &schedule, &state, Duration::from_secs(3600));
        let next = scheduler.lock().entries[&(env, Key::from("k"))].next_ms;
        assert!(next <= now_ms() + 3_600_000, "next run at {next}");
    }

    /// A run a crash cut short is queued again at the next start; a pause
    /// while it waits for a slot drops it (as it would the next slot),
    /// and not a trigger someone asked for.
    #[test]
    fn a_pause_drops_the_retry_of_an_interrupted_run_but_not_a_trigger() {
        let data = tempfile::tempdir().unwrap();
        let scheduler = Scheduler::new(&crate::ServerConfig::new(
            data.path(),
            "127.0.0.1:0".parse().unwrap(),
        ));
        let env = Uuid::new_v4();
        let schedule = ScheduleState {
            paused: false,
            frequency: Some("every hour".into()),
            anchor: Utc::now(),
        };
        for (resumed, kept) in [(true, false), (false, true)] {
            let state = SyncState {
                schedule: Some(schedule.clone()),
                queued: Some(runner::QueuedRun {
                    mode: SyncMode::Incremental,
                    at_ms: now_ms(),
                    attempts: 1,
                    resumed,
                }),
                ..Default::default()
            };
            let key = format!("k-{resumed}");
            scheduler.install(env, &key, &schedule, &state, Duration::from_secs(3600));
            let mut st = scheduler.lock();
            let e = st.entries.get_mut(&(env, Key::from(key.as_str()))).unwrap();
            assert!(e.wants().is_some(), "queued: due");
            e.set_paused(true, now_ms());
            assert_eq!(e.wants().is_some(), kept, "resumed: {resumed}");
        }
    }

    #[test]
    fn an_interval_longer_than_a_century_runs_once_a_century() {
        let century = capped_ms(sluice_nango_yaml::MAX_API_INTERVAL);
        assert_eq!(capped_ms(Duration::from_secs(u64::MAX)), century);
        assert_eq!(capped_ms(Duration::from_secs(3600)), 3_600_000);
        // Its next slot is a date.
        let e = entry(now_ms(), century);
        assert!(time(e.slot_after(now_ms())).is_some());
    }

    fn entry(anchor: i64, interval: i64) -> Entry {
        Entry {
            interval_ms: interval,
            anchor_ms: anchor,
            next_ms: anchor,
            paused: false,
            running: false,
            queued: None,
            queued_resumed: false,
            dispatched_ms: 0,
            due_at: None,
            waiters: None,
            removed: false,
        }
    }

    #[test]
    fn slots_fall_on_the_grid_and_missed_ones_are_skipped() {
        let e = entry(1_000, 100);
        assert_eq!(e.slot_after(0), 1_000);
        assert_eq!(e.slot_after(1_000), 1_100);
        assert_eq!(e.slot_after(1_099), 1_100);
        // Long after: the next slot, not every missed one.
        assert_eq!(e.slot_after(10_050), 10_100);
    }

    #[test]
    fn environments_take_turns() {
        let mut st = State::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for i in 0..100 {
            let key: Key = format!("a{i:03}").into();
            st.entries.insert((a, key.clone()), entry(0, 1_000));
            st.place(a, &key);
        }
        let key: Key = "b".into();
        st.entries.insert((b, key.clone()), entry(50, 1_000));
        st.place(b, &key);
        let first = st.pick(100).unwrap();
        let second = st.pick(100).unwrap();
        assert_eq!((first.env, &*first.key), (a, "a000"));
        assert_eq!((second.env, &*second.key), (b, "b"));
        assert_eq!(st.pick(100).unwrap().env, a);
        // Running entries are not picked again; nothing else of b waits.
        assert!((0..98).all(|_| st.pick(100).is_some_and(|j| j.env == a)));
        assert!(st.pick(100).is_none());
    }

    #[test]
    fn an_environment_runs_at_most_its_share_of_the_slots() {
        let mut st = State {
            share: 2,
            ..State::default()
        };
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for i in 0..5 {
            let key: Key = format!("a{i}").into();
            st.entries.insert((a, key.clone()), entry(0, 1_000));
            st.place(a, &key);
        }
        let picked: Vec<Uuid> = std::iter::from_fn(|| st.pick(100).map(|j| j.env)).collect();
        assert_eq!(picked, [a, a], "a's share is two runs");
        assert_eq!(
            st.earliest(),
            None,
            "a's waiting runs are not due for the dispatcher"
        );
        // Another environment's due run is still picked.
        let key: Key = "b".into();
        st.entries.insert((b, key.clone()), entry(0, 1_000));
        st.place(b, &key);
        assert_eq!(st.pick(100).map(|j| j.env), Some(b));
    }

    #[test]
    fn a_running_schedule_is_not_due_and_a_trigger_waits_for_it() {
        let mut st = State::default();
        let env = Uuid::from_u128(7);
        let key: Key = "k".into();
        st.entries.insert((env, key.clone()), entry(0, 1_000));
        st.place(env, &key);
        let job = st.pick(10).unwrap();
        assert!(job.scheduled);
        let e = st.entries.get_mut(&(env, key.clone())).unwrap();
        e.queued = Some((SyncMode::FullRefresh, 20));
        st.place(env, &key);
        assert!(st.pick(5_000).is_none(), "running: not dispatched again");
        st.entries.get_mut(&(env, key.clone())).unwrap().running = false;
        st.place(env, &key);
        let again = st.pick(5_000).unwrap();
        assert!(!again.scheduled);
        assert_eq!(again.mode, SyncMode::FullRefresh);
    }
}
