//! `nango:scripts/log`.

use serde_json::Value;

use super::HostState;
use crate::bindings::log::{self, Level};
use crate::exec::{LogEntry, LogLevel, LogSource};

/// The original's persisted message cap, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 10_000;
/// The original's cap on a serialized log, in bytes.
pub(crate) const MAX_META_BYTES: usize = 99_000;

/// Cuts `message` to [`MAX_MESSAGE_CHARS`] with the original's suffix.
pub(crate) fn truncate_message(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message,
        Some((cut, _)) => format!("{}... (truncated)", &message[..cut]),
    }
}

/// `text` as a string, invalid UTF-8 sequences replaced with U+FFFD.
pub(crate) fn utf8_lossy(text: Vec<u8>) -> String {
    String::from_utf8(text).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl log::Host for HostState {
    fn log(
        &mut self,
        level: Level,
        message: Vec<u8>,
        meta: Option<Vec<u8>>,
    ) -> wasmtime::Result<()> {
        self.charge(message.len() + meta.as_ref().map_or(0, Vec::len));
        let (level, rank) = match level {
            Level::Debug => (LogLevel::Debug, 0),
            Level::Info => (LogLevel::Info, 1),
            Level::Warn => (LogLevel::Warn, 2),
            Level::Error => (LogLevel::Error, 3),
        };
        // The environment's `NANGO_LOGGER_LEVEL`, as the original's: lines
        // below it are not kept (unset, every line is: the original's
        // default keeps `warn` and above).
        if rank < self.least_log_rank() {
            return Ok(());
        }
        // What the script printed before this call comes before it.
        self.collect_printed_lines();
        let mut message = truncate_message(utf8_lossy(message));
        let meta = match meta {
            None => None,
            Some(m) if m.len() > MAX_META_BYTES => {
                message.push_str(" ... (truncated, payload was too large)");
                None
            }
            Some(m) if !self.log_room(message.len() + m.len()) => {
                // Its text alone is past what the logs may still take: not
                // parsed, only counted.
                self.logs_dropped += 1;
                return Ok(());
            }
            Some(m) => {
                Some(serde_json::from_slice(&m).unwrap_or_else(|_| Value::String(utf8_lossy(m))))
            }
        };
        self.push_log(LogEntry {
            at: chrono::Utc::now(),
            level,
            source: LogSource::User,
            message,
            meta,
        });
        Ok(())
    }
}

/// The last lines of a guest's stderr are kept even when its logs used
/// their budget: a panic's message is there, and it says why the script
/// failed (bounded: this many lines of at most `MAX_MESSAGE_CHARS`).
const STDERR_TAIL_LINES: usize = 20;

impl HostState {
    /// The least level of a script's line kept: `NANGO_LOGGER_LEVEL`
    /// among the environment's variables (`debug`, `info`, `warn`,
    /// `error`, `off`), else every line.
    fn least_log_rank(&self) -> u8 {
        let set = self
            .services
            .environment
            .variables
            .iter()
            .find(|(name, _)| name == "NANGO_LOGGER_LEVEL");
        match set.map(|(_, v)| v.as_str()) {
            None | Some("debug") => 0,
            Some("info") => 1,
            Some("error") => 3,
            Some("off") => 4,
            // `warn`, and a value it does not know, as the original's.
            Some(_) => 2,
        }
    }

    /// Moves the whole lines the guest printed so far into its logs, so that
    /// they stand in order with its log calls (what is left, and the last
    /// lines of stderr, [`HostState::collect_output`] takes at the end).
    pub(crate) fn collect_printed_lines(&mut self) {
        for (stream, level) in [
            (self.stdout.clone(), LogLevel::Info),
            (self.stderr.clone(), LogLevel::Error),
        ] {
            let Some(text) = stream.take_lines() else {
                continue;
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                self.push_log(LogEntry {
                    at: chrono::Utc::now(),
                    level,
                    source: LogSource::User,
                    message: truncate_message(line.to_string()),
                    meta: None,
                });
            }
        }
    }

    /// Moves the guest's captured stdout and stderr into its logs, a line each.
    pub(crate) fn collect_output(&mut self) {
        for (stream, level) in [
            (self.stdout.clone(), LogLevel::Info),
            (self.stderr.clone(), LogLevel::Error),
        ] {
            let captured = stream.take();
            let head: Vec<&str> = captured
                .text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            let tail: Vec<&str> = captured
                .tail
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            // The last lines of stderr, wherever they are, go past the
            // budget.
            let total = head.len() + tail.len();
            let tail_from = total.saturating_sub(STDERR_TAIL_LINES);
            // The connection's secrets are not kept from the guest's output
            // (a panic's message may quote an upstream answer that echoes
            // the token).
            let secrets = self.secrets.clone();
            let entry = |line: &str| LogEntry {
                at: chrono::Utc::now(),
                level,
                source: LogSource::User,
                message: truncate_message(secrets.redact(line)),
                meta: None,
            };
            for (i, line) in head.iter().enumerate() {
                if level == LogLevel::Error && i >= tail_from {
                    self.push_log_past_budget(entry(line));
                } else {
                    self.push_log(entry(line));
                }
            }
            if captured.truncated {
                self.internal_log(
                    LogLevel::Warn,
                    format!(
                        "guest output past {} bytes was dropped but for its last {} bytes",
                        self.limits().max_output_bytes,
                        super::OUTPUT_TAIL_BYTES
                    ),
                );
            }
            for (i, line) in tail.iter().enumerate() {
                if level == LogLevel::Error && head.len() + i >= tail_from {
                    self.push_log_past_budget(entry(line));
                } else {
                    self.push_log(entry(line));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let m = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let t = truncate_message(m);
        assert!(t.ends_with("... (truncated)"));
        assert_eq!(
            t.chars().count(),
            MAX_MESSAGE_CHARS + "... (truncated)".len()
        );
        assert_eq!(truncate_message("short".into()), "short");
    }
}
