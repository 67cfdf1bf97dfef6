//! The sandbox provider's Connect transfers: `POST /v1/transfers` (payouts to `acct_…`
//! destinations) and `POST /v1/transfers/{id}/reversals`.

use std::sync::{atomic::Ordering, Arc};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    Form,
};
use serde::Deserialize;
use serde_json::json;

use super::{idempotent, lock, without_key, Sandbox};

#[derive(Deserialize)]
pub(super) struct TransferForm {
    amount: i64,
    currency: String,
    destination: String,
    #[serde(default)]
    transfer_group: Option<String>,
}

/// Transfers made, for tests and benchmarks: (id, amount, destination, transfer group).
impl Sandbox {
    pub fn transfers(&self) -> Vec<(String, i64, String, String)> {
        lock(&self.transfers).clone()
    }

    /// Transfer reversals made: (reversal id, transfer id, amount).
    pub fn reversals(&self) -> Vec<(String, String, i64)> {
        lock(&self.reversals).clone()
    }
}

#[derive(Deserialize)]
pub(super) struct ReversalForm {
    #[serde(default)]
    amount: Option<i64>,
}

/// `POST /v1/transfers/{id}/reversals`: takes back part (or all) of a transfer; never more than
/// is left of it.
pub(super) async fn reverse_transfer(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(transfer): Path<String>,
    Form(f): Form<ReversalForm>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    let sb2 = sb.clone();
    idempotent(
        &sb,
        &headers,
        format!("reversal:{transfer}:{:?}", f.amount),
        move || {
            let Some(made) = lock(&sb2.transfers).iter().find(|t| t.0 == transfer).map(|t| t.1) else {
                return (
                    404,
                    json!({"error": {"type": "invalid_request_error", "message": "No such transfer"}}),
                );
            };
            let mut reversals = lock(&sb2.reversals);
            let left = made
                - reversals
                    .iter()
                    .filter(|r| r.1 == transfer)
                    .map(|r| r.2)
                    .sum::<i64>();
            let amount = f.amount.unwrap_or(left);
            if amount <= 0 || amount > left {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "message": "reversal amount is out of range"}}),
                );
            }
            sb2.count("transfer_reversal");
            let n = sb2.seq.fetch_add(1, Ordering::Relaxed);
            let id = format!("trr_sbx{n:010}");
            reversals.push((id.clone(), transfer.clone(), amount));
            (
                200,
                json!({"id": id, "object": "transfer_reversal", "amount": amount, "transfer": transfer}),
            )
        },
    )
}

pub(super) async fn transfer(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Form(f): Form<TransferForm>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    let sb2 = sb.clone();
    idempotent(
        &sb,
        &headers,
        format!(
            "transfer:{}:{}:{}:{:?}",
            f.amount, f.currency, f.destination, f.transfer_group
        ),
        move || {
            if f.amount <= 0 || !f.destination.starts_with("acct_") {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "message": "amount must be positive and destination an acct_ id"}}),
                );
            }
            sb2.count("transfer");
            let n = sb2.seq.fetch_add(1, Ordering::Relaxed);
            let id = format!("tr_sbx{n:010}");
            let group = f.transfer_group.clone().unwrap_or_default();
            lock(&sb2.transfers).push((id.clone(), f.amount, f.destination.clone(), group.clone()));
            (
                200,
                json!({"id": id, "object": "transfer", "amount": f.amount, "currency": f.currency, "destination": f.destination, "transfer_group": group}),
            )
        },
    )
}
