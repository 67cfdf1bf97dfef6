//! `souk.pay_merchant.v1`: pays a completed sub-order's payout with one provider transfer
//! (idempotency key `payout:<sub-order>`, transfer group = the parent order's storefront id),
//! then records it paid with its ledger journal. Safe to run twice: the key makes the provider
//! answer the first transfer again, and the journal is posted once.

use apalis::prelude::*;

use super::{db, register_job};
use crate::{
    app::App,
    integrations::payment::{ProviderError, Transfer},
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::settlement,
};

pub const QUEUE: &str = crate::enqueue::PAY_MERCHANT;
pub use crate::enqueue::PayMerchant as Args;

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let Some(p) = settlement::payout(&app.pool, args.sub_order_id)
        .await
        .map_err(db)?
    else {
        return Err(JobError::abort(format!(
            "no payout for sub-order {}",
            args.sub_order_id
        )));
    };
    if p.status != "pending" {
        return Ok(());
    }
    let key = format!("payout:{}", p.sub_order_id);
    let t = Transfer {
        amount: p.amount_minor,
        currency: &p.currency,
        destination: &p.destination,
        group: &p.transfer_group,
        key: &key,
    };
    match app.payments.transfer(&t).await {
        Ok(id) => settlement::mark_paid(&app.pool, &p, &id).await.map_err(db),
        Err(ProviderError::Refused(why)) => {
            settlement::mark_failed(&app.pool, p.sub_order_id, &why)
                .await
                .map_err(db)?;
            Err(JobError::abort(format!("payout refused: {why}")))
        }
        Err(ProviderError::RateLimited(d)) => Err(JobError::retry_after(d, "payment provider rate limit")),
        Err(e) => Err(JobError::retry(e)),
    }
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
