//! Settlement services: paying a completed sub-order's payout, taking a refunded return's
//! share back from it, and the merchants' daily KPIs (behind the jobs
//! `souk.pay_merchant.v1`, `souk.reverse_payout.v1` and `souk.compute_kpis.v1`). The
//! ledger itself is `store::settlement`.

use std::time::Duration;

use crate::{
    app::App,
    domain::ids::{ReturnId, SubOrderId},
    integrations::payment::{ProviderError, Transfer},
    queue::JobError,
    store::{kpis, settlement},
};

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

/// Pays a completed sub-order's payout with one provider transfer (idempotency key
/// `payout:<sub-order>`, transfer group = the parent order's storefront id), then records it
/// paid with its ledger journal. Safe to run twice.
pub async fn pay(app: &App, sub_order_id: SubOrderId) -> Result<(), JobError> {
    let sub_order_id = sub_order_id.0;
    let Some(p) = settlement::payout(&app.pool, sub_order_id).await.map_err(db)? else {
        return Err(JobError::abort(format!(
            "no payout for sub-order {}",
            sub_order_id
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

/// Takes a refunded return's share back from the payout its sub-order received (a transfer
/// reversal, idempotency key `reversal:<return>`) and records it with its journal; snoozes
/// while that payout is still being made. Safe to run twice.
pub async fn reverse(app: &App, return_id: ReturnId) -> Result<(), JobError> {
    let return_id = return_id.0;
    let Some(r) = settlement::reversal(&app.pool, return_id).await.map_err(db)? else {
        return Err(JobError::abort(format!(
            "no payout reversal for return {}",
            return_id
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

/// Recomputes every merchant's KPI rows for the last `days` days (default 30).
pub async fn compute_kpis(app: &App, days: Option<u32>) -> Result<(), JobError> {
    let to = chrono::Utc::now().date_naive();
    let from = to - chrono::Duration::days(days.unwrap_or(30).clamp(1, 3650) as i64 - 1);
    let n = kpis::compute(&app.pool, from, to).await.map_err(db)?;
    tracing::info!(%from, %to, rows = n, "merchant KPIs computed");
    Ok(())
}
