//! Payment reconciliation: from what the provider says and what should be charged, the one
//! next call to make. Pure, so capture, cancellation and refunds are decided in one place and a
//! rerun after a crash decides the same thing (with the same idempotency key).

use serde::{Deserialize, Serialize};

/// A PaymentIntent status (Stripe's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
}

impl IntentStatus {
    /// Authorised or paid: the order may proceed.
    pub fn lets_order_proceed(self) -> bool {
        matches!(self, Self::RequiresCapture | Self::Succeeded)
    }
    /// Not decided yet: look again later.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Self::Processing | Self::RequiresConfirmation | Self::RequiresAction
        )
    }
}

/// The provider's view of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderView {
    pub status: IntentStatus,
    /// Authorised amount (requires_capture) or charged amount (succeeded).
    pub amount: i64,
    /// Already captured (succeeded) amount.
    pub amount_received: i64,
    /// Already refunded in total.
    pub amount_refunded: i64,
    /// What can still be captured (Stripe's `amount_capturable`; 0 unless `requires_capture`).
    pub amount_capturable: i64,
    /// The intent's currency (ISO 4217, as the provider wrote it).
    pub currency: Currency,
}

/// A three-letter currency code, compared without regard to case (Stripe writes `eur`, orders
/// carry `EUR`). Anything else reads as [`Currency::UNKNOWN`], which matches no order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const UNKNOWN: Currency = Currency(*b"???");

    pub fn parse(s: &str) -> Currency {
        match s.as_bytes() {
            [a, b, c] if s.bytes().all(|x| x.is_ascii_alphabetic()) => Currency([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ]),
            _ => Currency::UNKNOWN,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

/// Why a payment cannot back an order: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub code: &'static str,
    pub message: String,
}

/// Checks that an authorised or paid intent backs an order of `total_minor` in `currency`: the
/// same currency, and at least the total available to capture (`requires_capture`) or received
/// and not refunded (`succeeded`). More than the total is fine: only what ships is captured and
/// an excess already received is refunded (`reconcile`).
pub fn covers(view: &ProviderView, total_minor: i64, currency: &str) -> Result<(), Mismatch> {
    if view.currency != Currency::parse(currency) || Currency::parse(currency) == Currency::UNKNOWN {
        return Err(Mismatch {
            code: "payment_currency_mismatch",
            message: format!(
                "the payment is in {}, the order in {currency}",
                view.currency.as_str()
            ),
        });
    }
    let available = match view.status {
        IntentStatus::RequiresCapture => view.amount_capturable,
        IntentStatus::Succeeded => view.amount_received.saturating_sub(view.amount_refunded),
        _ => 0,
    };
    if available < total_minor {
        return Err(Mismatch {
            code: "payment_amount_mismatch",
            message: format!(
                "the payment covers {available} {}, the order totals {total_minor}",
                view.currency.as_str()
            ),
        });
    }
    Ok(())
}

/// The next payment call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentAction {
    /// Nothing to do.
    None,
    /// Capture this amount of the authorisation.
    Capture { amount: i64, idempotency_key: String },
    /// Release the whole authorisation: nothing will ship.
    Cancel { idempotency_key: String },
    /// Refund this amount of what was captured.
    Refund { amount: i64, idempotency_key: String },
}

/// Decides the next call so that the charge ends at `target` (what will ship), given the
/// provider's view. Idempotency keys name the order and the amount the call converges to, so
/// a rerun repeats the same call and a changed target makes a new one.
pub fn reconcile(order_key: &str, target: i64, view: &ProviderView) -> PaymentAction {
    match view.status {
        IntentStatus::RequiresCapture if target <= 0 => PaymentAction::Cancel {
            idempotency_key: format!("souk:{order_key}:cancel"),
        },
        IntentStatus::RequiresCapture => PaymentAction::Capture {
            amount: target.min(view.amount),
            idempotency_key: format!("souk:{order_key}:capture:{}", target.min(view.amount)),
        },
        IntentStatus::Succeeded => {
            let net = view.amount_received - view.amount_refunded;
            let excess = net - target.max(0);
            if excess > 0 {
                let refunded_total = view.amount_refunded + excess;
                PaymentAction::Refund {
                    amount: excess,
                    idempotency_key: format!("souk:{order_key}:refund-to:{refunded_total}"),
                }
            } else {
                PaymentAction::None
            }
        }
        _ => PaymentAction::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: IntentStatus, amount: i64, received: i64, refunded: i64) -> ProviderView {
        ProviderView {
            status,
            amount,
            amount_received: received,
            amount_refunded: refunded,
            amount_capturable: if status == IntentStatus::RequiresCapture {
                amount
            } else {
                0
            },
            currency: Currency::parse("eur"),
        }
    }

    #[test]
    fn an_intent_must_cover_the_order_in_its_currency() {
        let auth = view(IntentStatus::RequiresCapture, 1000, 0, 0);
        assert_eq!(covers(&auth, 1000, "EUR"), Ok(()));
        assert_eq!(covers(&auth, 700, "EUR"), Ok(()), "over-authorised is fine");
        assert_eq!(
            covers(&auth, 1001, "EUR").unwrap_err().code,
            "payment_amount_mismatch"
        );
        assert_eq!(
            covers(&auth, 1000, "USD").unwrap_err().code,
            "payment_currency_mismatch"
        );
        assert_eq!(
            covers(&auth, 1000, "EURO").unwrap_err().code,
            "payment_currency_mismatch"
        );
        let paid = view(IntentStatus::Succeeded, 1000, 1000, 300);
        assert_eq!(covers(&paid, 700, "eur"), Ok(()));
        assert_eq!(
            covers(&paid, 701, "EUR").unwrap_err().code,
            "payment_amount_mismatch"
        );
        let odd = ProviderView {
            currency: Currency::UNKNOWN,
            ..auth
        };
        assert_eq!(
            covers(&odd, 1, "EUR").unwrap_err().code,
            "payment_currency_mismatch"
        );
        // 2^53 + 1 is compared exactly.
        assert!(covers(&auth, (1 << 53) + 1, "EUR").is_err());
    }

    #[test]
    fn an_authorisation_is_captured_for_what_ships_only() {
        let a = reconcile("o1", 700, &view(IntentStatus::RequiresCapture, 1000, 0, 0));
        assert_eq!(
            a,
            PaymentAction::Capture {
                amount: 700,
                idempotency_key: "souk:o1:capture:700".into()
            }
        );
    }

    #[test]
    fn nothing_ships_so_the_authorisation_is_cancelled() {
        assert!(matches!(
            reconcile("o1", 0, &view(IntentStatus::RequiresCapture, 1000, 0, 0)),
            PaymentAction::Cancel { .. }
        ));
    }

    #[test]
    fn a_paid_order_is_refunded_down_to_what_ships_once() {
        let a = reconcile("o1", 600, &view(IntentStatus::Succeeded, 1000, 1000, 0));
        assert_eq!(
            a,
            PaymentAction::Refund {
                amount: 400,
                idempotency_key: "souk:o1:refund-to:400".into()
            }
        );
        // After that refund the provider shows it; nothing more to do.
        assert_eq!(
            reconcile("o1", 600, &view(IntentStatus::Succeeded, 1000, 1000, 400)),
            PaymentAction::None
        );
        // A later rejection lowers the target: a new refund with a new key.
        assert!(matches!(
            reconcile("o1", 100, &view(IntentStatus::Succeeded, 1000, 1000, 400)),
            PaymentAction::Refund { amount: 500, ref idempotency_key } if idempotency_key == "souk:o1:refund-to:900"
        ));
    }

    #[test]
    fn cancelled_or_pending_intents_need_no_call() {
        assert_eq!(
            reconcile("o", 10, &view(IntentStatus::Canceled, 10, 0, 0)),
            PaymentAction::None
        );
        assert_eq!(
            reconcile("o", 10, &view(IntentStatus::Processing, 10, 0, 0)),
            PaymentAction::None
        );
        assert!(IntentStatus::Processing.is_pending());
        assert!(IntentStatus::RequiresCapture.lets_order_proceed());
        assert!(!IntentStatus::Canceled.lets_order_proceed());
    }
}
