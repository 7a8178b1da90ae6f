//! The per-execution store data and the host side of every `nango:scripts`
//! import (one file per interface).

pub(crate) mod connection;
mod http;
mod intl;
mod log;
mod records;

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::types::NangoError;
use crate::connection::Connection;
use crate::exec::{Execution, LogEntry, LogLevel, Services};
use crate::limits::Limits;
use crate::records::{Changes, Merging};
use crate::{Runtime, ScriptKind};

/// Fuel per byte of the host's work for a script ([`HostState::charge`]):
/// a guest runs about five fuel units a nanosecond, and parsing, hashing
/// or collating a byte takes the host a few nanoseconds.
pub(crate) const HOST_FUEL_PER_BYTE: u64 = 16;

/// Everything one execution's store holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) kind: ScriptKind,
    pub(crate) exec: Arc<Execution>,
    pub(crate) services: Arc<Services>,
    pub(crate) runtime: Runtime,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) logs_dropped: u64,
    /// What the kept logs take (see [`crate::exec::LogEntry::weight`]).
    logs_bytes: usize,
    pub(crate) changes: BTreeMap<String, Changes>,
    pub(crate) merging: HashMap<String, Merging>,
    /// Models whose deletes the script tracks (`trackDeletesStart`/`End`),
    /// by full name.
    pub(crate) tracked: BTreeMap<String, crate::exec::TrackedDeletes>,
    /// getConnection results of this execution; metadata writes invalidate.
    pub(crate) connection_cache: HashMap<(String, String), Connection>,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    /// Secrets to scrub from logged URLs and headers.
    pub(crate) secrets: crate::proxy::Secrets,
    /// Fuel for the host's own work on the script's behalf (parsing,
    /// hashing, copying what it sends and gets), taken from the guest's
    /// fuel as the host call returns ([`HostState::charge`]).
    pub(crate) fuel_debt: u64,
    /// The provider of the execution's own connection, read before the
    /// guest starts (`info()` is synchronous).
    pub(crate) provider: Option<String>,
    /// When this execution's time is up.
    pub(crate) deadline: Instant,
    /// The response of the page a paginator returned last and the next
    /// page's parameter (`last-page`).
    pub(crate) last_page: Option<(crate::bindings::types::Response, serde_json::Value)>,
    /// The locks this execution holds (released when the store is
    /// dropped, however the execution ended).
    pub(crate) locks: crate::locks::LockHolder,
    /// The collators the script made (`nango:scripts/intl`).
    pub(crate) collators: intl::Collators,
    /// What each live paginator holds (its request), by resource, and
    /// their sum: bounded by the payload limit, as one request is (a
    /// script that never drops its paginators cannot pile up requests).
    pub(crate) pagers: HashMap<u32, usize>,
    pub(crate) pager_bytes: usize,
}

impl HostState {
    pub(crate) fn new(
        kind: ScriptKind,
        exec: Arc<Execution>,
        services: Arc<Services>,
        runtime: Runtime,
        deadline: Instant,
    ) -> Self {
        let limits = &services.environment.limits;
        let stdout = CapturedOutput::new(limits.max_output_bytes);
        let stderr = CapturedOutput::new(limits.max_output_bytes);
        // Deny by default: no preopened directories, no environment, no
        // arguments, no sockets, no name lookups. Clocks and randomness only.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(at) = exec.clock {
            wasi.wall_clock(FrozenClock(at));
        }
        let wasi = wasi.build();
        let locks = crate::locks::LockHolder::new(services.locks.clone());
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits, &runtime, &services.environment.name),
            kind,
            exec,
            services,
            runtime,
            logs: Vec::new(),
            logs_dropped: 0,
            logs_bytes: 0,
            changes: BTreeMap::new(),
            merging: HashMap::new(),
            tracked: BTreeMap::new(),
            connection_cache: HashMap::new(),
            stdout,
            stderr,
            secrets: Default::default(),
            fuel_debt: 0,
            provider: None,
            deadline,
            last_page: None,
            locks,
            collators: intl::Collators::default(),
            pagers: HashMap::new(),
            pager_bytes: 0,
        }
    }

    /// Counts `bytes` of the host's work on the script's behalf against
    /// its fuel: a script that makes the host parse, hash or compare
    /// megabytes per call spends its CPU budget on it, not only on its
    /// own instructions (which a host call hardly uses).
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.fuel_debt = self
            .fuel_debt
            .saturating_add((bytes as u64).saturating_mul(HOST_FUEL_PER_BYTE));
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.services.environment.limits
    }

    /// Keeps a log line, up to the environment's cap.
    pub(crate) fn push_log(&mut self, entry: LogEntry) {
        let weight = entry.weight();
        if self.log_room(weight) {
            self.logs_bytes += weight;
            self.logs.push(entry);
        } else {
            self.logs_dropped += 1;
        }
    }

    /// Keeps a log line whatever the cap (the few lines that say why a
    /// script failed).
    pub(crate) fn push_log_past_budget(&mut self, entry: LogEntry) {
        self.logs_bytes += entry.weight();
        self.logs.push(entry);
    }

    /// Whether a log entry of at least `bytes` may still be kept.
    pub(crate) fn log_room(&self, bytes: usize) -> bool {
        let limits = self.limits();
        self.logs.len() < limits.max_log_entries
            && self.logs_bytes.saturating_add(bytes) <= limits.max_log_bytes
    }

    /// Refuses a guest-supplied payload (request body, records batch,
    /// metadata) over the environment's limit.
    pub(crate) fn check_payload(&self, what: &str, size: usize) -> Result<(), NangoError> {
        let max = self.limits().max_payload_bytes;
        if size > max {
            return Err(crate::proxy::nango_error(
                "payload_too_large",
                format!("{what} is {size} bytes, over the limit of {max} bytes"),
            ));
        }
        Ok(())
    }

    pub(crate) fn internal_log(&mut self, level: LogLevel, message: String) {
        self.push_log(LogEntry::internal(level, message));
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A wall clock that always says the same time.
struct FrozenClock(chrono::DateTime<chrono::Utc>);

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }

    fn now(&self) -> std::time::Duration {
        let ms = self.0.timestamp_millis().max(0);
        std::time::Duration::from_millis(ms as u64)
    }
}

/// Caps each linear memory and remembers whether it refused a growth, so a
/// trap that follows can be reported as the memory limit it is.
pub(crate) struct MemoryLimiter {
    max_memory: usize,
    pub(crate) hit: bool,
    /// The growth refused was past the runtime's memory budget, not this
    /// execution's own limit.
    pub(crate) budget_hit: bool,
    budget: Arc<crate::engine::MemoryBudget>,
    env_in_use: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes this execution took from the budget (given back on drop).
    taken: usize,
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.give_back(&self.env_in_use, self.taken);
    }
}

/// Tables of a script hold functions, not data: a million entries is far
/// beyond any real script and bounds what a hostile one can reserve.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl MemoryLimiter {
    fn new(limits: &Limits, runtime: &Runtime, environment: &str) -> Self {
        let budget = runtime.inner.memory.clone();
        let env_in_use = budget.env_counter(environment);
        Self {
            max_memory: limits.memory_bytes,
            hit: false,
            budget_hit: false,
            budget,
            env_in_use,
            taken: 0,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.max_memory
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget.budget
    }

    /// The linear memory this execution has grown to, in all.
    pub(crate) fn taken(&self) -> usize {
        self.taken
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        if more > 0 {
            if !self.budget.take(&self.env_in_use, more) {
                self.hit = true;
                self.budget_hit = true;
                return Ok(false);
            }
            self.taken += more;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Guest stdout or stderr, kept in memory up to a cap, and past it only its
/// last [`OUTPUT_TAIL_BYTES`] (a panic's message comes last); the rest is
/// dropped (never a trap: printing must not kill a script).
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<OutputBuffer>>,
}

/// What is kept of the output past the cap: its end.
pub(crate) const OUTPUT_TAIL_BYTES: usize = 64 << 10;

struct OutputBuffer {
    bytes: Vec<u8>,
    /// What went into `bytes` in all, lines already moved to the logs
    /// included: the cap counts it.
    kept: usize,
    cap: usize,
    truncated: bool,
    /// The last bytes written past the cap.
    tail: std::collections::VecDeque<u8>,
}

/// What a guest wrote to one stream.
pub(crate) struct Captured {
    /// The first bytes, up to the cap.
    pub text: String,
    /// Whether more was written.
    pub truncated: bool,
    /// The end of what was written past the cap, from its first whole line.
    pub tail: String,
}

impl CapturedOutput {
    fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(OutputBuffer {
                bytes: Vec::new(),
                kept: 0,
                cap,
                truncated: false,
                tail: std::collections::VecDeque::new(),
            })),
        }
    }

    /// The end of what was written: the tail past the cap, or the last
    /// 64 KiB kept.
    fn end(&self) -> Vec<u8> {
        let b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if b.truncated {
            b.tail.iter().copied().collect()
        } else {
            b.bytes[b.bytes.len().saturating_sub(OUTPUT_TAIL_BYTES)..].to_vec()
        }
    }

    /// Whether the end of what was written contains `needle`.
    pub(crate) fn ends_with_text(&self, needle: &str) -> bool {
        let end = self.end();
        let needle = needle.as_bytes();
        end.windows(needle.len()).any(|w| w == needle)
    }

    /// The last line of the output that is not blank, nor Rust's note on
    /// `RUST_BACKTRACE` (which std writes after an allocation failure's
    /// message too).
    pub(crate) fn last_line(&self) -> Option<String> {
        let end = self.end();
        let text = String::from_utf8_lossy(&end);
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .map(str::to_string)
    }

    /// The last Rust panic written (`thread '…' panicked at src/x.rs:8:20:`
    /// and its message on the next line) as `src/x.rs:8:20: message`.
    pub(crate) fn last_panic(&self) -> Option<String> {
        let end = self.end();
        let text = String::from_utf8_lossy(&end);
        let at = text.rfind("panicked at ")?;
        let rest = &text[at + "panicked at ".len()..];
        let mut lines = rest.lines();
        let place = lines.next()?.trim().trim_end_matches(':');
        // Before Rust 1.73 the message came first, on the same line.
        let message = lines.next().map(str::trim).unwrap_or("");
        let message = if message.starts_with("note: ") {
            ""
        } else {
            message
        };
        Some(if message.is_empty() {
            place.to_string()
        } else {
            format!("{place}: {message}")
        })
    }

    /// The whole lines written since the last call, while nothing was cut
    /// (past the cap, what is kept is sorted out at the end).
    pub(crate) fn take_lines(&self) -> Option<String> {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if b.truncated {
            return None;
        }
        let end = b.bytes.iter().rposition(|&c| c == b'\n')? + 1;
        let lines: Vec<u8> = b.bytes.drain(..end).collect();
        Some(String::from_utf8_lossy(&lines).into_owned())
    }

    /// What was captured (and forgets it).
    pub(crate) fn take(&self) -> Captured {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&std::mem::take(&mut b.bytes)).into_owned();
        let tail: Vec<u8> = std::mem::take(&mut b.tail).into();
        let tail = String::from_utf8_lossy(&tail).into_owned();
        // The tail may start inside a line: from its first whole one.
        let tail = match tail.split_once('\n') {
            Some((_, rest)) if b.truncated => rest.to_string(),
            _ => String::new(),
        };
        Captured {
            text,
            truncated: b.truncated,
            tail,
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = b.cap.saturating_sub(b.kept);
        let n = buf.len().min(room);
        b.bytes.extend_from_slice(&buf[..n]);
        b.kept += n;
        if buf.len() > room {
            b.truncated = true;
            let past = &buf[n..];
            let past = &past[past.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
            let over = (b.tail.len() + past.len()).saturating_sub(OUTPUT_TAIL_BYTES);
            b.tail.drain(..over);
            b.tail.extend(past);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
