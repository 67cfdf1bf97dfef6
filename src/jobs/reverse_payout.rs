//! `souk.reverse_payout.v1`: takes a refunded return's share back from the payout its sub-order
//! already received (Stripe: a transfer reversal, idempotency key `reversal:<return>`), then
//! records it done with its ledger journal. Waits (snoozing) while that payout is still being
//! made; a payout that was never made leaves nothing to reverse (the merchant's payable keeps
//! the debt). Safe to run twice.

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = crate::enqueue::REVERSE_PAYOUT;
pub use crate::enqueue::ReversePayout as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::settlement::reverse(&app, args.return_id).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
