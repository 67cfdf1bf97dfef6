//! `souk.track_shipment.v1`: follows one shipment to its end. Each run registers the number
//! with the tracking provider (once), reads every checkpoint, stores the new ones (de-duplicated,
//! in carrier-time order), moves the shipment to its latest known status, tells the merchant
//! (a signed webhook per status change) and the storefront (an outcome event), then snoozes
//! until the next poll: often while the parcel moves, seldom while it is quiet, not at all once
//! it is delivered, returned or expired. A provider rate limit snoozes until its reset time;
//! snoozes spend no attempts.

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = crate::enqueue::TRACK_SHIPMENT;
pub use crate::enqueue::TrackShipment as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::shipping::track(&app, &args).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
