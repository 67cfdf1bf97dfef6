//! `souk.expire_acceptance.v1`: at a sub-order's acceptance deadline, applies the merchant's
//! default (accept or reject, like Mirakl's auto-accept / auto-refuse) if it has not decided.
//! What follows (the adjustment of a rejected share) is derived from the state, so a rerun
//! after a crash right after the decision still pushes it.

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    enqueue,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = enqueue::EXPIRE_ACCEPTANCE;
pub use crate::enqueue::ExpireAcceptance as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::orders::expire_acceptance(&app, args.sub_order_id).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
