//! Per-environment (tenant) limits and the runtime's own sizing, each with a
//! reason for its default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ScriptKind;

/// What one environment's executions may use. Every field has a default, so a
/// config file only names what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU budget per execution in fuel units (about one per wasm
    /// instruction, and 16 per byte of the host's work for the script:
    /// `HOST_FUEL_PER_BYTE`); `None` meters nothing. The default, 10^11, is minutes of
    /// CPU: far more than a healthy script uses, small enough to end a runaway
    /// loop. Ignored by a runtime that does not meter fuel
    /// (`RuntimeConfig::meter_fuel`).
    pub fuel: Option<u64>,
    /// The most any one linear memory of an execution may grow to. A
    /// componentize-js script needs ~10 MiB to start; 256 MiB leaves room for
    /// large pages of records.
    pub memory_bytes: usize,
    /// Wall-clock limits per script kind: the original's.
    pub timeouts: Timeouts,
    /// Hosts scripts may call besides the provider's base URL host. An entry
    /// is a host name (`api.example.com`), `*.example.com`, or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// The largest upstream response body a script may receive.
    pub max_response_bytes: usize,
    /// The largest request body, records batch or metadata a script may send.
    pub max_payload_bytes: usize,
    /// Logs kept per execution; later ones are counted, not kept.
    pub max_log_entries: usize,
    /// Memory the logs kept per execution may take (messages, and each
    /// value of their `meta` at its in-memory size); later ones are
    /// counted, not kept. 16 MiB holds 10,000 ordinary lines; without it a
    /// script logging `[0,0,…]` 10,000 times held gigabytes (a value parsed
    /// takes ~37 times its text).
    pub max_log_bytes: usize,
    /// Bytes of guest stdout/stderr kept per execution.
    pub max_output_bytes: usize,
    /// How deep `triggerAction` may nest.
    pub max_trigger_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Some(100_000_000_000),
            memory_bytes: 256 << 20,
            timeouts: Timeouts::default(),
            allowed_hosts: Vec::new(),
            max_response_bytes: 64 << 20,
            max_payload_bytes: 64 << 20,
            max_log_entries: 10_000,
            max_log_bytes: 16 << 20,
            max_output_bytes: 1 << 20,
            max_trigger_depth: 4,
        }
    }
}

/// Wall-clock deadlines per script kind, in seconds in config files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    #[serde(with = "secs")]
    pub action: Duration,
    #[serde(with = "secs")]
    pub sync: Duration,
    #[serde(with = "secs")]
    pub webhook: Duration,
    #[serde(with = "secs")]
    pub on_event: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            action: Duration::from_secs(15 * 60),
            sync: Duration::from_secs(24 * 3600),
            webhook: Duration::from_secs(3600),
            on_event: Duration::from_secs(5 * 60),
        }
    }
}

/// The least `memory_bytes`: a componentize-js script needs about 10 MiB
/// to start.
pub const MIN_MEMORY_BYTES: usize = 16 << 20;
/// The longest time limit a script kind may have: a year (a clock
/// deadline past what a time can hold would stop every run of it).
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// The least `fuel`: below it no script gets past its start.
pub const MIN_FUEL: u64 = 1_000_000;

impl Limits {
    /// What makes these limits unusable (every script would fail with
    /// them), in words naming the field; `None` when they are usable.
    pub fn problem(&self) -> Option<String> {
        if self.memory_bytes < MIN_MEMORY_BYTES {
            return Some(format!(
                "`memory_bytes: {}` is below {MIN_MEMORY_BYTES} (16 MiB): no script could start",
                self.memory_bytes
            ));
        }
        if let Some(fuel) = self.fuel
            && fuel < MIN_FUEL
        {
            return Some(format!(
                "`fuel: {fuel}` is below {MIN_FUEL}: no script could start (leave it out for the default)"
            ));
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("action", t.action),
            ("sync", t.sync),
            ("webhook", t.webhook),
            ("on_event", t.on_event),
        ] {
            if d.is_zero() {
                return Some(format!(
                    "`timeouts.{name}` is 0: every such script would time out at once"
                ));
            }
            if d > MAX_TIMEOUT {
                return Some(format!(
                    "`timeouts.{name}` is {} s, more than a year ({} s): leave it out for the default",
                    d.as_secs(),
                    MAX_TIMEOUT.as_secs()
                ));
            }
        }
        for host in &self.allowed_hosts {
            // Matched trimmed (`proxy::in_allowlist`): checked so too.
            let host = host.trim();
            let bad = host.is_empty()
                || host.contains("://")
                || host.contains(['/', '?', '#', '@'])
                || host.chars().any(char::is_whitespace);
            if bad {
                return Some(format!(
                    "`allowed_hosts` entry `{host}` is not a host name: give `api.example.com`, `*.example.com` or `host:port`, without a scheme or path"
                ));
            }
        }
        None
    }
}

impl Timeouts {
    /// The deadline of an execution of `kind`; webhook calls of a sync use
    /// `webhook`.
    pub fn for_call(&self, kind: ScriptKind, webhook: bool) -> Duration {
        match kind {
            ScriptKind::Sync if webhook => self.webhook,
            ScriptKind::Sync => self.sync,
            ScriptKind::Action => self.action,
            ScriptKind::OnEvent => self.on_event,
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// The default bound of the precompiled-component cache: 10 GiB, a few
/// hundred TypeScript components (each 40–120 MB compiled).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 10 << 30;

/// Sizing of the runtime itself, shared by every environment.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where precompiled components are cached.
    pub cache_dir: std::path::PathBuf,
    /// Most bytes of precompiled components kept in `cache_dir`: past it,
    /// the least recently used are deleted after each new one is written
    /// (a deleted one is compiled again when next loaded).
    pub cache_max_bytes: u64,
    /// Executions that may be live at once: sizes the pooling allocator. Each
    /// slot reserves address space (not memory) for its linear memories.
    pub max_concurrent: u32,
    /// Upper bound of any environment's `memory_bytes` (the pool's slot size).
    pub max_memory_bytes: usize,
    /// Use the pooling allocator (fast instantiation); off, each execution
    /// maps its own memory.
    pub pooling: bool,
    /// How often the epoch ticks: the granularity of deadlines and of
    /// yielding a busy guest to other executions when fuel is not metered
    /// (a metered guest yields every few million fuel units instead).
    pub epoch_tick: Duration,
    /// First wait of the exponential retry backoff (the original's 3 s).
    pub retry_base_delay: Duration,
    /// Longest wait between retries (the original's 10 min).
    pub retry_max_delay: Duration,
    /// Count fuel, so environments' `fuel` budgets hold. Metering makes
    /// JavaScript guests markedly slower (see the `ts_vs_node` bench); off,
    /// a runaway guest is still ended by its wall-clock deadline.
    pub meter_fuel: bool,
    /// Write `/tmp/perf-<pid>.map` naming compiled wasm functions, for
    /// profiling with `perf` (ARCHITECTURE.md, "Profiling").
    pub perf_map: bool,
    /// Most bytes of linear memory all executions may hold at once (each is
    /// also bounded by its environment's `memory_bytes`), and one
    /// environment's executions three quarters of it: a growth past either
    /// ends that execution with `MemoryBudget`. Default: half the machine's
    /// memory (8 GiB where it cannot be read).
    pub memory_budget_bytes: usize,
}

/// Half of the memory the process may use: the machine's
/// (`/proc/meminfo`), or its container's when a cgroup limit is lower
/// (v2 `memory.max`, v1 `memory.limit_in_bytes`); 8 GiB when neither can
/// be read.
pub fn default_memory_budget() -> usize {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
        })
        .map(|kib| kib.saturating_mul(1024));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|f| cgroup_limit(&std::fs::read_to_string(f).ok()?));
    match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c) / 2,
        (Some(n), None) | (None, Some(n)) => n / 2,
        (None, None) => 8 << 30,
    }
}

/// A cgroup memory limit file's bytes; none for `max` (v2's "no limit")
/// or v1's page-rounded `i64::MAX`.
fn cgroup_limit(text: &str) -> Option<usize> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 60).then(|| usize::try_from(n).unwrap_or(usize::MAX))
}

impl RuntimeConfig {
    pub fn new(cache_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_concurrent: 200,
            max_memory_bytes: 1 << 30,
            pooling: true,
            epoch_tick: Duration::from_millis(10),
            retry_base_delay: Duration::from_secs(3),
            retry_max_delay: Duration::from_secs(600),
            meter_fuel: true,
            perf_map: false,
            memory_budget_bytes: default_memory_budget(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup_limit;

    #[test]
    fn a_cgroup_limit_is_read_and_no_limit_is_none() {
        assert_eq!(cgroup_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(cgroup_limit("max\n"), None);
        // cgroup v1's "unlimited": i64::MAX rounded down to a page.
        assert_eq!(cgroup_limit("9223372036854771712"), None);
        assert_eq!(cgroup_limit(""), None);
    }
}
