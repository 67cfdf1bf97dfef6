//! `souk.pay_merchant.v1`: pays a completed sub-order's payout with one provider transfer
//! (idempotency key `payout:<sub-order>`, transfer group = the parent order's storefront id),
//! then records it paid with its ledger journal. Safe to run twice: the key makes the provider
//! answer the first transfer again, and the journal is posted once.

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = crate::enqueue::PAY_MERCHANT;
pub use crate::enqueue::PayMerchant as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::settlement::pay(&app, args.sub_order_id).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
