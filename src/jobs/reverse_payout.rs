//! `souk.reverse_payout.v1`: takes a refunded return's share back from the payout its sub-order
//! already received (Stripe: a transfer reversal, idempotency key `reversal:<return>`), then
//! records it done with its ledger journal. Waits (snoozing) while that payout is still being
//! made; a payout that was never made leaves nothing to reverse (the merchant's payable keeps
//! the debt). Safe to run twice.

use std::time::Duration;

use apalis::prelude::*;

use super::{db, register_job};
use crate::{
    app::App,
    integrations::payment::ProviderError,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::settlement,
};

pub const QUEUE: &str = crate::enqueue::REVERSE_PAYOUT;
pub use crate::enqueue::ReversePayout as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let Some(r) = settlement::reversal(&app.pool, args.return_id)
        .await
        .map_err(db)?
    else {
        return Err(JobError::abort(format!(
            "no payout reversal for return {}",
            args.return_id
        )));
    };
    if r.status != "pending" {
        return Ok(());
    }
    let transfer = match (r.payout_status.as_str(), r.transfer_id.as_deref()) {
        ("pending", _) => return Err(JobError::Snooze(Duration::from_secs(30))),
        ("paid", Some(t)) => t,
        (status, _) => {
            return settlement::reversal_failed(
                &app.pool,
                r.return_id,
                &format!("the payout is {status}: nothing was sent to take back"),
            )
            .await
            .map_err(db)
        }
    };
    let key = format!("reversal:{}", r.return_id);
    match app
        .payments
        .reverse_transfer(transfer, r.amount_minor, &key)
        .await
    {
        Ok(id) => settlement::mark_reversed(&app.pool, &r, &id).await.map_err(db),
        Err(ProviderError::Refused(why)) => {
            settlement::reversal_failed(&app.pool, r.return_id, &why)
                .await
                .map_err(db)?;
            Err(JobError::abort(format!("payout reversal refused: {why}")))
        }
        Err(ProviderError::RateLimited(d)) => Err(JobError::retry_after(d, "payment provider rate limit")),
        Err(e) => Err(JobError::retry(e)),
    }
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
