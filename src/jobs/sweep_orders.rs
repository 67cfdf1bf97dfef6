//! `souk.sweep_orders.v1` (from cron): the pipeline's safety net. Releases reservations past
//! their expiry (rejecting those sub-orders and refunding their share) and cancels orders
//! still unpaid after `marketplace.unpaid_timeout_s`, even if their payment check was lost, and
//! completes sub-orders delivered more than `tracking.complete_after_delivery_s` ago, and flags
//! accepted sub-orders not shipped by their ship-by deadline (`tracking.ship_by_s` or the
//! merchant's own); completion settles the sub-order, and pending payouts are queued. Return
//! requests past their deadline get `after_sales.return_default`, complaints unanswered past
//! theirs escalate, and pending payout reversals are queued.

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use super::{adjust_payment, db, intake_storefront, register_job};
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::orders,
};

pub const QUEUE: &str = "souk.sweep_orders.v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Args {}

pub async fn handle(_args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    for sub in orders::release_expired(&app.pool, 500).await.map_err(db)? {
        if let Some(s) = orders::sub_order(&app.pool, sub).await.map_err(db)? {
            let a = adjust_payment::Args::new(s.order_id);
            app.push_once(
                adjust_payment::QUEUE,
                &format!("adjust:{}:rejected:{sub}", s.order_id),
                &a,
                None,
            )
            .await?;
        }
    }
    crate::store::shipments::complete_delivered(
        &app.pool,
        app.config.tracking.complete_after_delivery_s,
        500,
    )
    .await
    .map_err(db)?;
    // Late shipments: flagged once, the merchant told (one webhook id per sub-order).
    for (order, sub, merchant) in
        crate::store::shipments::flag_late(&app.pool, app.config.tracking.ship_by_s, 500)
            .await
            .map_err(db)?
    {
        super::notify_merchant::enqueue_event(
            &app,
            &merchant,
            order,
            sub,
            "sub_order.late",
            serde_json::json!({"reason": "not shipped by the ship-by deadline"}),
        )
        .await?;
    }
    // Payouts of settled sub-orders (queued once per sub-order; a crash between settling and
    // this push is caught by the next sweep).
    for sub in crate::store::settlement::pending_payouts(&app.pool, 500)
        .await
        .map_err(db)?
    {
        app.push_once(
            super::pay_merchant::QUEUE,
            &format!("payout:{sub}"),
            &super::pay_merchant::Args { sub_order_id: sub },
            None,
        )
        .await?;
    }
    // After-sales deadlines: return requests unanswered get the configured default, complaints
    // unanswered escalate to the platform; the merchant is told of both.
    let approve = app.config.after_sales.return_default == "approve";
    let mut touched = crate::store::after_sales::expire_return_requests(&app.pool, approve, 500)
        .await
        .map_err(db)?;
    touched.extend(
        crate::store::after_sales::escalate_overdue(&app.pool, 500)
            .await
            .map_err(db)?,
    );
    touched.sort_unstable();
    touched.dedup();
    for order_id in touched {
        super::notify_merchant::push_pending_for_order(&app, order_id).await?;
    }
    for return_id in crate::store::settlement::pending_reversals(&app.pool, 500)
        .await
        .map_err(db)?
    {
        app.push_once(
            super::reverse_payout::QUEUE,
            &format!("reverse:{return_id}"),
            &super::reverse_payout::Args { return_id },
            None,
        )
        .await?;
    }
    let timeout = app.config.marketplace.unpaid_timeout_s;
    for order_id in orders::stale_unpaid(&app.pool, timeout, 500).await.map_err(db)? {
        intake_storefront::cancel(
            &app,
            order_id,
            "souk:sweeper",
            &format!("unpaid after {timeout} s"),
        )
        .await?;
    }
    Ok(())
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
