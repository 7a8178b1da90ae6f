//! The executions running for each connection of an environment, so that
//! deleting a connection first stops them: a sync still running when its
//! connection is deleted would otherwise save records, checkpoints and
//! state after the deletion, and a new connection of the same id would
//! find them.
//!
//! Each connection has a gate: an execution passes it shared
//! ([`ConnectionRuns::enter`]) for as long as it runs; a deletion
//! ([`ConnectionRuns::close`]) asks those inside to stop and takes it
//! exclusively, so it proceeds once they have ended, and executions that
//! arrive meanwhile wait for it and then find no connection. Gates exist
//! only while someone holds or waits for them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use sluice_runtime::records::ConnectionRef;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, watch};

type Key = (String, String);

struct Gate {
    lock: Arc<RwLock<()>>,
    /// `true` while a deletion waits for the executions inside or holds
    /// the gate.
    stop: watch::Sender<bool>,
    /// The deletions waiting for or holding the gate: the stop is lifted
    /// when the last one is done (an execution let in between two
    /// deletions is stopped by the second, not run to its end first).
    closing: Mutex<usize>,
}

/// Gates by key, each with the number of handles on it.
type Gates = Arc<Mutex<HashMap<Key, (Arc<Gate>, usize)>>>;

/// One environment's gates, by connection.
#[derive(Default)]
pub struct ConnectionRuns {
    gates: Gates,
}

impl ConnectionRuns {
    fn gate(&self, conn: &ConnectionRef) -> Slot {
        self.gate_of((conn.provider_config_key.clone(), conn.connection_id.clone()))
    }

    /// A connection's gate is keyed by its integration and id; a variant's
    /// by an empty integration (no integration has that key) and its state
    /// key.
    fn gate_of(&self, key: Key) -> Slot {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let (gate, handles) = gates.entry(key.clone()).or_insert_with(|| {
            let gate = Arc::new(Gate {
                lock: Arc::new(RwLock::new(())),
                stop: watch::Sender::new(false),
                closing: Mutex::new(0),
            });
            (gate, 0)
        });
        *handles += 1;
        let gate = Arc::clone(gate);
        Slot {
            gates: self.gates.clone(),
            key,
            gate,
        }
    }

    /// Enters the connection's gate for one execution (waiting while it is
    /// being deleted). Run the execution with [`Running::until_stopped`].
    pub async fn enter(&self, conn: &ConnectionRef) -> Running {
        let slot = self.gate(conn);
        let guard = slot.gate.lock.clone().read_owned().await;
        Running {
            stop: slot.gate.stop.subscribe(),
            _guard: guard,
            _slot: slot,
        }
    }

    /// Enters the gate of a sync variant (its state key) for one of its
    /// runs, inside its connection's gate.
    pub async fn enter_variant(&self, key: &str) -> Running {
        let slot = self.gate_of((String::new(), key.to_string()));
        let guard = slot.gate.lock.clone().read_owned().await;
        Running {
            stop: slot.gate.stop.subscribe(),
            _guard: guard,
            _slot: slot,
        }
    }

    /// Stops a sync variant's run and waits for it to end; until the
    /// answer is dropped, new ones wait.
    pub async fn close_variant(&self, key: &str) -> Closed {
        self.close_slot(self.gate_of((String::new(), key.to_string())))
            .await
    }

    /// Stops the connection's executions and waits for them to end; until
    /// the answer is dropped, new ones wait.
    pub async fn close(&self, conn: &ConnectionRef) -> Closed {
        self.close_slot(self.gate(conn)).await
    }

    async fn close_slot(&self, slot: Slot) -> Closed {
        {
            let mut closing = slot.gate.closing.lock().unwrap_or_else(|e| e.into_inner());
            *closing += 1;
            slot.gate.stop.send_replace(true);
        }
        // Made before the wait: should the deletion be abandoned while it
        // waits (its request dropped), dropping this lifts the stop.
        let mut closed = Closed { guard: None, slot };
        closed.guard = Some(closed.slot.gate.lock.clone().write_owned().await);
        closed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.gates.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A handle on a gate; the last one dropped forgets it.
struct Slot {
    gates: Gates,
    key: Key,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Handles are counted under the map's lock, made and dropped
        // alike, so two dropped at once cannot both leave the gate there.
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, handles)) = gates.get_mut(&self.key) {
            *handles = handles.saturating_sub(1);
            if *handles == 0 {
                gates.remove(&self.key);
            }
        }
    }
}

/// An execution inside its connection's gate.
pub struct Running {
    stop: watch::Receiver<bool>,
    // Released before the slot is dropped (fields drop in order).
    _guard: OwnedRwLockReadGuard<()>,
    _slot: Slot,
}

impl Running {
    /// Runs `work` unless the connection is deleted first: `None` when a
    /// deletion stopped it (the work is dropped where it stands, as a
    /// timeout drops it).
    pub async fn until_stopped<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut stop = self.stop.clone();
        tokio::select! {
            biased;
            out = work => Some(out),
            _ = stop.wait_for(|s| *s) => None,
        }
    }
}

/// A deletion's hold on a connection's gate.
pub struct Closed {
    guard: Option<OwnedRwLockWriteGuard<()>>,
    slot: Slot,
}

impl Drop for Closed {
    fn drop(&mut self) {
        // Executions that waited run unstopped after the deletion, unless
        // another deletion waits too.
        {
            let mut closing = self
                .slot
                .gate
                .closing
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *closing = closing.saturating_sub(1);
            self.slot.gate.stop.send_replace(*closing > 0);
        }
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn conn(id: &str) -> ConnectionRef {
        ConnectionRef {
            provider_config_key: "p".into(),
            connection_id: id.into(),
        }
    }

    #[tokio::test]
    async fn a_deletion_stops_the_runs_inside_and_holds_new_ones_until_it_is_done() {
        let runs = Arc::new(ConnectionRuns::default());
        let inside = runs.enter(&conn("a")).await;
        let other = runs.enter(&conn("b")).await;
        let closing = tokio::spawn({
            let runs = runs.clone();
            async move { runs.close(&conn("a")).await }
        });
        // The run inside is told to stop; the other connection's is not.
        let stopped = inside
            .until_stopped(tokio::time::sleep(Duration::from_secs(30)))
            .await;
        assert_eq!(stopped, None);
        let ran = tokio::time::timeout(
            Duration::from_millis(50),
            other.until_stopped(tokio::time::sleep(Duration::from_millis(1))),
        )
        .await;
        assert_eq!(ran, Ok(Some(())));
        // The deletion waits for it to end.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished());
        drop(inside);
        let closed = tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap()
            .unwrap();
        // A run arriving now waits for the deletion, then runs unstopped.
        let late = tokio::spawn({
            let runs = runs.clone();
            async move {
                let r = runs.enter(&conn("a")).await;
                r.until_stopped(async { 7 }).await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!late.is_finished());
        drop(closed);
        assert_eq!(late.await.unwrap(), Some(7));
        drop(other);
        assert_eq!(runs.len(), 0, "unused gates are forgotten");

        // A deletion abandoned while it waits lifts its stop.
        let inside = runs.enter(&conn("a")).await;
        let abandoned =
            tokio::time::timeout(Duration::from_millis(20), runs.close(&conn("a"))).await;
        assert!(abandoned.is_err());
        let ran = inside.until_stopped(async { 1 }).await;
        assert_eq!(ran, Some(1), "runs go on after an abandoned deletion");
        drop(inside);

        // Two deletions queued: a run let in between them is stopped by
        // the second at once, not run to its end first.
        let first = runs.close(&conn("a")).await;
        let between = tokio::spawn({
            let runs = runs.clone();
            async move {
                let r = runs.enter(&conn("a")).await;
                r.until_stopped(tokio::time::sleep(Duration::from_secs(30)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn({
            let runs = runs.clone();
            async move { runs.close(&conn("a")).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let stopped = tokio::time::timeout(Duration::from_secs(5), between)
            .await
            .expect("the run between the deletions was not stopped")
            .unwrap();
        assert_eq!(stopped, None);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap();
        drop(second);
        let ran = runs
            .enter(&conn("a"))
            .await
            .until_stopped(async { 2 })
            .await;
        assert_eq!(ran, Some(2), "the stop is lifted after the last deletion");
    }
}
