//! `souk.forecast_merchant.v1`: one merchant's part of a forecast run (see [`crate::forecast`]).
//! Re-reads everything from the run id; a merchant already done is skipped, so redelivery after
//! a crash does no work twice. A failure is recorded on the merchant's row and retried with the
//! queue's backoff; it never holds up the other merchants' jobs.

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = crate::enqueue::FORECAST_MERCHANT;
pub use crate::enqueue::ForecastMerchant as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::forecast::process_run_merchant(&app, args.run_id, &args.merchant_id).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
