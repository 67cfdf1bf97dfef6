//! The order services: operations on an order that more than one job (or the admin API) runs.
//! Each loads, lets the store's compare-and-set decide, commits one transaction holding the
//! state change, its events, its webhook rows and the marks of its follow-up work, and then
//! pushes what the order's state says is outstanding ([`crate::enqueue::follow_ups`]). A rerun
//! changes nothing more and pushes the same follow-ups again (idempotent by key), so a crash
//! between the commit and the pushes delays them instead of losing them; the sweep pushes
//! whatever is still outstanding after a grace period.
//!
//! Must not: name a job module, or push a follow-up the state does not record.

pub mod commands;
pub mod confirm;
pub mod payment;
pub mod sweep;

use std::time::Duration;

use crate::{
    app::App,
    domain::{
        ids::{OrderId, SubOrderId},
        status::SubOrderStatus,
    },
    enqueue,
    faults::crash_point,
    queue::JobError,
    store::orders,
};

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

/// Cancels an order's live sub-orders (telling the merchants that were told of them) and the
/// order, then settles the payment (the adjustment releases the authorisation or refunds).
/// `code` is the stable reason (docs/storefront.md, "Why an order was cancelled"), `reason`
/// the sentence beside it.
pub async fn cancel(
    app: &App,
    order_id: OrderId,
    actor: &str,
    code: &str,
    reason: &str,
) -> Result<(), JobError> {
    orders::cancel_order(&app.pool, order_id.0, actor, code, reason)
        .await
        .map_err(db)?;
    crash_point("cancel.committed");
    enqueue::follow_ups(app, order_id).await
}

/// What became of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Applied now, or by an earlier run of the same decision.
    Applied,
    /// The sub-order is in another state (named): the decision cannot apply.
    Refused(String),
}

/// Applies a decision (a merchant's, or the default at the deadline) to a sub-order awaiting
/// it; a rejection releases stock and marks the charge due for adjustment in the same
/// transaction. A rerun of a decision already applied answers `Applied` and pushes the same
/// follow-ups.
pub async fn decide(
    app: &App,
    sub_order_id: SubOrderId,
    accept: bool,
    actor: &str,
    reason: Option<&str>,
) -> Result<Decided, JobError> {
    let mut changed = orders::decide(&app.pool, sub_order_id.0, accept, actor, reason)
        .await
        .map_err(db)?;
    crash_point("decide.committed");
    let mut row = orders::sub_order(&app.pool, sub_order_id.0)
        .await
        .map_err(db)?
        .ok_or_else(|| JobError::abort("sub-order vanished"))?;
    if !changed && row.status == SubOrderStatus::AwaitingAcceptance.as_str() {
        // The hand-over committed between the compare-and-set and this read: decide again.
        changed = orders::decide(&app.pool, sub_order_id.0, accept, actor, reason)
            .await
            .map_err(db)?;
        row = orders::sub_order(&app.pool, sub_order_id.0)
            .await
            .map_err(db)?
            .ok_or_else(|| JobError::abort("sub-order vanished"))?;
    }
    let wanted = if accept {
        SubOrderStatus::Accepted
    } else {
        SubOrderStatus::Rejected
    };
    if !changed && row.status != wanted.as_str() {
        return Ok(Decided::Refused(row.status));
    }
    enqueue::follow_ups(app, OrderId(row.order_id)).await?;
    Ok(Decided::Applied)
}

/// At a sub-order's acceptance deadline, applies the merchant's default if it has not decided
/// (the job `souk.expire_acceptance.v1`); snoozes until the deadline when run early. A rerun
/// after the decision pushes the follow-ups the state still needs.
pub async fn expire_acceptance(app: &App, sub_order_id: SubOrderId) -> Result<(), JobError> {
    let Some(s) = orders::sub_order(&app.pool, sub_order_id.0).await.map_err(db)? else {
        return Err(JobError::abort("no such sub-order"));
    };
    if SubOrderStatus::parse(&s.status).map_err(JobError::abort)? != SubOrderStatus::AwaitingAcceptance {
        // Decided already: by the merchant, or by an earlier run of this job that stopped
        // before its follow-ups were pushed. Push what the order still needs (no-op pushes when
        // nothing is missing).
        return enqueue::follow_ups(app, OrderId(s.order_id)).await;
    }
    if let Some(at) = s.accept_by {
        let left = at - chrono::Utc::now();
        if left > chrono::Duration::zero() {
            return Err(JobError::Snooze(left.to_std().unwrap_or(Duration::from_secs(1))));
        }
    }
    let accept = s.acceptance_default == "accept";
    let reason = if accept {
        "no decision by the deadline: accepted by default"
    } else {
        "no decision by the deadline: rejected by default"
    };
    // Refused only if the merchant decided in between; its own run pushed what follows.
    decide(app, SubOrderId(s.id), accept, "souk:deadline", Some(reason)).await?;
    Ok(())
}
