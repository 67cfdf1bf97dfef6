//! The order and sub-order state machines: every status an order or sub-order can be in, and
//! which moves between them are allowed. The SQL keeps its compare-and-set guards (`UPDATE …
//! WHERE status = …`); this is the one place that says what those guards must allow, and
//! migration 0015 makes the database refuse any other value.

use std::fmt;

/// An order's status (`orders.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Stored; its payment not yet confirmed.
    Received,
    /// The payment is authorised (or paid); stock is being reserved.
    Authorised,
    /// Charged for what ships and handed to its merchants.
    Captured,
    /// Ended before anything shipped (by the storefront, unpaid, declined, out of stock).
    Cancelled,
}

/// A sub-order's status (`sub_orders.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubOrderStatus {
    /// Waiting for its stock decision.
    Pending,
    /// Its stock is held; not yet handed to the merchant.
    Reserved,
    /// Not enough stock.
    OutOfStock,
    /// Handed to a merchant that decides; waiting for the decision until `accept_by`.
    AwaitingAcceptance,
    /// Accepted (by the merchant, automatically or by the deadline default); ships.
    Accepted,
    /// Refused by the merchant, by the deadline default, or its reservation expired.
    Rejected,
    /// Cancelled with its order.
    Cancelled,
    /// Delivered and past the completion delay; settled.
    Completed,
}

/// A status name that is not one of the machine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown status {:?}", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

impl OrderStatus {
    /// Whether an order may move from `self` to `to`.
    pub fn can_become(self, to: Self) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Received, Authorised) | (Received | Authorised | Captured, Cancelled) | (Authorised, Captured)
        )
    }

    /// Still on its way to a payment decision: `confirm_payment` has work to do.
    pub fn awaits_payment(self) -> bool {
        matches!(self, Self::Received | Self::Authorised)
    }
}

impl SubOrderStatus {
    /// Whether a sub-order may move from `self` to `to`.
    pub fn can_become(self, to: Self) -> bool {
        use SubOrderStatus::*;
        matches!(
            (self, to),
            (Pending, Reserved | OutOfStock)
                | (Reserved, AwaitingAcceptance | Accepted)
                | (AwaitingAcceptance, Accepted)
                | (Reserved | AwaitingAcceptance, Rejected)
                | (Pending | Reserved | AwaitingAcceptance | Accepted, Cancelled)
                | (Accepted, Completed)
        )
    }

    /// The sub-order still ships (or shipped): its subtotal is part of the charge.
    pub fn ships(self) -> bool {
        matches!(
            self,
            Self::Reserved | Self::AwaitingAcceptance | Self::Accepted | Self::Completed
        )
    }

    /// No move leaves this status.
    pub fn is_final(self) -> bool {
        Self::ALL.into_iter().all(|to| !self.can_become(to))
    }

    /// Still on its way to the hand-over (payment and stock not decided yet): souk's own work
    /// moves it on, so a merchant's decision or shipment arriving now waits for it. Any other
    /// status that does not take the command waits for another command (behind it in its
    /// order's group) or has passed: the command is refused.
    pub fn before_hand_over(self) -> bool {
        matches!(self, Self::Pending | Self::Reserved)
    }
}

/// How long a storefront command that found its aggregate not yet in the state it needs
/// waits before looking again, or `None` once it has waited `bound` since it was sent (it is
/// then refused). Short at first (the state usually arrives within milliseconds: payment and
/// stock are decided right after intake), then at most every 2 s.
pub fn wait_for_state(age: std::time::Duration, bound: std::time::Duration) -> Option<std::time::Duration> {
    use std::time::Duration;
    (age < bound).then(|| (age / 4).clamp(Duration::from_millis(50), Duration::from_secs(2)))
}

/// The names of a status enum's values, as stored and published: `ALL`, `as_str`, `parse`
/// and `Display` from one list.
macro_rules! status_names {
    ($t:ident { $($v:ident => $name:literal),+ $(,)? }) => {
        impl $t {
            /// Every value, in the machine's order.
            pub const ALL: [Self; [$($name),+].len()] = [$(Self::$v),+];

            /// The name stored in the database and published in docs/storefront.md.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $name),+
                }
            }

            pub fn parse(s: &str) -> Result<Self, UnknownStatus> {
                Self::ALL
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| UnknownStatus(s.to_owned()))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_names!(OrderStatus {
    Received => "received",
    Authorised => "authorised",
    Captured => "captured",
    Cancelled => "cancelled",
});

status_names!(SubOrderStatus {
    Pending => "pending",
    Reserved => "reserved",
    OutOfStock => "out_of_stock",
    AwaitingAcceptance => "awaiting_acceptance",
    Accepted => "accepted",
    Rejected => "rejected",
    Cancelled => "cancelled",
    Completed => "completed",
});

/// Why an order in which nothing ships ends: a stable code, a sentence, and the actor named
/// on its `order.cancelled` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NothingShips {
    pub code: &'static str,
    pub reason: String,
    pub actor: &'static str,
}

/// Names what ended each sub-order (`(status, actor of its rejection)`, as
/// `store::orders::ended_sub_orders` reads them): all out of stock, all rejected by their
/// merchants, all rejected by default at the deadline, or a mix (counted).
pub fn nothing_ships(subs: &[(String, String)]) -> NothingShips {
    let (mut stock, mut merchants, mut deadline, mut other) = (0, 0, 0, 0);
    for (status, actor) in subs {
        match (status.as_str(), actor.as_str()) {
            ("out_of_stock", _) => stock += 1,
            ("rejected", "souk:deadline") => deadline += 1,
            ("rejected", a) if a.starts_with("merchant:") => merchants += 1,
            _ => other += 1,
        }
    }
    let n = subs.len();
    let all = |k: usize| n > 0 && k == n;
    if all(stock) {
        NothingShips {
            code: "out_of_stock",
            reason: "nothing in the order could be reserved".into(),
            actor: "souk:stock",
        }
    } else if all(merchants) {
        NothingShips {
            code: "rejected_by_merchants",
            reason: "every merchant rejected its part of the order".into(),
            actor: "souk:decisions",
        }
    } else if all(deadline) {
        NothingShips {
            code: "rejected_by_deadline",
            reason: "no merchant decided by its deadline; each part was rejected by default".into(),
            actor: "souk:deadline",
        }
    } else {
        let mut parts = Vec::new();
        for (k, what) in [
            (stock, "out of stock"),
            (merchants, "rejected by the merchant"),
            (deadline, "rejected by default at the deadline"),
            (other, "ended otherwise"),
        ] {
            if k > 0 {
                parts.push(format!("{k} {what}"));
            }
        }
        NothingShips {
            code: "nothing_ships",
            reason: format!("nothing in the order ships: of {n} parts, {}", parts.join(", ")),
            actor: "souk:decisions",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_in_which_nothing_ships_says_why() {
        let s = |st: &str, a: &str| (st.to_owned(), a.to_owned());
        assert_eq!(
            nothing_ships(&[s("out_of_stock", ""), s("out_of_stock", "")]).code,
            "out_of_stock"
        );
        assert_eq!(
            nothing_ships(&[s("rejected", "merchant:m1")]).code,
            "rejected_by_merchants"
        );
        assert_eq!(
            nothing_ships(&[s("rejected", "souk:deadline")]).actor,
            "souk:deadline"
        );
        let mixed = nothing_ships(&[s("out_of_stock", ""), s("rejected", "souk:deadline")]);
        assert_eq!(mixed.code, "nothing_ships");
        assert!(
            mixed.reason.contains("1 out of stock") && mixed.reason.contains("1 rejected by default"),
            "{}",
            mixed.reason
        );
    }

    /// The whole order machine as a table: every pair, allowed or not.
    #[test]
    fn an_order_moves_only_forward_and_can_be_cancelled_until_the_end() {
        use OrderStatus::*;
        let allowed = [
            (Received, Authorised),
            (Received, Cancelled),
            (Authorised, Captured),
            (Authorised, Cancelled),
            (Captured, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert!(Received.awaits_payment() && Authorised.awaits_payment());
        assert!(!Captured.awaits_payment() && !Cancelled.awaits_payment());
    }

    /// The whole sub-order machine as a table.
    #[test]
    fn a_sub_order_is_decided_once_and_only_an_accepted_one_completes() {
        use SubOrderStatus::*;
        let allowed = [
            (Pending, Reserved),
            (Pending, OutOfStock),
            (Pending, Cancelled),
            (Reserved, AwaitingAcceptance),
            (Reserved, Accepted),
            (Reserved, Rejected),
            (Reserved, Cancelled),
            (AwaitingAcceptance, Accepted),
            (AwaitingAcceptance, Rejected),
            (AwaitingAcceptance, Cancelled),
            (Accepted, Cancelled),
            (Accepted, Completed),
        ];
        for from in SubOrderStatus::ALL {
            for to in SubOrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        let finals: Vec<_> = SubOrderStatus::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [OutOfStock, Rejected, Cancelled, Completed]);
        let shipping: Vec<_> = SubOrderStatus::ALL.into_iter().filter(|s| s.ships()).collect();
        assert_eq!(shipping, [Reserved, AwaitingAcceptance, Accepted, Completed]);
        let waiting: Vec<_> = SubOrderStatus::ALL
            .into_iter()
            .filter(|s| s.before_hand_over())
            .collect();
        assert_eq!(waiting, [Pending, Reserved]);
    }

    #[test]
    fn commands_wait_for_state_within_their_bound_only() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        let bound = Duration::from_secs(120);
        assert_eq!(wait_for_state(ms(0), bound), Some(ms(50)));
        assert_eq!(wait_for_state(ms(1_000), bound), Some(ms(250)));
        assert_eq!(wait_for_state(ms(60_000), bound), Some(ms(2_000)));
        assert_eq!(wait_for_state(bound, bound), None);
        assert_eq!(wait_for_state(ms(10), Duration::ZERO), None);
    }

    #[test]
    fn status_names_round_trip_and_unknown_names_are_refused() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Ok(s));
        }
        for s in SubOrderStatus::ALL {
            assert_eq!(SubOrderStatus::parse(s.as_str()), Ok(s));
        }
        assert_eq!(
            OrderStatus::parse("shipped"),
            Err(UnknownStatus("shipped".into()))
        );
        assert!(SubOrderStatus::parse("Accepted").is_err());
    }
}
