//! Test webhooks, the tool a merchant's developer uses before going live: a signed example of
//! each event type (the `examples` of docs/schema/webhooks/v2) sent to the merchant's URL,
//! with what the endpoint answered, how long it took and whether that means "verified" (2xx).
//! `souk merchants test-webhook`, `POST /admin/merchants/{id}/test-webhook` and
//! `POST /merchant/v1/webhooks/test` all call [`run`].
//!
//! Test sends are not deliveries: nothing is recorded, retried or counted against the
//! endpoint's health, and their `webhook-id` starts `msg_test_` so a receiver can tell them
//! apart. The bodies are version 2 whatever version the merchant receives.

use serde::Serialize;
use serde_json::Value;

use crate::{admin::AdminError, app::App, domain::webhook::sign, store::merchants};

/// Every event type a merchant can receive, with its published schema (and its example).
pub const EVENT_TYPES: &[(&str, &str)] = &[
    (
        "sub_order.created",
        include_str!("../../docs/schema/webhooks/v2/sub_order.created.json"),
    ),
    (
        "sub_order.accepted",
        include_str!("../../docs/schema/webhooks/v2/sub_order.accepted.json"),
    ),
    (
        "sub_order.rejected",
        include_str!("../../docs/schema/webhooks/v2/sub_order.rejected.json"),
    ),
    (
        "sub_order.cancelled",
        include_str!("../../docs/schema/webhooks/v2/sub_order.cancelled.json"),
    ),
    (
        "sub_order.late",
        include_str!("../../docs/schema/webhooks/v2/sub_order.late.json"),
    ),
    (
        "shipment.status_changed",
        include_str!("../../docs/schema/webhooks/v2/shipment.status_changed.json"),
    ),
    (
        "return.requested",
        include_str!("../../docs/schema/webhooks/v2/return.requested.json"),
    ),
    (
        "return.approved",
        include_str!("../../docs/schema/webhooks/v2/return.approved.json"),
    ),
    (
        "return.refused",
        include_str!("../../docs/schema/webhooks/v2/return.refused.json"),
    ),
    (
        "return.received",
        include_str!("../../docs/schema/webhooks/v2/return.received.json"),
    ),
    (
        "return.refunded",
        include_str!("../../docs/schema/webhooks/v2/return.refunded.json"),
    ),
    (
        "complaint.opened",
        include_str!("../../docs/schema/webhooks/v2/complaint.opened.json"),
    ),
    (
        "complaint.message",
        include_str!("../../docs/schema/webhooks/v2/complaint.message.json"),
    ),
    (
        "complaint.escalated",
        include_str!("../../docs/schema/webhooks/v2/complaint.escalated.json"),
    ),
    (
        "complaint.closed",
        include_str!("../../docs/schema/webhooks/v2/complaint.closed.json"),
    ),
    (
        "forecast.stock_risk",
        include_str!("../../docs/schema/webhooks/v2/forecast.stock_risk.json"),
    ),
];

/// What one test send got back.
#[derive(Debug, Clone, Serialize)]
pub struct TestSend {
    pub event_type: String,
    pub webhook_id: String,
    /// The endpoint's HTTP status; none when no answer came (refused URL, timeout, connection).
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// A 2xx: the endpoint took the webhook, so it verified the signature (or does not check).
    pub verified: bool,
    /// The first 500 characters of the endpoint's answer.
    pub answer: Option<String>,
    pub error: Option<String>,
}

/// The answer of the test routes: every send, and whether all were verified.
pub fn report(sent: &[TestSend]) -> Value {
    serde_json::json!({"all_verified": sent.iter().all(|s| s.verified), "sent": sent})
}

/// The example body of `event_type` for `merchant`, stamped now.
pub fn example(event_type: &str, merchant: &str) -> Option<Value> {
    let (_, schema) = EVENT_TYPES.iter().find(|(t, _)| *t == event_type)?;
    let schema: Value = serde_json::from_str(schema).ok()?;
    let mut body = schema["examples"].get(0)?.clone();
    body["timestamp"] =
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if body["data"].get("merchant_id").is_some() {
        body["data"]["merchant_id"] = Value::String(merchant.to_owned());
    }
    Some(body)
}

/// Sends the example of `only` (or of every event type) to `merchant`'s endpoint, all at
/// once, and reports each answer in [`EVENT_TYPES`] order.
pub async fn run(app: &App, merchant: &str, only: Option<&str>) -> Result<Vec<TestSend>, AdminError> {
    let m = merchants::get(&app.pool, merchant)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("merchant {merchant}")))?;
    let types: Vec<&str> = match only {
        Some(t) if EVENT_TYPES.iter().any(|(k, _)| *k == t) => vec![t],
        Some(t) => {
            return Err(AdminError::Invalid(format!(
                "no event type {t:?}; one of: {}",
                EVENT_TYPES.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            )))
        }
        None => EVENT_TYPES.iter().map(|(k, _)| *k).collect(),
    };
    let secrets = crate::store::merchant_api::reads::signing_secrets(&app.pool, merchant).await?;
    let sends = types.into_iter().map(|t| {
        let body = example(t, merchant).map(|b| b.to_string()).unwrap_or_default();
        let id = format!("msg_test_{:016x}", fastrand::u64(..));
        let ts = chrono::Utc::now().timestamp();
        let (url, secrets, sender) = (&m.webhook_url, &secrets, &app.webhooks);
        async move {
            let r = match sign(secrets, &id, ts, &body) {
                Ok(sig) => sender.send(url, &id, ts, &sig, body).await,
                Err(e) => crate::integrations::webhook::AttemptResult {
                    status: None,
                    latency: std::time::Duration::ZERO,
                    retry_after: None,
                    response_excerpt: None,
                    error: Some(format!("the signing secret is unusable: {e}")),
                },
            };
            TestSend {
                event_type: t.to_owned(),
                webhook_id: id,
                status: r.status,
                latency_ms: r.latency.as_millis() as u64,
                verified: r.is_success(),
                answer: r.response_excerpt,
                error: r.error,
            }
        }
    });
    Ok(futures::future::join_all(sends).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_an_example_of_its_own_type() {
        for (t, _) in EVENT_TYPES {
            let b = example(t, "m-1").unwrap_or_else(|| panic!("{t} has no example"));
            assert_eq!(b["type"], *t);
            assert_eq!(b["version"], 2);
        }
        assert!(example("sub_order.created", "m-1").unwrap()["data"]["merchant_id"] == "m-1");
    }

    #[test]
    fn every_published_schema_is_tested() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema/webhooks/v2");
        let mut published: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".json")
                    .to_owned()
            })
            .collect();
        published.sort();
        let mut listed: Vec<String> = EVENT_TYPES.iter().map(|(t, _)| t.to_string()).collect();
        listed.sort();
        assert_eq!(published, listed);
    }
}
