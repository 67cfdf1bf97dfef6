//! `souk.notify_merchant.v1`: one signed Standard Webhooks delivery to one merchant.
//!
//! The delivery row (created with the state change that caused it) fixes the `webhook-id`, so
//! every retry and every rerun sends the same id and the merchant can dedupe. Retries follow
//! `webhooks.schedule_s` (Retry-After honoured); 410 Gone disables the endpoint; an endpoint
//! failing for `webhooks.disable_after_hours` is disabled. Each merchant has at most
//! `webhooks.max_in_flight_per_merchant` deliveries in flight across the fleet (a Redis
//! limiter). A job over the limit waits in its worker for a slot, but only that many jobs per
//! merchant and process wait and none longer than a second; the rest snooze, so a slow merchant
//! never holds the workers other merchants need (`queue::slot_waits`).

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = crate::enqueue::NOTIFY_MERCHANT;
pub use crate::enqueue::NotifyMerchant as Args;

pub async fn handle(args: Args, d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::notify::deliver(&app, &args, &d).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
