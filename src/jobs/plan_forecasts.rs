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
    forecast,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::forecasts,
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

/// Opens the run and enqueues its pending merchants; returns the run and how many were queued.
pub async fn plan(app: &App, args: &Args) -> Result<(forecasts::Run, usize), JobError> {
    let as_of = args
        .as_of
        .unwrap_or_else(|| forecast::default_as_of(chrono::Utc::now()));
    let key = args.run_key.clone().unwrap_or_else(|| forecast::daily_key(as_of));
    let run = forecast::open_run(app, &key, as_of, args.merchants.as_deref())
        .await
        .map_err(|e| JobError::retry(format!("{e:#}")))?;
    let pending = forecasts::pending_merchants(&app.pool, run.id)
        .await
        .map_err(super::db)?;
    for m in &pending {
        crate::enqueue::forecast_merchant(app, run.id, m).await?;
    }
    Ok((run, pending.len()))
}

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let (run, n) = plan(&app, &args).await?;
    tracing::info!(run = run.id, key = %run.run_key, merchants = n, "forecast run planned");
    Ok(())
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
