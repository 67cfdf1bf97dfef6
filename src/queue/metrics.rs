//! In-process counters per queue, rendered as Prometheus text by the ops server.
//!
//! Atomics only: the hot path (one increment per job) takes no lock. The registry lock is
//! taken once per queue at start-up and on each scrape.

use std::{
    fmt::Write,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
};

/// Counters of one queue in this process.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    pub queue: String,
    pub fetched: AtomicU64,
    pub reclaimed: AtomicU64,
    pub done: AtomicU64,
    pub retried: AtomicU64,
    pub snoozed: AtomicU64,
    pub dead: AtomicU64,
    pub decode_failed: AtomicU64,
    pub enqueued_at_ignored: AtomicU64,
    pub redis_errors: AtomicU64,
    pub in_flight: AtomicI64,
    pub handler_micros_sum: AtomicU64,
    pub handler_count: AtomicU64,
}

fn registry() -> &'static Mutex<Vec<Arc<QueueMetrics>>> {
    static R: OnceLock<Mutex<Vec<Arc<QueueMetrics>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

/// The counters of `queue`, created on first use and shared by every worker of this process.
pub fn for_queue(queue: &str) -> Arc<QueueMetrics> {
    let mut list = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = list.iter().find(|m| m.queue == queue) {
        return m.clone();
    }
    let m = Arc::new(QueueMetrics {
        queue: queue.to_owned(),
        ..Default::default()
    });
    list.push(m.clone());
    m
}

/// A counter's name, help text and how to read it.
type Counter = (&'static str, &'static str, fn(&QueueMetrics) -> u64);

/// All counters in the Prometheus text exposition format.
pub fn render() -> String {
    let list = registry().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = String::new();
    let counters: [Counter; 10] = [
        ("souk_jobs_fetched_total", "Entries read from the stream.", |m| {
            m.fetched.load(Relaxed)
        }),
        (
            "souk_jobs_reclaimed_total",
            "Entries taken over from dead or hung consumers.",
            |m| m.reclaimed.load(Relaxed),
        ),
        ("souk_jobs_done_total", "Jobs finished successfully.", |m| {
            m.done.load(Relaxed)
        }),
        (
            "souk_jobs_retried_total",
            "Jobs scheduled for another attempt.",
            |m| m.retried.load(Relaxed),
        ),
        (
            "souk_jobs_snoozed_total",
            "Jobs snoozed without spending an attempt.",
            |m| m.snoozed.load(Relaxed),
        ),
        ("souk_jobs_dead_total", "Jobs moved to the dead letters.", |m| {
            m.dead.load(Relaxed)
        }),
        (
            "souk_jobs_decode_failed_total",
            "Entries whose payload did not decode.",
            |m| m.decode_failed.load(Relaxed),
        ),
        (
            "souk_enqueued_at_ignored_total",
            "Entries whose enqueued_at field was in the future or over a day before the entry and was ignored.",
            |m| m.enqueued_at_ignored.load(Relaxed),
        ),
        (
            "souk_redis_errors_total",
            "Redis calls that failed (and were retried).",
            |m| m.redis_errors.load(Relaxed),
        ),
        ("souk_handler_runs_total", "Handler runs measured.", |m| {
            m.handler_count.load(Relaxed)
        }),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for m in &list {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", m.queue, get(m));
        }
    }
    let _ = writeln!(out, "# HELP souk_handler_seconds_total Time spent in handlers.\n# TYPE souk_handler_seconds_total counter");
    for m in &list {
        let secs = m.handler_micros_sum.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "souk_handler_seconds_total{{queue=\"{}\"}} {secs}", m.queue);
    }
    let _ = writeln!(
        out,
        "# HELP souk_jobs_in_flight Jobs fetched and not yet settled.\n# TYPE souk_jobs_in_flight gauge"
    );
    for m in &list {
        let _ = writeln!(
            out,
            "souk_jobs_in_flight{{queue=\"{}\"}} {}",
            m.queue,
            m.in_flight.load(Relaxed)
        );
    }
    out
}
