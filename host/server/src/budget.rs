//! Room in memory for what clients' requests make the server hold,
//! booked before it is held: a request that would take more than there is
//! waits a moment for room, then is refused (503), and one that would take
//! more than an environment may ever hold is refused at once (413). Each
//! server has three budgets ([`Budgets`], sized by
//! `ServerConfig::max_parsed_bytes`, `max_held_upload_bytes` and
//! `max_held_body_bytes`): what the API's bodies cost once parsed into
//! values (a deploy's manifest, an action's input its run validates), the
//! components being uploaded, and the API's other bodies as they are read.
//! One environment holds at most three quarters of either, so another's
//! requests still find room. Webhooks have their own (`api::incoming`);
//! [`parse_cost`] is shared with them.
//!
//! A serde_json value costs tens of times its text (`[0,0,…]` of 70 MiB
//! took 5 GB): what is only passed on (an action's input, MCP's params)
//! is kept as text ([`check_json`] says whether a value parse would take
//! it), and what must be parsed books [`parse_cost`] first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The memory serde_json's value of a JSON text takes, at most, estimated
/// from the text without parsing it: each value (and each key) a slot of
/// [`Value`]'s size in its array's or object's storage, counted 2¼ times
/// (storage grows by doubling, and the allocator rounds up), each
/// non-empty array or object its first allocation (four slots), each
/// string its bytes and a quarter more. Measured against a counting
/// allocator (jemalloc, serde_json with `preserve_order`), never under
/// what a parse took and at most three times it (`[0,0,…]` 81 times its
/// text against 42 to 80; objects of two short strings 59 against 20;
/// GitHub-like payloads 19 against 8).
pub fn parse_cost(text: &[u8]) -> usize {
    let slot = std::mem::size_of::<Value>() * 9 / 4;
    let mut cost = 0usize;
    let (mut in_string, mut escaped, mut in_scalar, mut opened) = (false, false, false, false);
    let mut run = 0usize;
    for &c in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
                if run > 0 {
                    cost = cost.saturating_add(run + run / 4 + 16);
                }
                run = 0;
                continue;
            }
            run += 1;
            continue;
        }
        if opened && !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            opened = false;
            if c != b']' && c != b'}' {
                cost = cost.saturating_add(4 * slot);
            }
        }
        match c {
            b'"' => {
                in_string = true;
                in_scalar = false;
                cost = cost.saturating_add(slot);
            }
            b'{' | b'[' => {
                in_scalar = false;
                opened = true;
                cost = cost.saturating_add(slot);
            }
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'}' | b']' => in_scalar = false,
            _ => {
                if !in_scalar {
                    in_scalar = true;
                    cost = cost.saturating_add(slot);
                }
            }
        }
    }
    cost.saturating_add(run + run / 4)
}

/// Whether `text` is JSON that serde_json parses into a value — nested at
/// most 128 deep, its escapes whole, its numbers finite — with the parse's
/// own error when it is not, building nothing. Text kept unparsed
/// (`RawValue`, which takes any depth, lone surrogates and `1e400`) is
/// checked with this before it is kept: everything the server stores was
/// once parsed with the limit (its store reads documents without one).
pub fn check_json(text: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Shallow>(text).map(drop)
}

/// What serde_json's value of JSON text `text` holds, counted as it is
/// read without building it: a [`Value`] per value, a string's bytes, an
/// object entry's key (its bytes, a `String` and its hash). For a text
/// that is not JSON, its [`parse_cost`].
pub fn value_footprint(text: &[u8]) -> usize {
    struct Footprint;
    struct KeyLen;
    impl<'de> DeserializeSeed<'de> for Footprint {
        type Value = usize;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> DeserializeSeed<'de> for KeyLen {
        type Value = usize;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for KeyLen {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E>(self, s: &str) -> Result<usize, E> {
            Ok(s.len())
        }
    }
    const NODE: usize = std::mem::size_of::<Value>();
    impl<'de> Visitor<'de> for Footprint {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(NODE)
        }
        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(NODE)
        }
        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(NODE)
        }
        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(NODE)
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(NODE)
        }
        fn visit_str<E>(self, s: &str) -> Result<usize, E> {
            Ok(NODE + s.len())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = NODE;
            while let Some(item) = seq.next_element_seed(Footprint)? {
                n = n.saturating_add(item);
            }
            Ok(n)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = NODE;
            while let Some(key) = map.next_key_seed(KeyLen)? {
                let value = map.next_value_seed(Footprint)?;
                n = n.saturating_add(std::mem::size_of::<String>() + 8 + key + value);
            }
            Ok(n)
        }
    }
    Footprint
        .deserialize(&mut serde_json::Deserializer::from_slice(text))
        .unwrap_or_else(|_| parse_cost(text))
}

/// Books `cost` bytes (a body's [`parse_cost`]) of the server's room for
/// parsed bodies for environment `env`, `what` naming the body in the
/// refusal: 413 `payload_too_large` past an environment's share, 503
/// `server_busy` when no room came within `ServerConfig::room_wait`.
pub async fn book_parsed(
    config: &crate::config::ServerConfig,
    env: uuid::Uuid,
    cost: usize,
    what: &str,
) -> Result<Booking, crate::error::ApiError> {
    let wait = config.budgets.get(config).wait;
    book_parsed_within(config, env, cost, what, wait).await
}

/// [`book_parsed`] waiting at most `wait` for room.
pub async fn book_parsed_within(
    config: &crate::config::ServerConfig,
    env: uuid::Uuid,
    cost: usize,
    what: &str,
    wait: Duration,
) -> Result<Booking, crate::error::ApiError> {
    use axum::http::StatusCode;
    config
        .budgets
        .get(config)
        .parsed
        .book(env, cost, wait)
        .await
        .map_err(|refused| match refused {
            Refused::TooLarge { needed, most } => too_large(what, needed, most),
            Refused::Busy { needed } => crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                format!(
                    "the server is holding as many parsed request bodies as it takes at once; {what} (about {} MiB once parsed) was not taken: retry later",
                    needed.div_ceil(1 << 20)
                ),
            ),
        })
}

/// The 413 of a body that would take `needed` bytes once parsed, more
/// than an environment's share (`most`) of the room for parsed bodies.
fn too_large(what: &str, needed: usize, most: usize) -> crate::error::ApiError {
    crate::error::ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "{what} would take about {} MiB of memory once parsed; an environment's requests may take at most {} MiB at once (send it smaller, or less dense)",
            needed.div_ceil(1 << 20),
            most >> 20
        ),
    )
}

/// Refuses (413, as [`book_parsed`] would) a body whose parse would take
/// `cost` bytes, more than an environment may ever book: for what is
/// accepted now and parsed later.
pub fn check_parsed_share(
    config: &crate::config::ServerConfig,
    cost: usize,
    what: &str,
) -> Result<(), crate::error::ApiError> {
    let most = config.budgets.get(config).parsed.env_bytes();
    if cost > most {
        return Err(too_large(what, cost, most));
    }
    Ok(())
}

/// A value parsed and dropped as it goes: the parser's checks, none of
/// its allocations (but the escaped strings it unescapes, one at a time).
struct Shallow;

impl<'de> Deserialize<'de> for Shallow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShallowVisitor)
    }
}

struct ShallowVisitor;

impl<'de> Visitor<'de> for ShallowVisitor {
    type Value = Shallow;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shallow, E> {
        Ok(Shallow)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shallow, E> {
        Ok(Shallow)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shallow, E> {
        Ok(Shallow)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shallow, E> {
        Ok(Shallow)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shallow, E> {
        Ok(Shallow)
    }
    fn visit_unit<E>(self) -> Result<Shallow, E> {
        Ok(Shallow)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shallow, A::Error> {
        while seq.next_element::<Shallow>()?.is_some() {}
        Ok(Shallow)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shallow, A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value::<Shallow>()?;
        }
        Ok(Shallow)
    }
}

/// Why a booking was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// More than one environment may hold of the budget: no wait makes
    /// room for it.
    #[error("{needed} bytes, more than an environment may hold ({most})")]
    TooLarge { needed: usize, most: usize },
    /// No room came within the wait.
    #[error("no room for {needed} bytes within the wait")]
    Busy { needed: usize },
}

/// Bytes of memory a kind of request may hold at once, in KiB permits:
/// all environments together, and each environment three quarters of it.
pub struct Budget {
    bytes: usize,
    all: Arc<Semaphore>,
    /// Told when room of `all` is given back.
    freed: Arc<Notify>,
    envs: Mutex<HashMap<uuid::Uuid, Arc<Semaphore>>>,
}

/// What a request booked of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Booking {
    _env: OwnedSemaphorePermit,
    all: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
    bytes: usize,
}

impl Drop for Booking {
    fn drop(&mut self) {
        drop(self.all.take());
        self.freed.notify_waiters();
    }
}

impl Booking {
    /// The bytes booked (rounded up to KiB).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// `bytes` in KiB, rounded up (one at least).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self {
            bytes,
            all: Arc::new(Semaphore::new(kib(bytes).min(Semaphore::MAX_PERMITS))),
            freed: Arc::new(Notify::new()),
            envs: Mutex::default(),
        }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What one environment may hold of it: three quarters.
    pub fn env_bytes(&self) -> usize {
        self.bytes / 4 * 3
    }

    fn env_room(&self, env: uuid::Uuid) -> Arc<Semaphore> {
        self.envs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(env)
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    kib(self.env_bytes()).min(Semaphore::MAX_PERMITS),
                ))
            })
            .clone()
    }

    /// `bytes` of the budget for environment `env`: its own share first,
    /// then the server's, waiting at most `wait` in all. The server's room
    /// is taken by whoever finds it free, not in the order of asking: a
    /// large request of one environment waiting for it does not hold up
    /// the smaller ones of others (within its own share, an environment's
    /// requests are served in order).
    pub async fn book(
        &self,
        env: uuid::Uuid,
        bytes: usize,
        wait: Duration,
    ) -> Result<Booking, Refused> {
        if bytes > self.env_bytes() {
            return Err(Refused::TooLarge {
                needed: bytes,
                most: self.env_bytes(),
            });
        }
        let n = u32::try_from(kib(bytes)).unwrap_or(u32::MAX);
        let busy = Refused::Busy { needed: bytes };
        let deadline = tokio::time::Instant::now() + wait;
        // (A semaphore is never closed here: a closed one is no room.)
        let env = match self.env_room(env).try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => tokio::time::timeout_at(deadline, self.env_room(env).acquire_many_owned(n))
                .await
                .map_err(|_| busy)?
                .map_err(|_| busy)?,
        };
        let all = loop {
            // Listening before trying, so room given back between the two
            // is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(p) = self.all.clone().try_acquire_many_owned(n) {
                break p;
            }
            tokio::time::timeout_at(deadline, freed)
                .await
                .map_err(|_| busy)?;
        };
        Ok(Booking {
            _env: env,
            all: Some(all),
            freed: self.freed.clone(),
            bytes: n as usize * 1024,
        })
    }
}

/// A server's budgets, made at its first booking from its configuration.
#[derive(Clone, Default)]
pub struct Budgets(Arc<std::sync::OnceLock<Rooms>>);

/// The budgets of [`Budgets`].
pub struct Rooms {
    /// What bodies cost once parsed into values.
    pub parsed: Budget,
    /// The components being uploaded, held whole until stored.
    pub uploads: Budget,
    /// The API's other request bodies, held whole while they are handled
    /// (booked as they are declared, or as they arrive).
    pub bodies: Budget,
    /// How long a request waits for room before it is refused.
    pub wait: Duration,
}

impl Budgets {
    /// The budgets, sized by `config` the first time.
    pub fn get(&self, config: &crate::config::ServerConfig) -> &Rooms {
        self.0.get_or_init(|| Rooms {
            parsed: Budget::new(config.max_parsed_bytes),
            uploads: Budget::new(config.max_held_upload_bytes),
            bodies: Budget::new(config.max_held_body_bytes),
            wait: config.room_wait,
        })
    }
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Budgets")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_is_estimated_from_the_text_alone() {
        let slot = std::mem::size_of::<Value>() * 9 / 4;
        // Each value a slot; a non-empty array its first four slots more.
        assert_eq!(parse_cost(b"[0, 1,2]"), 4 * slot + 4 * slot);
        // Empty ones allocate nothing of their own.
        assert_eq!(parse_cost(b"[[], {} ]"), 3 * slot + 4 * slot);
        // A string: its slot and its bytes (a quarter more, and 16); what
        // is inside a string (escaped quotes, brackets) is not structure.
        let text = br#""a \"[1,2]\" b""#;
        let run = text.len() - 2;
        assert_eq!(parse_cost(text), slot + run + run / 4 + 16);
        // Keys count as values: an object of one entry.
        assert_eq!(parse_cost(br#"{"k":"v"}"#), 3 * slot + 4 * slot + 2 * 17);
        // Dense JSON: tens of times its text.
        let dense = format!("[{}0]", "0,".repeat(100_000));
        assert!(parse_cost(dense.as_bytes()) > 70 * dense.len());
    }

    #[test]
    fn text_kept_unparsed_is_what_a_value_parse_takes() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut objects = String::new();
        for _ in 0..127 {
            objects.push_str("{\"k\":");
        }
        objects.push('1');
        objects.push_str(&"}".repeat(127));
        for text in [
            deep(127),
            objects,
            r#"{"a": [1, -2, 3.5e10, "\u00e9\n", null, true], "a": {}}"#.to_string(),
            "18446744073709551615".to_string(),
            " \"x\" ".to_string(),
        ] {
            assert!(check_json(text.as_bytes()).is_ok(), "{text}");
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
        }
        // What RawValue alone takes and a value parse refuses...
        let taken_raw = [deep(128), r#""\ud800""#.into(), "1e400".into()];
        for text in &taken_raw {
            assert!(
                serde_json::from_str::<Box<serde_json::value::RawValue>>(text).is_ok(),
                "{text}"
            );
        }
        // ...is refused, with the parse's own words, as is what is no JSON.
        for text in taken_raw
            .iter()
            .chain(&["[1,]".to_string(), "{} x".to_string()])
        {
            let ours = check_json(text.as_bytes()).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(text)
                .map(drop)
                .map_err(|e| e.to_string());
            assert!(ours.is_err(), "{text}");
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn a_values_footprint_is_counted_from_its_text() {
        let node = std::mem::size_of::<Value>();
        let entry = std::mem::size_of::<String>() + 8;
        assert_eq!(value_footprint(b"[0, 1,2]"), 4 * node);
        assert_eq!(
            value_footprint(br#"{"ab": "c\"d", "e": [null]}"#),
            node + (entry + 2 + node + 3) + (entry + 1 + 2 * node)
        );
        assert_eq!(value_footprint(b"[1,"), parse_cost(b"[1,"));
    }

    #[tokio::test]
    async fn a_large_booking_waiting_does_not_hold_up_smaller_ones_of_others() {
        let budget = Budget::new(4 << 20);
        let (a, b, c) = (
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
        );
        let now = Duration::ZERO;
        let b_held = budget.book(b, 2 << 20, now).await.unwrap();
        let a_held = budget.book(a, 1 << 19, now).await.unwrap();
        // 1.5 MiB free: A's 2 MiB waits for room...
        let waiting = budget.book(a, 2 << 20, Duration::from_secs(60));
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut waiting)
                .await
                .is_err()
        );
        // ...while C's 1 MiB takes what is free.
        let c_held = budget.book(c, 1 << 20, now).await.unwrap();
        // Room given back reaches the one waiting.
        drop((b_held, c_held));
        let a_more = waiting.await.unwrap();
        assert_eq!(a_more.bytes(), 2 << 20);
        drop((a_held, a_more));
        assert!(budget.book(b, 3 << 20, now).await.is_ok());
    }

    #[tokio::test]
    async fn a_booking_waits_for_room_and_an_environment_holds_three_quarters() {
        let budget = Budget::new(4 << 20);
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let now = Duration::ZERO;
        assert_eq!(
            budget.book(a, (3 << 20) + 1, now).await.unwrap_err(),
            Refused::TooLarge {
                needed: (3 << 20) + 1,
                most: 3 << 20
            }
        );
        let held = budget.book(a, 2 << 20, now).await.unwrap();
        assert_eq!(held.bytes(), 2 << 20);
        // A's share has 1 MiB left; B has its own, within what is left.
        assert!(matches!(
            budget.book(a, (1 << 20) + 1, now).await,
            Err(Refused::Busy { .. })
        ));
        let other = budget.book(b, 2 << 20, now).await.unwrap();
        assert!(matches!(
            budget.book(b, 1 << 20, now).await,
            Err(Refused::Busy { .. })
        ));
        // Room given back is room again, to whoever waits for it.
        let waiting = budget.book(b, 1 << 20, Duration::from_secs(60));
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut waiting)
                .await
                .is_err()
        );
        drop(held);
        let third = waiting.await.unwrap();
        drop((other, third));
        assert!(budget.book(a, 3 << 20, now).await.is_ok());
    }
}
