//! Whether the store takes writes: `GET /health` asks it (one durable
//! write, at most one a second, shared by the requests that come
//! meanwhile), and the operator hears of a store that fails (a full disk,
//! a failing device) and of one that works again, one line at a time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_store::Store;

use crate::config::EventLog;

/// How long a probe's answer stands for the requests after it.
const PROBE_FRESH: Duration = Duration::from_secs(1);
/// How long a probe may wait for the store before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one line about failures this often (the others are counted).
const SAY_EVERY: Duration = Duration::from_secs(10);

/// Probes that time out in a row before the store counts as failing (a
/// busy store's queue can hold one probe up; a stuck one holds them all).
const TIMEOUTS_TO_FAIL: u32 = 3;

#[derive(Default)]
struct State {
    failing: bool,
    last_said: Option<Instant>,
    unsaid: u64,
    timeouts: u32,
}

#[derive(Default)]
pub struct StoreHealth {
    state: Mutex<State>,
    probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl StoreHealth {
    /// A request failed for the store: said (at most once every ten
    /// seconds, with how many were not said).
    pub fn failed(&self, events: &EventLog, message: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failing = true;
        let now = Instant::now();
        if s.last_said
            .is_some_and(|t| now.duration_since(t) < SAY_EVERY)
        {
            s.unsaid += 1;
            return;
        }
        let more = std::mem::take(&mut s.unsaid);
        s.last_said = Some(now);
        drop(s);
        let more = if more > 0 {
            format!(" ({more} more failures since the last line)")
        } else {
            String::new()
        };
        events.say(&format!(
            "{message}{more}; GET /health answers 503 until a write succeeds (a full disk: free space; sled then needs a restart)"
        ));
    }

    /// Whether the store is failing now (`GET /health` answers 503).
    pub fn failing(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).failing
    }

    fn recovered(&self, events: &EventLog) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::take(&mut s.failing) {
            s.last_said = None;
            s.unsaid = 0;
            drop(s);
            events.say("the store takes writes again");
        }
    }

    /// One durable write (or the answer of one made in the last second).
    /// A write that times out while `held()` (a backup holds sled's writes
    /// back) is not a failing store: a backup holds them for at most
    /// [`SLED_HOLD_LIMIT`](crate::backup::SLED_HOLD_LIMIT), then is given
    /// up, so a store that still takes no write is one that fails.
    pub async fn probe(
        &self,
        store: &Store,
        events: &EventLog,
        held: impl Fn() -> bool,
    ) -> Result<(), String> {
        let mut last = self.probe.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < PROBE_FRESH
        {
            return answer.clone();
        }
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, store.flush()).await {
            Ok(Ok(())) => {
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .timeouts = 0;
                self.recovered(events);
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed(events, &format!("the store failed: {e}"));
                Err(())
            }
            Err(_) if held() => Ok(()),
            Err(_) => {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                s.timeouts += 1;
                let stuck = s.timeouts >= TIMEOUTS_TO_FAIL;
                drop(s);
                if stuck {
                    self.failed(
                        events,
                        &format!(
                            "the store took no write within {} s, {TIMEOUTS_TO_FAIL} times in a row",
                            PROBE_TIMEOUT.as_secs()
                        ),
                    );
                    Err(())
                } else {
                    Ok(())
                }
            }
        };
        // The cause is the operator's (in the log): the route has no key.
        let answer = answer
            .map_err(|()| "the store does not take writes (the server's log says why)".to_string());
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sluice_store::{MasterKey, MemoryBackend, Store};

    use super::*;
    use crate::test_support::Full;

    #[tokio::test]
    async fn a_store_that_fails_writes_is_unhealthy_and_said_until_it_recovers() {
        let full = Arc::new(AtomicBool::new(false));
        let backend = Arc::new(Full {
            inner: MemoryBackend::new(),
            full: full.clone(),
        });
        let (store, _) = Store::open(backend, MasterKey::generate(), &[("dev".into(), None)])
            .await
            .unwrap();
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let events = {
            let said = said.clone();
            EventLog::new(move |line| said.lock().unwrap().push(line.to_string()))
        };
        let health = StoreHealth::default();
        assert_eq!(health.probe(&store, &events, || false).await, Ok(()));
        full.store(true, Ordering::SeqCst);
        // The last answer stands for a second.
        assert_eq!(health.probe(&store, &events, || false).await, Ok(()));
        tokio::time::sleep(PROBE_FRESH).await;
        // The unauthenticated answer names no cause; the operator's line does.
        let err = health.probe(&store, &events, || false).await.unwrap_err();
        assert!(err.contains("does not take writes"), "{err}");
        // Requests failing meanwhile: one line for them all within ten
        // seconds, counted in the next.
        health.failed(&events, "the store failed: x");
        health.failed(&events, "the store failed: x");
        {
            let lines = said.lock().unwrap();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("No space left on device"), "{lines:?}");
            assert!(lines[0].contains("GET /health answers 503"), "{lines:?}");
        }
        full.store(false, Ordering::SeqCst);
        tokio::time::sleep(PROBE_FRESH).await;
        assert_eq!(health.probe(&store, &events, || false).await, Ok(()));
        assert_eq!(
            said.lock().unwrap().last().map(String::as_str),
            Some("the store takes writes again")
        );
        // Healthy again: the next failure is said at once.
        health.failed(&events, "the store failed: y");
        assert_eq!(said.lock().unwrap().len(), 3);
    }
}
