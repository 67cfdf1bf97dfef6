//! The sweep behind the job `souk.sweep_orders.v1` (from cron).
//!
//! Deadlines: releases reservations past their expiry (rejecting those sub-orders; the refund
//! of their share follows from the order's adjustment mark), cancels orders still unpaid after
//! `marketplace.unpaid_timeout_s`, completes sub-orders delivered more than
//! `tracking.complete_after_delivery_s` ago (completion settles them), flags accepted
//! sub-orders not shipped by their ship-by deadline, gives return requests past their deadline
//! `after_sales.return_default` and escalates unanswered complaints.
//!
//! Backstop: every step above writes its follow-up with its state change (a webhook row, an
//! adjustment mark, a settled sub-order), and the jobs push it after the commit. What the
//! state says is still outstanding after `marketplace.follow_up_grace_s` is pushed again
//! here: adjustments of the charge still due, webhooks never attempted, decisions past their
//! deadline, payouts and payout reversals pending. Pushes are idempotent by key, so nothing
//! that was pushed is pushed twice.

use crate::{
    app::App,
    domain::ids::{OrderId, ReturnId, SubOrderId},
    enqueue::{self, Why},
    faults::crash_point,
    queue::JobError,
    store::{after_sales, deliveries, follow_ups, orders, settlement, shipments},
};

/// Most rows one step handles per sweep; the rest wait for the next (every 30 s).
const BATCH: i64 = 500;

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

/// One sweep: deadlines, then the backstop.
pub async fn sweep(app: &App) -> Result<(), JobError> {
    let mut touched = orders::release_expired(&app.pool, BATCH).await.map_err(db)?;
    shipments::complete_delivered(&app.pool, app.config.tracking.complete_after_delivery_s, BATCH)
        .await
        .map_err(db)?;
    // Late shipments: flagged once, with the merchant's webhook in the same transaction.
    touched.extend(
        shipments::flag_late(&app.pool, app.config.tracking.ship_by_s, BATCH)
            .await
            .map_err(db)?
            .into_iter()
            .map(|(order, _, _)| order),
    );
    // After-sales deadlines: return requests unanswered get the configured default, complaints
    // unanswered escalate to the platform; the merchant is told of both.
    let approve = app.config.after_sales.return_default == "approve";
    touched.extend(
        after_sales::expire_return_requests(&app.pool, approve, BATCH)
            .await
            .map_err(db)?,
    );
    touched.extend(
        after_sales::escalate_overdue(&app.pool, BATCH)
            .await
            .map_err(db)?,
    );
    crash_point("sweep.committed");
    touched.sort_unstable();
    touched.dedup();
    for order_id in touched {
        enqueue::follow_ups(app, OrderId(order_id)).await?;
    }
    let timeout = app.config.marketplace.unpaid_timeout_s;
    for order_id in orders::stale_unpaid(&app.pool, timeout, BATCH)
        .await
        .map_err(db)?
    {
        super::cancel(
            app,
            OrderId(order_id),
            "souk:sweeper",
            "payment_timeout",
            &format!("unpaid after {timeout} s"),
        )
        .await?;
    }
    backstop(app).await
}

/// Pushes again what the state says has been outstanding for longer than the grace period.
async fn backstop(app: &App) -> Result<(), JobError> {
    let grace = app.config.marketplace.follow_up_grace_s;
    for (order_id, at) in follow_ups::adjust_overdue(&app.pool, grace, BATCH)
        .await
        .map_err(db)?
    {
        enqueue::adjust_payment(app, &enqueue::AdjustPayment::new(OrderId(order_id)), Why::Due(at)).await?;
    }
    enqueue::notify_merchants(
        app,
        deliveries::unsent(&app.pool, grace, BATCH).await.map_err(db)?,
    )
    .await?;
    let overdue = follow_ups::decisions_overdue(&app.pool, grace, BATCH)
        .await
        .map_err(db)?;
    let now = chrono::Utc::now();
    let deadlines: Vec<_> = overdue.into_iter().map(|sub| (SubOrderId(sub), now)).collect();
    enqueue::expire_acceptance(app, &deadlines).await?;
    // Payouts of settled sub-orders and reversals of refunded returns: pending rows are the
    // state; their jobs are pushed once each.
    for sub in settlement::pending_payouts(&app.pool, BATCH).await.map_err(db)? {
        enqueue::pay_merchant(app, SubOrderId(sub)).await?;
    }
    for return_id in settlement::pending_reversals(&app.pool, BATCH)
        .await
        .map_err(db)?
    {
        enqueue::reverse_payout(app, ReturnId(return_id)).await?;
    }
    Ok(())
}
