//! When to look at a shipment again, and what silence means.
//!
//! Polling adapts: often while a parcel moves, seldom while it is quiet, never once it has
//! ended. Provider pushes are hints that move the next poll earlier; they never replace it.

use super::status::Status;

/// Poll intervals (seconds). Defaults in config/default.toml `[tracking]`.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// Out for delivery or awaiting pick-up: news is imminent.
    pub imminent_s: u64,
    /// Moving: the last event is less than `quiet_after_s` old.
    pub moving_s: u64,
    /// Quiet: no event for `quiet_after_s`.
    pub quiet_s: u64,
    pub quiet_after_s: u64,
    /// Not yet scanned by the carrier (pending, info received).
    pub unscanned_s: u64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            imminent_s: 1_800,
            moving_s: 7_200,
            quiet_s: 21_600,
            quiet_after_s: 86_400,
            unscanned_s: 14_400,
        }
    }
}

/// Seconds until the next poll of a shipment in `status` whose last event is `since_event_s`
/// old; `None` once it has ended.
pub fn next_poll(status: Status, since_event_s: u64, p: &PollPolicy) -> Option<u64> {
    use Status::*;
    if status.is_final() {
        return None;
    }
    Some(match status {
        OutForDelivery | AvailableForPickup | AttemptFail => p.imminent_s,
        Pending | InfoReceived => p.unscanned_s,
        _ if since_event_s >= p.quiet_after_s => p.quiet_s,
        _ => p.moving_s,
    })
}

/// What silence turns a shipment into. Defaults: 30 days without any carrier information →
/// expired (AfterShip's rule); 7 days without news once moving → exception for the merchant.
#[derive(Debug, Clone, Copy)]
pub struct SilenceRules {
    pub no_info_expire_s: u64,
    pub no_news_exception_s: u64,
}

impl Default for SilenceRules {
    fn default() -> Self {
        SilenceRules {
            no_info_expire_s: 30 * 86_400,
            no_news_exception_s: 7 * 86_400,
        }
    }
}

/// The status silence imposes, if any: `since_created_s` since the shipment was registered,
/// `since_event_s` since its last carrier event (`None`: never had one).
pub fn silence(
    status: Status,
    since_created_s: u64,
    since_event_s: Option<u64>,
    r: &SilenceRules,
) -> Option<Status> {
    use Status::*;
    match (status, since_event_s) {
        (s, _) if s.is_final() || s == Exception => None,
        (Pending, _) if since_created_s >= r.no_info_expire_s => Some(Expired),
        (Pending, _) => None,
        (_, Some(age)) if age >= r.no_news_exception_s => Some(Exception),
        (_, None) if since_created_s >= r.no_news_exception_s => Some(Exception),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_is_frequent_when_news_is_near_and_stops_at_the_end() {
        let p = PollPolicy::default();
        assert_eq!(next_poll(Status::OutForDelivery, 60, &p), Some(1_800));
        assert_eq!(next_poll(Status::InTransit, 3_600, &p), Some(7_200));
        assert_eq!(next_poll(Status::InTransit, 2 * 86_400, &p), Some(21_600));
        assert_eq!(next_poll(Status::Pending, 0, &p), Some(14_400));
        for s in [Status::Delivered, Status::Returned, Status::Expired] {
            assert_eq!(next_poll(s, 0, &p), None);
        }
    }

    #[test]
    fn silence_expires_the_never_scanned_and_flags_the_stuck() {
        let r = SilenceRules::default();
        let day = 86_400;
        assert_eq!(silence(Status::Pending, 29 * day, None, &r), None);
        assert_eq!(
            silence(Status::Pending, 30 * day, None, &r),
            Some(Status::Expired)
        );
        assert_eq!(silence(Status::InTransit, 20 * day, Some(6 * day), &r), None);
        assert_eq!(
            silence(Status::InTransit, 20 * day, Some(7 * day), &r),
            Some(Status::Exception)
        );
        assert_eq!(
            silence(Status::Exception, 90 * day, Some(60 * day), &r),
            None,
            "already flagged"
        );
        assert_eq!(silence(Status::Delivered, 90 * day, Some(60 * day), &r), None);
    }
}
