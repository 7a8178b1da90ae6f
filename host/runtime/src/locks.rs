//! Script locks (`nango.tryAcquireLock`, `releaseLock`, `releaseAllLocks`).
//!
//! As in the original, a lock is an environment's: every execution of the
//! environment contends for the same keys, whatever its connection or
//! script, and an execution (the owner) holds a key until its time to live
//! runs out, it releases the key, or the execution ends (the runtime
//! releases what an execution still holds when its store is dropped, so a
//! trap, a timeout or a cancelled request release them too). The same
//! owner acquiring again renews its lock; a lapsed lock is free. The table
//! is in memory: owners are executions of this process, so a restart, which
//! ends them all, rightly frees every lock. A [`crate::exec::Services`] takes
//! the environment's table; one built without one (a dry run) has its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest key, in UTF-16 code units (JavaScript's `length`, which the
/// original checks).
pub const MAX_KEY_LENGTH: usize = 255;

/// The longest key in bytes: a UTF-16 code unit is at most 3 bytes of
/// UTF-8 (a character of 4 bytes is 2 units), so a longer key is refused
/// without counting its units.
pub const MAX_KEY_BYTES: usize = 3 * MAX_KEY_LENGTH;

/// The shortest time between two sweeps of a full table for lapsed
/// locks (and of one execution's list of keys): a sweep walks them all
/// under the table's mutex, so a script asking for fresh keys of a full
/// table in a loop does not walk 100,000 entries per call. A lapsed lock
/// makes room at the next sweep, at most this long after it lapsed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What a lock call costs the host, in bytes of its work
/// (`HostState::charge`, besides the key's own bytes): the mutex, a hash
/// and a table entry, under a microsecond.
pub const CALL_WORK_BYTES: usize = 256;

/// Locks held in one environment at once, past which an acquire is
/// refused: the table is memory, and a script looping over fresh keys must
/// not grow it without end.
pub const MAX_HELD: usize = 100_000;

/// Locks one execution may hold at once (lapsed ones not counted): no
/// single execution fills its environment's table.
pub const MAX_HELD_BY_ONE: usize = 10_000;

/// Why a lock cannot be taken (the first two are the original's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("Invalid lock key (must be between 1 and 255 characters)")]
    Key,
    #[error("Invalid lock TTL (must be greater than 0)")]
    Ttl,
    #[error(
        "too many locks are held in this environment ({MAX_HELD}); release locks when done with them"
    )]
    Full,
    #[error(
        "this execution holds too many locks ({MAX_HELD_BY_ONE}); release locks when done with them"
    )]
    TooManyHeld,
}

impl LockError {
    /// The error's code for a script: the original's messages are plain
    /// errors; sluice's bounds have their own code.
    pub fn code(&self) -> &'static str {
        match self {
            LockError::Key | LockError::Ttl => "invalid_lock",
            LockError::Full | LockError::TooManyHeld => "too_many_locks",
        }
    }
}

/// Who holds a lock: one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockOwner(u64);

impl LockOwner {
    /// An owner no other execution of this process has.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for LockOwner {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    owner: LockOwner,
    until: Instant,
}

/// One environment's locks.
#[derive(Debug, Default)]
pub struct Locks {
    held: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<String, Held>,
    /// When the table was last swept for lapsed locks.
    swept: Option<Instant>,
}

impl std::ops::Deref for Table {
    type Target = HashMap<String, Held>;
    fn deref(&self) -> &Self::Target {
        &self.keys
    }
}

impl std::ops::DerefMut for Table {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.keys
    }
}

/// Whether a sweep last made at `last` may be made again `now`.
fn may_sweep(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL)
}

impl Locks {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the mutex cannot leave the map half
        // changed (every change is one insert or remove).
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `key` for `owner` until `ttl` from now: false when another
    /// owner holds it and its time has not run out.
    pub fn try_acquire(
        &self,
        owner: LockOwner,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        self.try_acquire_at(owner, key, ttl, Instant::now())
    }

    fn try_acquire_at(
        &self,
        owner: LockOwner,
        key: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<bool, LockError> {
        // By its bytes first: the units of a key of any size are not
        // counted.
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(LockError::Key);
        }
        if key.encode_utf16().count() > MAX_KEY_LENGTH {
            return Err(LockError::Key);
        }
        if ttl.is_zero() {
            return Err(LockError::Ttl);
        }
        // A time to live past what an `Instant` holds is as good as never.
        let until = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let mut table = self.table();
        match table.get_mut(key) {
            Some(held) if held.owner != owner && held.until > now => return Ok(false),
            Some(held) => {
                *held = Held { owner, until };
                return Ok(true);
            }
            None => {}
        }
        if table.len() >= MAX_HELD {
            if may_sweep(table.swept, now) {
                table.swept = Some(now);
                table.retain(|_, h| h.until > now);
            }
            if table.len() >= MAX_HELD {
                return Err(LockError::Full);
            }
        }
        table.insert(key.to_string(), Held { owner, until });
        Ok(true)
    }

    /// Releases `key` if `owner` holds it (its time not run out): whether
    /// it did.
    pub fn release(&self, owner: LockOwner, key: &str) -> bool {
        let mut table = self.table();
        match table.get(key) {
            Some(held) if held.owner == owner => {
                let live = held.until > Instant::now();
                table.remove(key);
                live
            }
            _ => false,
        }
    }

    /// Those of `keys` that `owner` holds (its time not run out `now`).
    fn still_held(&self, owner: LockOwner, keys: HashSet<String>, now: Instant) -> HashSet<String> {
        let table = self.table();
        keys.into_iter()
            .filter(|k| {
                table
                    .get(k)
                    .is_some_and(|h| h.owner == owner && h.until > now)
            })
            .collect()
    }

    /// Releases those of `keys` that `owner` still holds.
    pub fn release_all<'a>(&self, owner: LockOwner, keys: impl IntoIterator<Item = &'a str>) {
        let mut table = self.table();
        for key in keys {
            if table.get(key).is_some_and(|h| h.owner == owner) {
                table.remove(key);
            }
        }
    }

    /// How many keys the table holds (lapsed ones not yet taken over
    /// included).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The locks of one execution: it takes and releases them through its
/// holder, and whatever it still holds is released when the holder is
/// dropped (with the execution's store, however the execution ended).
#[derive(Debug)]
pub struct LockHolder {
    locks: Arc<Locks>,
    owner: LockOwner,
    taken: HashSet<String>,
    /// When `taken` was last pruned of lapsed and taken-over keys.
    pruned: Option<Instant>,
}

impl LockHolder {
    pub fn new(locks: Arc<Locks>) -> Self {
        Self {
            locks,
            owner: LockOwner::new(),
            taken: HashSet::new(),
            pruned: None,
        }
    }

    pub fn try_acquire(&mut self, key: &str, ttl: Duration) -> Result<bool, LockError> {
        self.try_acquire_at(key, ttl, Instant::now())
    }

    fn try_acquire_at(
        &mut self,
        key: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<bool, LockError> {
        if self.taken.len() >= MAX_HELD_BY_ONE && !self.taken.contains(key) {
            // Lapsed and taken-over keys leave the list first (a walk of
            // the whole list, at most once per interval).
            if may_sweep(self.pruned, now) {
                self.pruned = Some(now);
                self.taken =
                    self.locks
                        .still_held(self.owner, std::mem::take(&mut self.taken), now);
            }
            if self.taken.len() >= MAX_HELD_BY_ONE {
                return Err(LockError::TooManyHeld);
            }
        }
        let taken = self.locks.try_acquire_at(self.owner, key, ttl, now)?;
        if taken {
            self.taken.insert(key.to_string());
        }
        Ok(taken)
    }

    pub fn release(&mut self, key: &str) -> bool {
        self.taken.remove(key);
        self.locks.release(self.owner, key)
    }

    pub fn release_all(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        self.locks
            .release_all(self.owner, taken.iter().map(String::as_str));
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    #[test]
    fn one_owner_at_a_time_renewed_by_its_owner_and_free_once_released() {
        let locks = Locks::default();
        let (a, b) = (LockOwner::new(), LockOwner::new());
        assert_eq!(locks.try_acquire(a, "k", LONG), Ok(true));
        assert_eq!(locks.try_acquire(b, "k", LONG), Ok(false));
        assert_eq!(locks.try_acquire(a, "k", LONG), Ok(true));
        assert_eq!(locks.try_acquire(b, "other", LONG), Ok(true));
        assert!(!locks.release(b, "k"), "b does not hold k");
        assert!(locks.release(a, "k"));
        assert!(!locks.release(a, "k"), "released already");
        assert_eq!(locks.try_acquire(b, "k", LONG), Ok(true));
        locks.release_all(b, ["k", "other", "never"]);
        assert!(locks.is_empty());
    }

    #[test]
    fn a_lapsed_lock_is_free_and_its_release_says_so() {
        let locks = Locks::default();
        let (a, b) = (LockOwner::new(), LockOwner::new());
        assert_eq!(
            locks.try_acquire(a, "k", Duration::from_millis(1)),
            Ok(true)
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(!locks.release(a, "k"), "a's lock had lapsed");
        assert_eq!(
            locks.try_acquire(a, "k", Duration::from_millis(1)),
            Ok(true)
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(locks.try_acquire(b, "k", LONG), Ok(true));
        assert_eq!(locks.try_acquire(a, "k", LONG), Ok(false));
        // Releasing everything a held leaves b's lock alone.
        locks.release_all(a, ["k"]);
        assert_eq!(locks.len(), 1);
    }

    #[test]
    fn a_dropped_holder_releases_what_it_still_holds() {
        let locks = Arc::new(Locks::default());
        let mut a = LockHolder::new(locks.clone());
        let mut b = LockHolder::new(locks.clone());
        assert_eq!(a.try_acquire("k", LONG), Ok(true));
        assert_eq!(a.try_acquire("j", LONG), Ok(true));
        assert_eq!(b.try_acquire("k", LONG), Ok(false));
        assert!(a.release("j"));
        drop(a);
        assert_eq!(b.try_acquire("k", LONG), Ok(true));
        assert_eq!(locks.len(), 1);
        b.release_all();
        assert!(locks.is_empty());
    }

    #[test]
    fn one_execution_holds_a_bounded_number_whose_lapsed_ones_make_room() {
        let locks = Arc::new(Locks::default());
        let mut a = LockHolder::new(locks.clone());
        for i in 0..MAX_HELD_BY_ONE {
            assert_eq!(
                a.try_acquire(&i.to_string(), Duration::from_millis(1)),
                Ok(true)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
        // All lapsed: the list is pruned, not grown past the bound.
        for i in 0..MAX_HELD_BY_ONE {
            assert_eq!(a.try_acquire(&format!("b{i}"), LONG), Ok(true));
        }
        assert_eq!(a.taken.len(), MAX_HELD_BY_ONE);
        assert_eq!(a.try_acquire("one more", LONG), Err(LockError::TooManyHeld));
        assert_eq!(LockError::TooManyHeld.code(), "too_many_locks");
        // Its own held key is still renewed, and another execution still
        // takes keys of its own.
        assert_eq!(a.try_acquire("b0", LONG), Ok(true));
        let mut b = LockHolder::new(locks.clone());
        assert_eq!(b.try_acquire("one more", LONG), Ok(true));
        drop(a);
        let mut c = LockHolder::new(locks.clone());
        assert_eq!(c.try_acquire("b0", LONG), Ok(true), "released with a");
        assert_eq!(c.try_acquire("one more", LONG), Ok(false), "b's");
    }

    #[test]
    fn keys_and_ttls_are_checked_as_the_original_checks_them() {
        let locks = Locks::default();
        let a = LockOwner::new();
        assert_eq!(locks.try_acquire(a, "", LONG), Err(LockError::Key));
        assert_eq!(
            locks.try_acquire(a, &"k".repeat(256), LONG),
            Err(LockError::Key)
        );
        assert_eq!(locks.try_acquire(a, &"k".repeat(255), LONG), Ok(true));
        // JavaScript's length: an astral character counts two.
        assert_eq!(
            locks.try_acquire(a, &"😀".repeat(128), LONG),
            Err(LockError::Key)
        );
        assert_eq!(
            locks.try_acquire(a, "k", Duration::ZERO),
            Err(LockError::Ttl)
        );
        assert_eq!(locks.try_acquire(a, "k", Duration::MAX), Ok(true));
        assert_eq!(
            LockError::Key.to_string(),
            "Invalid lock key (must be between 1 and 255 characters)"
        );
    }

    #[test]
    fn the_table_is_bounded_and_lapsed_locks_make_room() {
        let locks = Locks::default();
        let a = LockOwner::new();
        for i in 0..MAX_HELD {
            assert_eq!(
                locks.try_acquire(a, &i.to_string(), Duration::from_millis(1)),
                Ok(true)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(locks.try_acquire(a, "one more", LONG), Ok(true));
        assert_eq!(locks.len(), 1);
        for i in 1..MAX_HELD {
            assert_eq!(locks.try_acquire(a, &i.to_string(), LONG), Ok(true));
        }
        assert_eq!(locks.try_acquire(a, "full", LONG), Err(LockError::Full));
        // Renewing a held key still works when full.
        assert_eq!(locks.try_acquire(a, "one more", LONG), Ok(true));
    }

    /// A full table is swept for lapsed locks at most once per
    /// [`SWEEP_INTERVAL`]: an acquire of a fresh key in a full table does
    /// not walk every entry each time (a lapsed lock makes room at the
    /// next sweep); an execution's own list is pruned the same way.
    #[test]
    fn a_full_table_is_swept_at_most_once_per_interval() {
        let locks = Arc::new(Locks::default());
        let a = LockOwner::new();
        let t0 = Instant::now();
        let short = Duration::from_millis(100);
        assert_eq!(locks.try_acquire_at(a, "short", short, t0), Ok(true));
        for i in 1..MAX_HELD {
            assert_eq!(locks.try_acquire_at(a, &i.to_string(), LONG, t0), Ok(true));
        }
        // Swept now: nothing has lapsed.
        assert_eq!(locks.try_acquire_at(a, "x", LONG, t0), Err(LockError::Full));
        // `short` has lapsed, and is not swept within the interval.
        let t1 = t0 + SWEEP_INTERVAL / 2;
        assert_eq!(locks.try_acquire_at(a, "x", LONG, t1), Err(LockError::Full));
        assert_eq!(locks.len(), MAX_HELD);
        // Past it, the next sweep makes its room.
        let t2 = t0 + SWEEP_INTERVAL;
        assert_eq!(locks.try_acquire_at(a, "x", LONG, t2), Ok(true));
        assert_eq!(locks.len(), MAX_HELD);
        assert_eq!(locks.try_acquire_at(a, "y", LONG, t2), Err(LockError::Full));

        let locks = Arc::new(Locks::default());
        let mut holder = LockHolder::new(locks.clone());
        assert_eq!(holder.try_acquire_at("short", short, t0), Ok(true));
        for i in 1..MAX_HELD_BY_ONE {
            assert_eq!(holder.try_acquire_at(&i.to_string(), LONG, t0), Ok(true));
        }
        assert_eq!(
            holder.try_acquire_at("x", LONG, t0),
            Err(LockError::TooManyHeld)
        );
        assert_eq!(
            holder.try_acquire_at("x", LONG, t1),
            Err(LockError::TooManyHeld)
        );
        assert_eq!(holder.try_acquire_at("x", LONG, t2), Ok(true));
    }

    /// A key is refused by its bytes before its UTF-16 units are counted;
    /// the longest key in units is within the bound in bytes.
    #[test]
    fn a_key_is_bounded_by_its_bytes_first() {
        let locks = Locks::default();
        let a = LockOwner::new();
        assert_eq!(
            locks.try_acquire(a, &"k".repeat(10 << 20), LONG),
            Err(LockError::Key)
        );
        // 255 units of 3 bytes each: 765 bytes, the most a key may have.
        let widest = "€".repeat(MAX_KEY_LENGTH);
        assert_eq!(widest.len(), MAX_KEY_BYTES);
        assert_eq!(locks.try_acquire(a, &widest, LONG), Ok(true));
        assert_eq!(
            locks.try_acquire(a, &format!("{widest}k"), LONG),
            Err(LockError::Key)
        );
        // 127 astral characters: 254 units, 508 bytes.
        assert_eq!(locks.try_acquire(a, &"😀".repeat(127), LONG), Ok(true));
    }
}
