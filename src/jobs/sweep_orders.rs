//! `souk.sweep_orders.v1` (from cron): the pipeline's safety net, and the backstop that makes
//! follow-up work impossible to lose ([`crate::orders::sweep`] says what it does).

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = "souk.sweep_orders.v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Args {}

pub async fn handle(_args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::orders::sweep::sweep(&app).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
