//! `souk.reserve_stock.v1`: reserves one sub-order's lines all together or not at all. Once
//! every sub-order of the order has its stock decision, the payment is adjusted.
//!
//! The pipeline itself reserves from `confirm_payment` (same group commit, same next step);
//! this job re-drives one sub-order (`souk push`), e.g. after an operator fixed its stock.

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = "souk.reserve_stock.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub sub_order_id: i64,
}

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::orders::confirm::reserve_sub_order(&app, args.sub_order_id).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
