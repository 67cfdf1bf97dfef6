//! `souk.adjust_payment.v1`: makes an order's charge match what will ship and hands reserved
//! sub-orders to their merchants (the payment service, `orders::payment`). A run that finds
//! another holding the order's payment lock snoozes briefly.

use std::time::Duration;

use apalis::prelude::*;

use super::register_job;
use crate::{
    app::App,
    enqueue,
    orders::payment,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = enqueue::ADJUST_PAYMENT;
pub use crate::enqueue::AdjustPayment as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    match payment::run_now(&app, &args).await? {
        Some(result) => result,
        None => Err(JobError::Snooze(Duration::from_millis(
            100 + fastrand::u64(0..400),
        ))),
    }
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
