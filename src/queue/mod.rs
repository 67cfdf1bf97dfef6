//! souk's job queue: Redis Streams under apalis workers.
//!
//! Owns the wire format of a queue (what a storefront in any language may `XADD`), the Redis
//! keys, delivery, acknowledgement, retries, dead letters, crash recovery and cron. It must not
//! know what any job does: handlers live in `jobs/`.
//!
//! # Layout
//! - [`keys`]: key names; every key of one queue shares one Redis Cluster hash slot.
//! - [`producer`]: push, push many, push later, push with an idempotency key.
//! - [`backend`]: the apalis [`Backend`](apalis_core::backend::Backend) that reads a stream
//!   through a consumer group, renews leases, takes over stale entries and promotes delayed ones.
//! - [`ack`]: the tower layer that turns each handler's result into done / retry / snooze / dead.
//! - [`dead`]: dead letters: list, show, retry, purge.
//! - [`groups`]: message groups, for queues whose entries about one thing must run in order.
//! - [`stats`]: what `souk queues` and `/metrics` show.
//! - [`cron`]: scheduled pushes that fire once per tick across the fleet.
//!
//! # Wire format (stable; see `docs/queue.md`)
//! One stream per queue, `<prefix>:{<queue>}:stream`. An entry has the field `payload` (a JSON
//! document, the job's arguments) and optionally `job_id` (a stable id, kept across retries;
//! the entry id when absent), `attempt` (attempts already spent, default 0) and `enqueued_at`
//! (unix milliseconds; the entry id's time when absent).

pub mod ack;
pub mod backend;
pub mod conn;
pub mod cron;
pub mod dead;
mod entries;
pub mod groups;
pub mod keys;
pub mod limiter;
pub mod metrics;
pub mod producer;
pub(crate) mod scripts;
mod settle;
pub mod slot_waits;
pub mod stats;
mod upkeep;

use std::{sync::Arc, time::Duration};

use apalis_core::error::BoxDynError;

pub use backend::StreamsBackend;
pub use keys::QueueKeys;
pub use producer::{Producer, PushOutcome};

/// The consumer group every souk worker joins, on every queue.
pub const GROUP: &str = "souk";

/// Whether `name` is a valid queue name: 1–100 of letters, digits, `.`, `_`, `-`.
///
/// ```
/// assert!(souk::queue::valid_queue_name("souk.confirm_payment.v1"));
/// assert!(!souk::queue::valid_queue_name("orders{eu}"));
/// ```
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What a handler learns about the entry it runs, injected as `Data<Delivery>`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Queue name, e.g. `souk.record_sample.v1`.
    pub queue: Arc<str>,
    /// The stream entry id (changes when a retry re-enqueues the job).
    pub entry_id: String,
    /// The job's stable id: the same across retries and redeliveries. Use it in idempotency keys.
    pub job_id: String,
    /// This attempt's number, 1 for the first run.
    pub attempt: u32,
    /// How many times this stream entry was handed to a consumer (more than 1 after a crash).
    pub deliveries: u32,
    /// When the job was first enqueued, unix milliseconds.
    pub enqueued_at_ms: i64,
    /// The raw payload, kept for retries and dead letters.
    pub(crate) payload: Arc<str>,
    /// The entry's sequence id in its message groups (grouped queues only; see [`groups`]).
    pub(crate) seq: Option<String>,
    /// The entry's bytes were not all UTF-8: `payload` holds replacement characters, so a
    /// handler of raw input must refuse it rather than act on changed text.
    pub(crate) invalid_utf8: bool,
}

/// How a handler asks for anything other than "done". Return it as the handler's error.
///
/// Any other error counts as [`JobError::Retry`]; apalis' `AbortError` (which `catch_panic`
/// produces) counts as [`JobError::Abort`] and its `RetryAfterError` as [`JobError::RetryAfter`].
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Failed; retry with the queue's exponential backoff, or dead-letter once attempts run out.
    #[error("{0}")]
    Retry(#[source] BoxDynError),
    /// Failed; retry after exactly this delay (e.g. a `Retry-After` header). Spends an attempt.
    #[error("retry after {delay:?}: {source}")]
    RetryAfter {
        delay: Duration,
        #[source]
        source: BoxDynError,
    },
    /// Not failed, not done: come back after this delay without spending an attempt.
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
    /// Failed for good: dead-letter now, whatever attempts remain.
    #[error("aborted: {0}")]
    Abort(#[source] BoxDynError),
}

impl JobError {
    pub fn retry(e: impl Into<BoxDynError>) -> Self {
        Self::Retry(e.into())
    }
    pub fn retry_after(delay: Duration, e: impl Into<BoxDynError>) -> Self {
        Self::RetryAfter {
            delay,
            source: e.into(),
        }
    }
    pub fn abort(e: impl Into<BoxDynError>) -> Self {
        Self::Abort(e.into())
    }
}

/// Current unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A consumer name unique to this process: host, pid and a random suffix (pids repeat in
/// containers, so the suffix keeps two generations of a pod apart).
pub fn process_consumer_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "host".to_owned());
        format!("{host}:{}:{:06x}", std::process::id(), fastrand::u32(..0xff_ffff))
    })
    .clone()
}

/// The error chain of `e` as one line: `outer: cause: root cause`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_restricted_to_a_safe_alphabet() {
        assert!(valid_queue_name("souk.confirm_payment.v1"));
        assert!(valid_queue_name("a-b_c.1"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name("a{b}"));
        assert!(!valid_queue_name("a b"));
        assert!(!valid_queue_name(&"x".repeat(101)));
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let e = JobError::retry(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "connection refused");
        let e = JobError::abort("bad card");
        assert_eq!(error_chain(&e), "aborted: bad card");
    }
}
