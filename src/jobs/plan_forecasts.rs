//! `souk.plan_forecasts.v1` (nightly from cron): opens the day's forecast run and enqueues one
//! `souk.forecast_merchant.v1` job per merchant still to do, so the fleet shares the work.
//! Safe to run twice: the run is keyed by its day, merchants already done are not enqueued, and
//! the per-merchant push is idempotent.

use apalis::prelude::*;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = "souk.plan_forecasts.v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Last day of history; default yesterday (UTC).
    #[serde(default)]
    pub as_of: Option<NaiveDate>,
    /// Run key; default `daily:<as_of>`.
    #[serde(default)]
    pub run_key: Option<String>,
    /// Only these merchants; default all.
    #[serde(default)]
    pub merchants: Option<Vec<String>>,
}

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let (run, n) = crate::forecast::plan(&app, args.as_of, args.run_key, args.merchants.as_deref()).await?;
    tracing::info!(run = run.id, key = %run.run_key, merchants = n, "forecast run planned");
    Ok(())
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
