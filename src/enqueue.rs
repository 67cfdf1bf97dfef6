//! Job contracts: each pipeline job's queue name, arguments and idempotency keys in one place,
//! and typed pushes. Everything that starts a job goes through here, so no job module needs
//! another's internals, and an idempotency key is formed once.
//!
//! Pushes are idempotent by key within the queue's `idempotency_window_s`: pushing the same
//! follow-up again (a rerun, the sweep) is a no-op while the first push is remembered, and a
//! new job once it is not; every handler is safe to run twice. This is what makes
//! [`outstanding`] safe to call after every commit and from the sweep: the state says what is
//! still to do, and these pushes make it happen at most once per key.
//!
//! Must not: decide anything about an order (that is `domain/` and the services), or touch
//! PostgreSQL.

use serde::{Deserialize, Serialize};

use crate::{
    app::App,
    domain::ids::{OrderId, ReturnId, ShipmentId, SubOrderId},
    queue::JobError,
    store::follow_ups::Outstanding,
};

/// `souk.storefront.v1`: the storefront's commands (docs/storefront.md), pushed raw.
pub const STOREFRONT: &str = "souk.storefront.v1";
/// `souk.forecast_merchant.v1`.
pub const FORECAST_MERCHANT: &str = "souk.forecast_merchant.v1";
/// `souk.confirm_payment.v1`.
pub const CONFIRM_PAYMENT: &str = "souk.confirm_payment.v1";
/// `souk.adjust_payment.v1`.
pub const ADJUST_PAYMENT: &str = "souk.adjust_payment.v1";
/// `souk.notify_merchant.v1`.
pub const NOTIFY_MERCHANT: &str = "souk.notify_merchant.v1";
/// `souk.expire_acceptance.v1`.
pub const EXPIRE_ACCEPTANCE: &str = "souk.expire_acceptance.v1";

/// `souk.pay_merchant.v1`.
pub const PAY_MERCHANT: &str = "souk.pay_merchant.v1";
/// `souk.reverse_payout.v1`.
pub const REVERSE_PAYOUT: &str = "souk.reverse_payout.v1";
/// `souk.track_shipment.v1`.
pub const TRACK_SHIPMENT: &str = "souk.track_shipment.v1";

/// Arguments of `souk.pay_merchant.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayMerchant {
    pub sub_order_id: SubOrderId,
}

/// Arguments of `souk.reverse_payout.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReversePayout {
    pub return_id: ReturnId,
}

/// Arguments of `souk.track_shipment.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackShipment {
    pub shipment_id: ShipmentId,
    /// A provider push's one-off poll: polls once and ends, leaving the regular schedule (the
    /// shipment's own job) as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hint: bool,
}

/// Arguments of `souk.forecast_merchant.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastMerchant {
    pub run_id: i64,
    pub merchant_id: String,
}

/// Arguments of `souk.confirm_payment.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPayment {
    pub order_id: OrderId,
}

/// Arguments of `souk.adjust_payment.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustPayment {
    pub order_id: OrderId,
    /// The amount `confirm_payment` has just seen authorised and waiting for capture. With it,
    /// a run that finds the order freshly authorised (nothing captured or refunded recorded)
    /// captures at once instead of first asking the provider; if the provider refuses that
    /// call, the run reads the payment's state and decides from it as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorised_minor: Option<i64>,
}

impl AdjustPayment {
    /// A run that reads the provider's state first.
    pub fn new(order_id: OrderId) -> Self {
        Self {
            order_id,
            authorised_minor: None,
        }
    }
}

/// Arguments of `souk.notify_merchant.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyMerchant {
    pub delivery_id: String,
}

/// Arguments of `souk.expire_acceptance.v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireAcceptance {
    pub sub_order_id: SubOrderId,
}

/// Why an order's charge is adjusted: names the idempotency key of the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Every sub-order has its stock decision: capture and hand over.
    StockDecided,
    /// The order's adjustment mark (`orders.adjust_due_at`): a rejection, a cancellation, an
    /// expired reservation or a return received back changed what is kept. One key per mark,
    /// so the push after the commit and the sweep's push of the same mark make one job.
    Due(chrono::DateTime<chrono::Utc>),
}

/// The idempotency key of an adjustment.
pub fn adjust_key(order_id: OrderId, why: Why) -> String {
    match why {
        Why::StockDecided => format!("adjust:{order_id}:stock"),
        Why::Due(at) => format!("adjust:{order_id}:due:{}", at.timestamp_micros()),
    }
}

/// Asks to confirm an order's payment (once per order).
pub async fn confirm_payment(app: &App, order_id: OrderId) -> Result<(), JobError> {
    app.push_once(
        CONFIRM_PAYMENT,
        &format!("confirm:{order_id}"),
        &ConfirmPayment { order_id },
        None,
    )
    .await
}

/// Asks to adjust an order's charge (once per order and reason).
pub async fn adjust_payment(app: &App, args: &AdjustPayment, why: Why) -> Result<(), JobError> {
    app.push_once(ADJUST_PAYMENT, &adjust_key(args.order_id, why), args, None)
        .await
}

/// Asks to send webhook deliveries (once per delivery id), in one round trip.
pub async fn notify_merchants(app: &App, delivery_ids: Vec<String>) -> Result<(), JobError> {
    let jobs: Vec<_> = delivery_ids
        .into_iter()
        .map(|delivery_id| {
            (
                format!("notify:{delivery_id}"),
                NotifyMerchant { delivery_id },
                None,
            )
        })
        .collect();
    app.push_once_many(NOTIFY_MERCHANT, &jobs).await
}

/// Schedules the acceptance deadlines of sub-orders (once per sub-order), in one round trip.
pub async fn expire_acceptance(
    app: &App,
    deadlines: &[(SubOrderId, chrono::DateTime<chrono::Utc>)],
) -> Result<(), JobError> {
    let jobs: Vec<_> = deadlines
        .iter()
        .map(|&(sub_order_id, at)| {
            (
                format!("expire:{sub_order_id}"),
                ExpireAcceptance { sub_order_id },
                Some(at.timestamp_millis()),
            )
        })
        .collect();
    app.push_once_many(EXPIRE_ACCEPTANCE, &jobs).await
}

/// Asks to pay a settled sub-order out (once per sub-order).
pub async fn pay_merchant(app: &App, sub_order_id: SubOrderId) -> Result<(), JobError> {
    app.push_once(
        PAY_MERCHANT,
        &format!("payout:{sub_order_id}"),
        &PayMerchant { sub_order_id },
        None,
    )
    .await
}

/// Asks to take a refunded return's share back from its payout (once per return).
pub async fn reverse_payout(app: &App, return_id: ReturnId) -> Result<(), JobError> {
    app.push_once(
        REVERSE_PAYOUT,
        &format!("reverse:{return_id}"),
        &ReversePayout { return_id },
        None,
    )
    .await
}

/// Starts tracking a shipment (its one regular job, once per shipment).
pub async fn track_shipment(app: &App, shipment_id: ShipmentId) -> Result<(), JobError> {
    app.push_once(
        TRACK_SHIPMENT,
        &format!("track:{shipment_id}"),
        &TrackShipment {
            shipment_id,
            hint: false,
        },
        None,
    )
    .await
}

fn hint_key(shipment_id: ShipmentId) -> String {
    format!("hint:{shipment_id}")
}

/// Asks for a poll of a shipment now, because its carrier pushed news. At most one such poll
/// waits per shipment: pushes arriving while one waits (a replayed push, a burst of scans) are
/// absorbed, since the poll reads everything new; the guard is released when the poll starts
/// ([`hint_started`]), so news after that gets a poll of its own. `true` when a poll was
/// pushed now.
pub async fn poll_hint(
    app: &App,
    shipment_id: ShipmentId,
) -> Result<bool, crate::queue::producer::PushError> {
    let args = TrackShipment {
        shipment_id,
        hint: true,
    };
    // The guard also ends by itself after the window, should its poll be lost.
    let window = std::time::Duration::from_secs(app.config.queue(TRACK_SHIPMENT).idempotency_window_s);
    let outcome = app
        .producer
        .push_unique(TRACK_SHIPMENT, &hint_key(shipment_id), &args, window, None)
        .await?;
    Ok(matches!(outcome, crate::queue::PushOutcome::Pushed(_)))
}

/// Releases the guard of [`poll_hint`]: the push-triggered poll of this shipment is starting.
pub async fn hint_started(app: &App, shipment_id: ShipmentId) -> Result<(), JobError> {
    let key = app
        .producer
        .keys(TRACK_SHIPMENT)
        .idempotency(&hint_key(shipment_id));
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut app.conn.clone())
        .await
        .map_err(JobError::retry)?;
    Ok(())
}

/// Asks to forecast one merchant of a run (once per run and merchant).
pub async fn forecast_merchant(app: &App, run_id: i64, merchant_id: &str) -> Result<(), JobError> {
    app.push_once(
        FORECAST_MERCHANT,
        &format!("forecast:{run_id}:{merchant_id}"),
        &ForecastMerchant {
            run_id,
            merchant_id: merchant_id.to_owned(),
        },
        None,
    )
    .await
}

/// Pushes everything an order's state says is still to do (see
/// [`crate::store::follow_ups::outstanding`]): deadlines, webhooks, the adjustment of its charge.
pub async fn outstanding(app: &App, o: &Outstanding) -> Result<(), JobError> {
    let awaiting: Vec<_> = o.awaiting.iter().map(|&(s, at)| (SubOrderId(s), at)).collect();
    expire_acceptance(app, &awaiting).await?;
    notify_merchants(app, o.pending_deliveries.clone()).await?;
    if let Some(at) = o.adjust_due {
        adjust_payment(app, &AdjustPayment::new(OrderId(o.order_id)), Why::Due(at)).await?;
    }
    Ok(())
}

/// Reads what an order's state says is outstanding and pushes it: the one call that ends every
/// order operation after its commit, and that its rerun repeats.
pub async fn follow_ups(app: &App, order_id: OrderId) -> Result<(), JobError> {
    let o = crate::store::follow_ups::outstanding(&app.pool, order_id.0)
        .await
        .map_err(JobError::retry)?;
    outstanding(app, &o).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_adjustment_mark_has_its_own_key_and_the_stock_step_one_per_order() {
        let at = chrono::DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        assert_eq!(adjust_key(OrderId(7), Why::StockDecided), "adjust:7:stock");
        assert_eq!(
            adjust_key(OrderId(7), Why::Due(at)),
            "adjust:7:due:1764000000123456"
        );
        let later = at + chrono::Duration::microseconds(1);
        assert_ne!(
            adjust_key(OrderId(7), Why::Due(at)),
            adjust_key(OrderId(7), Why::Due(later))
        );
    }
}
