//! The sandbox's PaymentIntents, the Stripe way: `POST /v1/payment_intents` (form-encoded:
//! `amount`, `currency`, `capture_method`, `confirm`, `payment_method`, with Stripe's test
//! payment methods choosing the outcome), retrieve, capture, cancel and refunds, with Stripe's
//! error shape and `Idempotency-Key`; and `POST /sandbox/payment_intents` (JSON) to make an
//! intent in any status directly.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Form, Json,
};
use serde::Deserialize;
use serde_json::json;

use super::{idempotent, lock, no_such_intent, stripe_error, stripe_error_body, without_key, Sandbox};

/// The payment methods `POST /v1/payment_intents` knows: Stripe's test methods, and one of the
/// sandbox's own (`pm_sandbox_processing_<ms>`: `processing` for that long, then paid).
pub const PAYMENT_METHODS: &[(&str, &str)] = &[
    (
        "pm_card_visa",
        "succeeds: requires_capture (manual capture) or succeeded",
    ),
    (
        "pm_card_chargeDeclined",
        "402 card_error card_declined; the intent needs a new payment method",
    ),
    ("pm_card_authenticationRequired", "requires_action (3-D Secure)"),
    (
        "pm_sandbox_processing_<ms>",
        "processing for <ms>, then as pm_card_visa",
    ),
];

/// `POST /v1/payment_intents`, form-encoded as Stripe takes it. Unknown parameters (metadata,
/// description, payment_method_types, ...) are accepted and ignored.
pub(super) async fn create(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    let mut sorted = params.clone();
    sorted.sort();
    let fingerprint = format!("create:{sorted:?}");
    let sb2 = sb.clone();
    idempotent(&sb, &headers, fingerprint, move || {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let invalid = |code: &str, param: &str, message: &str| {
            let mut body = stripe_error_body("invalid_request_error", code, message);
            body["error"]["param"] = json!(param);
            (400, body)
        };
        let amount = match get("amount").map(str::parse::<i64>) {
            None => return invalid("parameter_missing", "amount", "Missing required param: amount."),
            Some(Ok(a)) if a >= 0 => a,
            Some(_) => return invalid("parameter_invalid_integer", "amount", "Invalid integer: amount"),
        };
        let currency = match get("currency") {
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => c.to_lowercase(),
            Some(_) => return invalid("invalid_currency", "currency", "Invalid currency"),
            None => {
                return invalid(
                    "parameter_missing",
                    "currency",
                    "Missing required param: currency.",
                )
            }
        };
        let capture_method = match get("capture_method").unwrap_or("automatic") {
            "manual" => "manual",
            "automatic" | "automatic_async" => "automatic",
            _ => {
                return invalid(
                    "parameter_invalid_string",
                    "capture_method",
                    "Invalid capture_method",
                )
            }
        };
        let confirm = get("confirm") == Some("true");
        let paid = if capture_method == "manual" {
            "requires_capture"
        } else {
            "succeeded"
        };
        let method = get("payment_method");
        let (status, processing) = match (confirm, method) {
            (false, None) => ("requires_payment_method", None),
            (false, Some(_)) => ("requires_confirmation", None),
            (true, None) => {
                return invalid(
                    "payment_intent_unexpected_state",
                    "payment_method",
                    "You cannot confirm this PaymentIntent because it's missing a payment method.",
                )
            }
            (true, Some("pm_card_visa")) => (paid, None),
            (true, Some("pm_card_chargeDeclined")) => ("requires_payment_method", None),
            (true, Some("pm_card_authenticationRequired")) => ("requires_action", None),
            (true, Some(m)) => match m.strip_prefix("pm_sandbox_processing_").map(str::parse::<u64>) {
                Some(Ok(ms)) => (paid, Some(Duration::from_millis(ms))),
                _ => {
                    let mut body = stripe_error_body(
                        "invalid_request_error",
                        "resource_missing",
                        &format!("No such PaymentMethod: '{m}'"),
                    );
                    body["error"]["param"] = json!("payment_method");
                    return (400, body);
                }
            },
        };
        let id = sb2.new_intent(amount, &currency, status, processing, capture_method);
        sb2.count("create");
        let intent = lock(&sb2.intents).get(&id).map(|i| i.json()).unwrap_or_default();
        if method == Some("pm_card_chargeDeclined") && confirm {
            let mut body = stripe_error_body("card_error", "card_declined", "Your card was declined.");
            body["error"]["decline_code"] = json!("generic_decline");
            body["error"]["payment_intent"] = intent;
            return (402, body);
        }
        (200, intent)
    })
}

pub(super) async fn retrieve(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    sb.count("retrieve");
    let mut intents = lock(&sb.intents);
    match intents.get_mut(&id) {
        Some(i) => {
            i.settle();
            Json(i.json()).into_response()
        }
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("No such payment_intent: '{id}'"),
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct CaptureForm {
    amount_to_capture: Option<i64>,
}

pub(super) async fn capture(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CaptureForm>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    let sb2 = sb.clone();
    idempotent(
        &sb,
        &headers,
        format!("capture:{id}:{:?}", f.amount_to_capture),
        move || {
            let mut intents = lock(&sb2.intents);
            let Some(i) = intents.get_mut(&id) else {
                return no_such_intent();
            };
            i.settle();
            if i.status != "requires_capture" {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state", "message": format!("This PaymentIntent's status is {}", i.status)}}),
                );
            }
            let amount = f.amount_to_capture.unwrap_or(i.amount);
            if amount <= 0 || amount > i.amount {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "message": "amount_to_capture is out of range"}}),
                );
            }
            sb2.count("capture");
            i.status = "succeeded".into();
            i.amount_received = amount;
            (200, i.json())
        },
    )
}

pub(super) async fn cancel(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    let sb2 = sb.clone();
    idempotent(&sb, &headers, format!("cancel:{id}"), move || {
        let mut intents = lock(&sb2.intents);
        let Some(i) = intents.get_mut(&id) else {
            return no_such_intent();
        };
        i.settle();
        if i.status == "succeeded" || i.status == "canceled" {
            return (
                400,
                json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state", "message": format!("This PaymentIntent's status is {}", i.status)}}),
            );
        }
        sb2.count("cancel");
        i.status = "canceled".into();
        (200, i.json())
    })
}

#[derive(Deserialize)]
pub(super) struct RefundForm {
    payment_intent: String,
    amount: Option<i64>,
}

pub(super) async fn refund(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Form(f): Form<RefundForm>,
) -> Response {
    if let Some(refused) = without_key(&sb, &headers) {
        return refused;
    }
    let sb2 = sb.clone();
    idempotent(
        &sb,
        &headers,
        format!("refund:{}:{:?}", f.payment_intent, f.amount),
        move || {
            let mut intents = lock(&sb2.intents);
            let Some(i) = intents.get_mut(&f.payment_intent) else {
                return no_such_intent();
            };
            let left = i.amount_received - i.amount_refunded;
            let amount = f.amount.unwrap_or(left);
            if i.status != "succeeded" || amount <= 0 || amount > left {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "refund amount is out of range"}}),
                );
            }
            sb2.count("refund");
            i.amount_refunded += amount;
            let n = sb2.seq.fetch_add(1, Ordering::Relaxed);
            (
                200,
                json!({"id": format!("re_sbx{n:010}"), "object": "refund", "amount": amount, "payment_intent": i.id, "status": "succeeded"}),
            )
        },
    )
}

#[derive(Deserialize)]
pub(super) struct NewIntent {
    amount: i64,
    #[serde(default = "eur")]
    currency: String,
    #[serde(default = "requires_capture")]
    status: String,
    #[serde(default)]
    processing_ms: Option<u64>,
}

fn eur() -> String {
    "eur".into()
}
fn requires_capture() -> String {
    "requires_capture".into()
}

pub(super) async fn create_intent(State(sb): State<Arc<Sandbox>>, Json(n): Json<NewIntent>) -> Response {
    let id = sb.create_intent(
        n.amount,
        &n.currency,
        &n.status,
        n.processing_ms.map(Duration::from_millis),
    );
    Json(json!({"id": id})).into_response()
}
