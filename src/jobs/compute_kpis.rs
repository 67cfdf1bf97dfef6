//! `souk.compute_kpis.v1` (daily from cron): recomputes every merchant's KPI rows for the last
//! `days` days (default 30), so outcomes that arrive later are counted. One statement; running
//! it twice writes the same rows.

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = "souk.compute_kpis.v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(default)]
    pub days: Option<u32>,
}

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::settlement::compute_kpis(&app, args.days).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
