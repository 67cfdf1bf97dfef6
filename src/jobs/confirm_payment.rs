//! `souk.confirm_payment.v1`: asks the payment provider about an order's payment. Authorised
//! or paid lets the order proceed to stock; `processing` is checked again later (snooze);
//! failed or cancelled ends the order; unpaid past `marketplace.unpaid_timeout_s` is cancelled.
//! Once stock is decided for every sub-order it runs the order's `adjust_payment` step (capture
//! and hand-over) in the same job, falling back to that queue's job when it cannot.

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    enqueue,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = enqueue::CONFIRM_PAYMENT;
pub use crate::enqueue::ConfirmPayment as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::orders::confirm::confirm_payment(&app, &args).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
