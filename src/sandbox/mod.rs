//! souk's sandbox: local stand-ins for the outside parties, served over real HTTP on
//! 127.0.0.1 for the demo, the tests and benchmarks.
//!
//! - A Stripe-compatible payment provider ([`intents`]): `POST /v1/payment_intents` (Stripe's
//!   test payment methods), `GET /v1/payment_intents/{id}`,
//!   `POST /v1/payment_intents/{id}/capture|cancel`, `POST /v1/refunds`, with bearer auth and
//!   Stripe's `Idempotency-Key` semantics (first result replayed; same key, other parameters:
//!   error), `POST /v1/transfers` (payouts to `acct_…` destinations) and
//!   `POST /v1/transfers/{id}/reversals` (taking part of a payout back after a refund).
//!   `POST /sandbox/payment_intents` creates intents in any status.
//! - Merchant webhook receivers at `POST /merchants/{id}/webhook` that verify Standard Webhooks
//!   signatures and count what arrives (duplicates by `webhook-id` too), with configurable
//!   latency, failure rate, downtime, forced status and `Retry-After`
//!   (`PUT /sandbox/merchants/{id}`, read back with `GET`).
//!
//! - Tracking providers ([`tracking`]): AfterShip-compatible under `/aftership`,
//!   17TRACK-compatible under `/17track`, Kuaidi100-compatible under `/kuaidi100`, sharing
//!   scripted parcel lives and a per-second rate limit.
//!
//! State lives in memory: the sandbox plays parties whose own storage is not souk's concern.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::webhook::verify;

mod intents;
pub mod tracking;
mod transfers;

use intents::{cancel, capture, create, create_intent, refund, retrieve};
use transfers::{reverse_transfer, transfer};

#[derive(Debug, Clone)]
struct Intent {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    amount_received: i64,
    amount_refunded: i64,
    /// While set and in the future, the intent reports `processing`; then `then`.
    processing_until: Option<Instant>,
    then: String,
    /// `manual` (capture later, what souk expects) or `automatic`.
    capture_method: &'static str,
}

impl Intent {
    fn settle(&mut self) {
        if let Some(t) = self.processing_until {
            if Instant::now() >= t {
                self.processing_until = None;
                self.status = self.then.clone();
                if self.status == "succeeded" {
                    self.amount_received = self.amount;
                }
            }
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "amount_received": self.amount_received,
            "amount_capturable": if self.status == "requires_capture" { self.amount } else { 0 },
            "capture_method": self.capture_method,
            "livemode": false,
            "latest_charge": {"object": "charge", "amount_refunded": self.amount_refunded},
        })
    }
}

/// How a merchant endpoint behaves, and what it received.
#[derive(Debug, Default)]
struct Endpoint {
    secrets: Vec<String>,
    latency_ms: u64,
    fail_rate: f64,
    down_until: Option<Instant>,
    status: Option<u16>,
    retry_after_s: Option<u64>,
    seen: HashSet<String>,
    received: u64,
    duplicates: u64,
    bad_signatures: u64,
    events: Vec<(String, String)>,
    /// The first bodies received (first arrivals only, up to [`KEPT_BODIES`]), as sent.
    bodies: Vec<String>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: u64,
    max_in_flight: u64,
}

/// How many webhook bodies an endpoint keeps for [`Sandbox::received_bodies`].
const KEPT_BODIES: usize = 2_000;

/// Settings of a merchant endpoint (`PUT /sandbox/merchants/{id}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub fail_rate: Option<f64>,
    /// Answer 503 for this long from now.
    #[serde(default)]
    pub down_for_ms: Option<u64>,
    /// Answer this status to everything (0 clears it).
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub retry_after_s: Option<u64>,
}

/// What a merchant endpoint reports (`GET /sandbox/merchants/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointReport {
    pub received: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    /// (webhook-id, type) in arrival order, first arrivals only.
    pub events: Vec<(String, String)>,
    /// The most requests this endpoint was answering at once.
    #[serde(default)]
    pub max_in_flight: u64,
}

/// The sandbox's state.
pub struct Sandbox {
    api_key: String,
    seq: AtomicU64,
    intents: Mutex<HashMap<String, Intent>>,
    idempotency: Mutex<HashMap<String, (String, u16, Value)>>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    counters: Mutex<HashMap<&'static str, u64>>,
    /// The tracking provider stand-in.
    pub couriers: tracking::Couriers,
    transfers: Mutex<Vec<(String, i64, String, String)>>,
    /// Transfer reversals: (reversal id, transfer id, amount).
    reversals: Mutex<Vec<(String, String, i64)>>,
}

impl Sandbox {
    pub fn new(api_key: &str) -> Arc<Self> {
        Arc::new(Self {
            api_key: api_key.to_owned(),
            seq: AtomicU64::new(1),
            intents: Mutex::default(),
            idempotency: Mutex::default(),
            endpoints: Mutex::default(),
            counters: Mutex::default(),
            couriers: tracking::Couriers::default(),
            transfers: Mutex::default(),
            reversals: Mutex::default(),
        })
    }

    fn count(&self, what: &'static str) {
        *lock(&self.counters).entry(what).or_insert(0) += 1;
    }

    /// Creates a payment intent directly (what a storefront's checkout does at Stripe).
    pub fn create_intent(
        &self,
        amount: i64,
        currency: &str,
        status: &str,
        processing_for: Option<Duration>,
    ) -> String {
        self.new_intent(amount, currency, status, processing_for, "manual")
    }

    fn new_intent(
        &self,
        amount: i64,
        currency: &str,
        status: &str,
        processing_for: Option<Duration>,
        capture_method: &'static str,
    ) -> String {
        let id = format!("pi_sbx{:010}", self.seq.fetch_add(1, Ordering::Relaxed));
        let (now_status, until) = match processing_for {
            Some(d) => ("processing".to_owned(), Some(Instant::now() + d)),
            None => (status.to_owned(), None),
        };
        let intent = Intent {
            id: id.clone(),
            amount,
            currency: currency.to_lowercase(),
            amount_received: if now_status == "succeeded" { amount } else { 0 },
            status: now_status,
            amount_refunded: 0,
            processing_until: until,
            then: status.to_owned(),
            capture_method,
        };
        lock(&self.intents).insert(id.clone(), intent);
        id
    }

    /// Configures a merchant endpoint.
    pub fn configure_endpoint(&self, merchant: &str, s: &EndpointSettings) {
        let mut eps = lock(&self.endpoints);
        let e = eps.entry(merchant.to_owned()).or_default();
        if let Some(v) = &s.secrets {
            e.secrets = v.clone();
        }
        if let Some(v) = s.latency_ms {
            e.latency_ms = v;
        }
        if let Some(v) = s.fail_rate {
            e.fail_rate = v;
        }
        if let Some(v) = s.down_for_ms {
            e.down_until = Some(Instant::now() + Duration::from_millis(v));
        }
        if let Some(v) = s.status {
            e.status = (v != 0).then_some(v);
        }
        if let Some(v) = s.retry_after_s {
            e.retry_after_s = (v != 0).then_some(v);
        }
    }

    /// Every merchant's first webhook bodies as received (verified ones, duplicates left out):
    /// (merchant, body).
    pub fn received_bodies(&self) -> Vec<(String, String)> {
        lock(&self.endpoints)
            .iter()
            .flat_map(|(m, e)| e.bodies.iter().map(move |b| (m.clone(), b.clone())))
            .collect()
    }

    pub fn endpoint_report(&self, merchant: &str) -> EndpointReport {
        let eps = lock(&self.endpoints);
        match eps.get(merchant) {
            Some(e) => EndpointReport {
                received: e.received,
                distinct: e.seen.len() as u64,
                duplicates: e.duplicates,
                bad_signatures: e.bad_signatures,
                events: e.events.clone(),
                max_in_flight: e.max_in_flight,
            },
            None => EndpointReport {
                received: 0,
                distinct: 0,
                duplicates: 0,
                bad_signatures: 0,
                events: Vec::new(),
                max_in_flight: 0,
            },
        }
    }

    /// Calls served so far by kind (`capture`, `cancel`, `refund`, `retrieve`, `replayed`).
    pub fn counters(&self) -> HashMap<&'static str, u64> {
        lock(&self.counters).clone()
    }

    /// An intent's (status, amount_received, amount_refunded).
    pub fn intent_state(&self, id: &str) -> Option<(String, i64, i64)> {
        let mut intents = lock(&self.intents);
        let i = intents.get_mut(id)?;
        i.settle();
        Some((i.status.clone(), i.amount_received, i.amount_refunded))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stripe_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

/// Stripe's answer to a request without the sandbox's bearer key; `None` when it has the key.
fn without_key(sb: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    (!authorised(sb, headers)).then(|| {
        stripe_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Invalid API Key provided",
        )
    })
}

/// Stripe's answer for an unknown PaymentIntent, as `idempotent` records it.
fn no_such_intent() -> (u16, Value) {
    (
        404,
        stripe_error_body(
            "invalid_request_error",
            "resource_missing",
            "No such payment_intent",
        ),
    )
}

/// An error body in Stripe's shape, with a `code` (and more fields, such as `param`).
fn stripe_error_body(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"type": kind, "code": code, "message": message}})
}

fn authorised(sb: &Sandbox, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v == format!("Bearer {}", sb.api_key))
        .unwrap_or(false)
}

/// Runs a mutating call once per idempotency key, replaying the first answer.
fn idempotent(
    sb: &Sandbox,
    headers: &HeaderMap,
    fingerprint: String,
    f: impl FnOnce() -> (u16, Value),
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(k) = &key {
        if let Some((fp, status, body)) = lock(&sb.idempotency).get(k).cloned() {
            if fp != fingerprint {
                return stripe_error(StatusCode::BAD_REQUEST, "idempotency_error", "Keys for idempotent requests can only be used with the same parameters they were first used with.");
            }
            sb.count("replayed");
            return (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body)).into_response();
        }
    }
    let (status, body) = f();
    if let Some(k) = key {
        lock(&sb.idempotency).insert(k, (fingerprint, status, body.clone()));
    }
    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body)).into_response()
}

async fn put_endpoint(
    State(sb): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    Json(s): Json<EndpointSettings>,
) -> Response {
    sb.configure_endpoint(&id, &s);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_endpoint(State(sb): State<Arc<Sandbox>>, Path(id): Path<String>) -> Response {
    Json(sb.endpoint_report(&id)).into_response()
}

/// Counts a request to a merchant endpoint as in flight until dropped.
struct Answering<'a> {
    sb: &'a Sandbox,
    merchant: &'a str,
}

impl<'a> Answering<'a> {
    fn start(sb: &'a Sandbox, merchant: &'a str) -> Self {
        let mut eps = lock(&sb.endpoints);
        let e = eps.entry(merchant.to_owned()).or_default();
        e.in_flight += 1;
        e.max_in_flight = e.max_in_flight.max(e.in_flight);
        Self { sb, merchant }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.sb.endpoints).get_mut(self.merchant) {
            e.in_flight -= 1;
        }
    }
}

async fn receive(
    State(sb): State<Arc<Sandbox>>,
    Path(merchant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let _answering = Answering::start(&sb, &merchant);
    let (latency, fail_rate, down, status, retry_after, secrets) = {
        let eps = lock(&sb.endpoints);
        let e = eps.get(&merchant);
        (
            e.map(|e| e.latency_ms).unwrap_or(0),
            e.map(|e| e.fail_rate).unwrap_or(0.0),
            e.and_then(|e| e.down_until)
                .map(|t| Instant::now() < t)
                .unwrap_or(false),
            e.and_then(|e| e.status),
            e.and_then(|e| e.retry_after_s),
            e.map(|e| e.secrets.clone()).unwrap_or_default(),
        )
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let with_retry_after = |code: StatusCode| {
        let mut r = (code, "unavailable").into_response();
        if let Some(s) = retry_after {
            if let Ok(v) = s.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    };
    if down {
        return with_retry_after(StatusCode::SERVICE_UNAVAILABLE);
    }
    if let Some(code) = status {
        return with_retry_after(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    }
    if fail_rate > 0.0 && fastrand::f64() < fail_rate {
        return with_retry_after(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let now = chrono::Utc::now().timestamp();
    let ok = ts
        .parse::<i64>()
        .ok()
        .map(|t| verify(&secrets, &id, t, &sig, &body, now, Duration::from_secs(300)).is_ok())
        .unwrap_or(false);
    // The event's type, read before taking the lock every endpoint shares (and without
    // building the whole payload as a JSON tree).
    #[derive(serde::Deserialize)]
    struct Kind {
        r#type: String,
    }
    let kind = if ok {
        serde_json::from_str::<Kind>(&body)
            .map(|k| k.r#type)
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut eps = lock(&sb.endpoints);
    let e = eps.entry(merchant.clone()).or_default();
    if !ok {
        e.bad_signatures += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    e.received += 1;
    if e.seen.insert(id.clone()) {
        e.events.push((id, kind));
        if e.bodies.len() < KEPT_BODIES {
            e.bodies.push(body);
        }
    } else {
        e.duplicates += 1;
    }
    (StatusCode::OK, "ok").into_response()
}

async fn stats(State(sb): State<Arc<Sandbox>>) -> Response {
    Json(json!(sb.counters())).into_response()
}

/// The sandbox's router.
pub fn router(sb: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(create))
        .route("/v1/payment_intents/{id}", get(retrieve))
        .route("/v1/payment_intents/{id}/capture", post(capture))
        .route("/v1/payment_intents/{id}/cancel", post(cancel))
        .route("/v1/refunds", post(refund))
        .route("/v1/transfers", post(transfer))
        .route("/v1/transfers/{id}/reversals", post(reverse_transfer))
        .route("/sandbox/payment_intents", post(create_intent))
        .route("/sandbox/merchants/{id}", get(get_endpoint).put(put_endpoint))
        .route("/sandbox/stats", get(stats))
        .route("/merchants/{id}/webhook", post(receive))
        .route("/aftership/trackings", post(tracking::create))
        .route(
            "/aftership/trackings/{slug}/{number}",
            get(tracking::get_tracking),
        )
        .route("/17track/register", post(tracking::track17_register))
        .route("/17track/gettrackinfo", post(tracking::track17_info))
        .route("/kuaidi100/poll/query.do", post(tracking::kuaidi100_query))
        .with_state(sb)
}

/// What `souk sandbox` prints at start: where it listens and every route it serves.
pub fn banner(addr: SocketAddr, api_key: &str) -> String {
    let mut b = format!(
        "sandbox on http://{addr}\n\
         payments (Stripe API; payment.base_url=http://{addr}, bearer key {api_key}):\n\
         \x20 POST /v1/payment_intents            form: amount, currency, capture_method=manual, confirm=true, payment_method\n\
         \x20 GET  /v1/payment_intents/{{id}}\n\
         \x20 POST /v1/payment_intents/{{id}}/capture   amount_to_capture\n\
         \x20 POST /v1/payment_intents/{{id}}/cancel\n\
         \x20 POST /v1/refunds                      payment_intent, amount\n\
         \x20 POST /v1/transfers, /v1/transfers/{{id}}/reversals\n\
         test payment methods:\n"
    );
    for (m, what) in intents::PAYMENT_METHODS {
        b.push_str(&format!("  {m:<32} {what}\n"));
    }
    b.push_str(&format!(
        "sandbox controls:\n\
         \x20 POST /sandbox/payment_intents        JSON {{amount, currency, status, processing_ms}}\n\
         \x20 PUT|GET /sandbox/merchants/{{id}}     endpoint behaviour / what it received\n\
         \x20 GET  /sandbox/stats\n\
         merchant webhook receivers: POST http://{addr}/merchants/{{id}}/webhook\n\
         tracking providers: /aftership, /17track, /kuaidi100"
    ));
    b
}

/// Serves the sandbox on `addr` (port 0 picks one) in the background; returns where.
pub async fn start(
    addr: SocketAddr,
    sb: Arc<Sandbox>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(sb)).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    });
    Ok((local, handle))
}
