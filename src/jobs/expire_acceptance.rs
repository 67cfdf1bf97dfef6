//! `souk.expire_acceptance.v1`: at a sub-order's acceptance deadline, applies the merchant's
//! default (accept or reject, like Mirakl's auto-accept / auto-refuse) if it has not decided.
//! What follows (the adjustment of a rejected share) is derived from the state, so a rerun
//! after a crash right after the decision still pushes it.

use std::time::Duration;

use apalis::prelude::*;

use super::{db, register_job};
use crate::{
    app::App,
    domain::status::SubOrderStatus,
    enqueue,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::orders,
};

pub const QUEUE: &str = enqueue::EXPIRE_ACCEPTANCE;
pub use crate::enqueue::ExpireAcceptance as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let Some(s) = orders::sub_order(&app.pool, args.sub_order_id)
        .await
        .map_err(db)?
    else {
        return Err(JobError::abort("no such sub-order"));
    };
    if SubOrderStatus::parse(&s.status).map_err(JobError::abort)? != SubOrderStatus::AwaitingAcceptance {
        // Decided already: by the merchant, or by an earlier run of this job that stopped
        // before its follow-ups were pushed. Push what the order still needs (no-op pushes when
        // nothing is missing).
        return enqueue::follow_ups(&app, s.order_id).await;
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
    crate::orders::decide(&app, s.id, accept, "souk:deadline", Some(reason)).await?;
    Ok(())
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
