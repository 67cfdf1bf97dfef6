//! Retry delays: exponential backoff with jitter, capped, and the decision to give up.
//!
//! The jitter is "equal jitter": half the exponential delay is fixed and half random, so a
//! retry never comes back sooner than half the nominal delay (a failing dependency gets its
//! breathing room) while a burst of failures still spreads out instead of returning together.

use std::time::Duration;

/// A queue's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt (before jitter).
    pub base: Duration,
    /// Largest delay between two attempts.
    pub cap: Duration,
    /// Attempts in all, the first run included.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The nominal delay after failed attempt number `attempt` (1-based), before jitter:
    /// `min(cap, base * 2^(attempt-1))`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use souk::domain::backoff::RetryPolicy;
    ///
    /// // souk's default queue policy.
    /// let p = RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(3600), max_attempts: 10 };
    /// let secs: Vec<u64> = (1..10).map(|a| p.nominal_delay(a).as_secs()).collect();
    /// assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256]);
    /// assert!(!p.may_retry(10));
    /// ```
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(40);
        let factor = 1u64 << exp;
        let base_ms = self.base.as_millis() as u64;
        let ms = base_ms.saturating_mul(factor).min(self.cap.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// The delay after failed attempt `attempt`, with `unit` a random number in `[0, 1)`:
    /// between 50 % and 100 % of the nominal delay.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal_delay(attempt).as_millis() as f64;
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_millis((nominal * (0.5 + 0.5 * unit)).round() as u64)
    }

    /// Whether a job whose attempt number `attempt` (1-based) just failed may run again.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 5,
        }
    }

    #[test]
    fn nominal_delay_doubles_then_stops_at_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=8).map(|a| p.nominal_delay(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.nominal_delay(10_000), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_nominal_delay() {
        let p = policy();
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        for i in 0..100 {
            let d = p.delay(4, i as f64 / 100.0);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let p = policy();
        assert!(p.may_retry(1));
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
        assert!(!p.may_retry(6));
    }
}
