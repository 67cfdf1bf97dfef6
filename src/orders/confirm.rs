//! Payment confirmation and stock reservation of an order: the services behind the jobs
//! `souk.confirm_payment.v1` and `souk.reserve_stock.v1`.
//!
//! Confirmation asks the payment provider about an order's payment. Authorised
//! or paid lets the order proceed to stock; `processing` is checked again later (snooze);
//! failed or cancelled ends the order; unpaid past `marketplace.unpaid_timeout_s` is cancelled.
//! Once stock is decided for every sub-order it runs the order's `adjust_payment` step (capture
//! and hand-over) in the same job, falling back to that queue's job when it cannot.

use std::time::Duration;

use crate::{
    app::App,
    domain::ids::OrderId,
    domain::{
        payment::{covers, IntentStatus},
        status::OrderStatus,
    },
    enqueue::{self, ConfirmPayment, Why},
    faults::crash_point,
    integrations::payment::ProviderError,
    orders::{cancel, payment::provider_error},
    queue::JobError,
    store::{orders, pipeline::ReserveReq},
};

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

/// Confirms an order's payment and, once it is authorised, reserves its stock and captures
/// and hands it over (see the job `souk.confirm_payment.v1`).
pub async fn confirm_payment(app: &App, args: &ConfirmPayment) -> Result<(), JobError> {
    let Some(order) = app.batches.order.call(args.order_id.0).await.map_err(db)? else {
        return Err(JobError::abort(format!("order {} does not exist", args.order_id)));
    };
    let status = OrderStatus::parse(&order.status).map_err(JobError::abort)?;
    if !status.awaits_payment() {
        // Moved on (handed over or cancelled) by an earlier run of this job, or by
        // adjust_payment. A run after a crash between that commit and its pushes finds the
        // follow-ups in the state and pushes them now (no-ops when they were pushed).
        return enqueue::follow_ups(app, OrderId(order.id)).await;
    }
    let (mut authorised, mut authorised_minor) = (None, None);
    if status == OrderStatus::Received {
        let view = match app.payments.retrieve(&order.payment_id).await {
            Ok(v) => v,
            Err(ProviderError::Refused(why)) => {
                return cancel(
                    app,
                    OrderId(order.id),
                    "souk:payment",
                    "payment_unusable",
                    &format!("payment not usable: {why}"),
                )
                .await;
            }
            Err(e) => return Err(provider_error(e)),
        };
        let status = serde_json::to_value(view.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if view.status.lets_order_proceed() {
            if let Err(m) = covers(&view, order.total_minor, &order.currency) {
                // Refused: nothing is reserved; the cancellation's adjustment releases the
                // authorisation (or refunds what was received), so no money stays held.
                tracing::info!(order_id = order.id, code = m.code, reason = %m.message, "payment does not back the order");
                orders::set_payment_status(&app.pool, order.id, &status)
                    .await
                    .map_err(db)?;
                return cancel(app, OrderId(order.id), "souk:payment", m.code, &m.message).await;
            }
            // Recorded by the reservation batch below, in the same transaction.
            let data = serde_json::json!({"payment_status": status, "amount": view.amount});
            authorised = Some((status, data));
            // What adjust_payment would read again: the amount waiting to be captured.
            authorised_minor = (view.status == IntentStatus::RequiresCapture).then_some(view.amount);
        } else if view.status.is_pending() {
            orders::set_payment_status(&app.pool, order.id, &status)
                .await
                .map_err(db)?;
            let waited = chrono::Utc::now() - order.enqueued_at;
            if waited.num_seconds() as u64 >= app.config.marketplace.unpaid_timeout_s {
                let why = format!("unpaid after {} s (payment {status})", waited.num_seconds());
                return cancel(app, OrderId(order.id), "souk:payment", "payment_timeout", &why).await;
            }
            return Err(JobError::Snooze(Duration::from_millis(
                app.config.marketplace.payment_recheck_ms,
            )));
        } else {
            orders::set_payment_status(&app.pool, order.id, &status)
                .await
                .map_err(db)?;
            return cancel(
                app,
                OrderId(order.id),
                "souk:payment",
                "payment_failed",
                &format!("payment {status}"),
            )
            .await;
        }
    }
    // Authorised (now or by an earlier run that stopped): the order is recorded as authorised
    // and every pending sub-order reserved in one request to the reservation group commit,
    // instead of a transaction for the payment and a `reserve_stock` job per sub-order. A rerun
    // finds them decided and only pushes the next step again (an order that moved on returned
    // above).
    let answer = app
        .batches
        .reserve
        .call(ReserveReq::Order {
            order_id: order.id,
            authorised,
        })
        .await
        .map_err(db)?;
    for (sub_order_id, outcome) in &answer.outcomes {
        if let orders::Reserve::OutOfStock(short) = outcome {
            tracing::info!(sub_order_id, ?short, "sub-order out of stock");
        }
    }
    crash_point("confirm.reserved");
    if answer.all_decided {
        // The capture and the hand-over to merchants run here, as the adjust_payment job
        // would run them (under the same per-order lock): an order takes one trip through
        // the queues fewer. When another run holds the lock, or this attempt fails
        // (provider, database), the adjust_payment job takes over, pushed once per order
        // as before, with its own retries; it repeats nothing that was done.
        let args = enqueue::AdjustPayment {
            order_id: OrderId(order.id),
            authorised_minor,
        };
        let ran = crate::orders::payment::run_now(app, &args).await?;
        if let Some(Err(e)) = &ran {
            tracing::info!(order_id = order.id, error = %e, "capture deferred to adjust_payment");
        }
        if !matches!(ran, Some(Ok(()))) {
            enqueue::adjust_payment(app, &args, Why::StockDecided).await?;
        }
    }
    Ok(())
}

/// Reserves one sub-order's lines all together or not at all and, once every sub-order of the
/// order has its stock decision, pushes the payment's adjustment (the job
/// `souk.reserve_stock.v1`, for an operator re-driving one sub-order).
pub async fn reserve_sub_order(app: &App, sub_order_id: i64) -> Result<(), JobError> {
    let answer = app
        .batches
        .reserve
        .call(ReserveReq::Sub(sub_order_id))
        .await
        .map_err(db)?;
    let order_id = answer.order_id;
    for (sub_order_id, outcome) in &answer.outcomes {
        if let orders::Reserve::OutOfStock(short) = outcome {
            tracing::info!(sub_order_id, ?short, "sub-order out of stock");
        }
    }
    if answer.all_decided {
        enqueue::adjust_payment(
            app,
            &enqueue::AdjustPayment::new(OrderId(order_id)),
            Why::StockDecided,
        )
        .await?;
    }
    Ok(())
}
