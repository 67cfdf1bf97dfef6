//! Webhook jobs of this process waiting for a merchant's delivery slot (see [`SlotWaits`]):
//! part of the running context, so that the process's webhook workers share one line per
//! merchant.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;

/// Longest a job waits in its worker for a merchant's slot before it snoozes instead.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How often a waiting job looks again for a slot freed by another process (one freed in this
/// process wakes a waiter at once).
pub const SLOT_POLL: Duration = Duration::from_millis(50);

/// The jobs of this process waiting for a delivery slot, per merchant. A job that finds its
/// merchant's slots all taken waits here (up to [`SLOT_WAIT`]) instead of snoozing: a snooze
/// goes back through the delayed set and the keeper (200–500 ms at the least), while a fast
/// merchant frees a slot within milliseconds, so under a burst snoozes left the machine idle
/// with deliveries waiting. At most `max_in_flight_per_merchant` jobs wait per merchant and
/// process, so a slow merchant holds at most twice its limit of workers; the others snooze.
#[derive(Default)]
pub struct SlotWaits {
    merchants: std::sync::Mutex<HashMap<String, Arc<Waiting>>>,
}

#[derive(Default)]
pub(crate) struct Waiting {
    waiters: AtomicUsize,
    pub(crate) freed: Notify,
    /// How long this merchant's deliveries have been taking (ms, a moving average; 0 = none yet).
    latency_ms: AtomicU64,
}

/// One place in a merchant's line; leaves it when dropped.
pub(crate) struct InLine(pub(crate) Arc<Waiting>);

impl Drop for InLine {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SlotWaits {
    fn get(&self, slots: &str) -> Arc<Waiting> {
        let mut m = self.merchants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = m.get(slots) {
            return w.clone();
        }
        m.entry(slots.to_owned()).or_default().clone()
    }

    /// Joins the merchant's line unless `max` jobs already wait in it.
    pub(crate) fn join(&self, slots: &str, max: usize) -> Option<InLine> {
        let w = self.get(slots);
        let before = w.waiters.fetch_add(1, Ordering::AcqRel);
        let place = InLine(w);
        (before < max).then_some(place)
    }

    /// A slot of this merchant was given back after a delivery that took `took`: wakes one
    /// waiting job.
    pub fn freed(&self, slots: &str, took: Duration) {
        let w = self.get(slots);
        let took = (took.as_millis() as u64).max(1);
        let old = w.latency_ms.load(Ordering::Relaxed);
        let avg = if old == 0 { took } else { (old * 7 + took) / 8 };
        w.latency_ms.store(avg, Ordering::Relaxed);
        if w.waiters.load(Ordering::Acquire) > 0 {
            w.freed.notify_one();
        }
    }

    /// How long a job that got no slot snoozes: about two of the merchant's recent deliveries
    /// (a slot of a fast merchant is free again in milliseconds; a slow one's is not for
    /// seconds, and its jobs should not churn through the queue meanwhile), 200 ms when
    /// nothing is known yet; plus jitter so they do not all come back at once.
    pub(crate) fn snooze_for(&self, slots: &str) -> Duration {
        let latency = self.get(slots).latency_ms.load(Ordering::Relaxed);
        let base = if latency == 0 {
            200
        } else {
            (2 * latency).clamp(25, 10_000)
        };
        Duration::from_millis(base + fastrand::u64(..=base / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_jobs_wait_in_a_merchants_line() {
        let w = SlotWaits::default();
        let a = w.join("m1", 2).expect("first in line");
        let _b = w.join("m1", 2).expect("second in line");
        assert!(w.join("m1", 2).is_none(), "a third waits in the queue instead");
        assert!(w.join("m2", 2).is_some(), "another merchant has its own line");
        drop(a);
        assert!(w.join("m1", 2).is_some(), "a place freed is taken again");
    }

    #[test]
    fn a_job_without_a_slot_snoozes_for_about_two_of_its_merchants_deliveries() {
        let w = SlotWaits::default();
        let ms = |d: Duration| d.as_millis() as u64;
        assert!(
            (200..=300).contains(&ms(w.snooze_for("new"))),
            "nothing known yet"
        );
        for _ in 0..20 {
            w.freed("fast", Duration::from_millis(4));
            w.freed("slow", Duration::from_secs(3));
        }
        assert!((25..=37).contains(&ms(w.snooze_for("fast"))));
        let slow = ms(w.snooze_for("slow"));
        assert!((6_000..=9_000).contains(&slow), "{slow}");
        w.freed("fast", Duration::from_secs(2));
        assert!(
            ms(w.snooze_for("fast")) >= 2 * 253,
            "one slow delivery moves the average"
        );
    }
}
