//! The ops HTTP server: `/healthz` (the process answers), `/readyz` (Redis and PostgreSQL
//! answer within 2 s), `/metrics` (Prometheus text), and the admin API under `/admin` when
//! `admin.token` is set (bearer token, compared in constant time).
//!
//! Admin API: `GET/POST /admin/merchants`, `PATCH /admin/merchants/{id}`,
//! `POST /admin/merchants/{id}/rotate-secret[?drop_old=true]`, `POST /admin/decisions`
//! (enqueued on the storefront stream like any merchant decision), `POST /admin/commands`,
//! `GET /admin/orders/{id}`, and a merchant's API keys, address-read log and test webhooks
//! ([`merchant_admin`]); every route is in [`ADMIN_ROUTES`] and docs/openapi/admin.json.
//! Merchants have an API of their own (`crate::merchant_api`).
//! Answers never contain secrets except the new secret a create or rotate returns once.
//!
//! Tracking pushes: `POST /webhooks/tracking/{aftership,17track,kuaidi100}` when
//! `tracking.webhook_secret` is set (verified: AfterShip HMAC, 17TRACK token, Kuaidi100 MD5
//! sign; a push only makes souk poll that parcel now).

mod merchant_admin;

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    admin::{self, AdminError},
    app::App,
    domain::ids::ShipmentId,
    store::merchants::{self, MerchantInput},
};

/// The admin API's OpenAPI 3.1 document (kept in docs/, checked against [`ADMIN_ROUTES`]).
pub const ADMIN_OPENAPI: &str = include_str!("../../docs/openapi/admin.json");

/// Every route of the admin API: method and path, as in the OpenAPI paths.
pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/merchants"),
    ("POST", "/admin/merchants"),
    ("PATCH", "/admin/merchants/{id}"),
    ("POST", "/admin/merchants/{id}/rotate-secret"),
    ("POST", "/admin/decisions"),
    ("POST", "/admin/commands"),
    ("GET", "/admin/orders/{id}"),
    ("GET", "/admin/merchants/{id}/keys"),
    ("POST", "/admin/merchants/{id}/keys"),
    ("POST", "/admin/merchants/{id}/keys/{key}/rotate"),
    ("POST", "/admin/merchants/{id}/keys/{key}/revoke"),
    ("GET", "/admin/merchants/{id}/address-reads"),
    ("POST", "/admin/merchants/{id}/test-webhook"),
    ("POST", "/admin/merchants/{id}/demand-history"),
    ("GET", "/admin/openapi.json"),
];

/// The ops router (with the admin API when a token is configured).
pub fn router(app: App) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { crate::queue::metrics::render() }));
    if !app.config.tracking.webhook_secret.expose().is_empty() {
        r = r
            .route("/webhooks/tracking/aftership", post(aftership_push))
            .route("/webhooks/tracking/17track", post(track17_push))
            .route("/webhooks/tracking/kuaidi100", post(kuaidi100_push));
    }
    if !app.config.admin.token.expose().is_empty() {
        let admin = Router::new()
            .route("/admin/merchants", get(list_merchants).post(add_merchant))
            .route("/admin/merchants/{id}", patch(update_merchant))
            .route("/admin/merchants/{id}/rotate-secret", post(rotate_secret))
            .route("/admin/decisions", post(decision))
            .route("/admin/commands", post(command))
            .route("/admin/orders/{id}", get(show_order))
            .route(
                "/admin/openapi.json",
                get(|| async { ([("content-type", "application/json")], ADMIN_OPENAPI) }),
            )
            .merge(merchant_admin::routes())
            .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
        r = r.merge(admin);
    }
    r.with_state(app)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(app): State<App>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), app.config.admin.token.expose().as_bytes()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong bearer token"})),
        )
            .into_response()
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Db(e) => {
                tracing::error!(error = %e, "admin request failed");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "internal error"})),
                )
                    .into_response();
            }
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

async fn list_merchants(State(app): State<App>) -> Result<Response, AdminError> {
    Ok(Json(merchants::list(&app.pool).await?).into_response())
}

#[derive(Deserialize)]
struct NewMerchant {
    id: String,
    #[serde(flatten)]
    fields: MerchantInput,
}

async fn add_merchant(State(app): State<App>, Json(m): Json<NewMerchant>) -> Result<Response, AdminError> {
    let secret = admin::add_merchant(&app, &m.id, &m.fields).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": m.id, "signing_secret": secret})),
    )
        .into_response())
}

async fn update_merchant(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(m): Json<MerchantInput>,
) -> Result<Response, AdminError> {
    admin::update_merchant(&app, &id, &m).await?;
    Ok(Json(merchants::get(&app.pool, &id).await?).into_response())
}

#[derive(Deserialize)]
struct RotateQuery {
    #[serde(default)]
    drop_old: bool,
}

async fn rotate_secret(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<RotateQuery>,
) -> Result<Response, AdminError> {
    let secret = admin::rotate_secret(&app, &id, q.drop_old).await?;
    Ok(
        Json(json!({"id": id, "signing_secret": secret, "previous_secret_kept": !q.drop_old}))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    storefront_order_id: String,
    merchant_id: String,
    decision: crate::domain::order::Decision,
    #[serde(default)]
    reason: Option<String>,
}

async fn decision(State(app): State<App>, Json(b): Json<DecisionBody>) -> Result<Response, AdminError> {
    let cmd = crate::domain::order::StorefrontCommand::MerchantDecision {
        version: 1,
        storefront_order_id: b.storefront_order_id,
        merchant_id: b.merchant_id,
        decision: b.decision,
        reason: b.reason,
    };
    let entry = app
        .producer
        .push(crate::enqueue::STOREFRONT, &cmd)
        .await
        .map_err(|e| AdminError::Invalid(format!("could not enqueue: {e}")))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"enqueued": entry}))).into_response())
}

/// Any storefront command (a shipment, a return step, a complaint message…) sent by an
/// operator: checked against the schema here (422 with the reason), then
/// enqueued on the storefront stream like the storefront's own.
async fn command(State(app): State<App>, body: axum::body::Bytes) -> Result<Response, AdminError> {
    let text = std::str::from_utf8(&body).map_err(|_| AdminError::Invalid("the body is not UTF-8".into()))?;
    crate::domain::order::parse_command(text).map_err(|r| AdminError::Invalid(r.to_string()))?;
    let entry = app
        .producer
        .push_raw(crate::enqueue::STOREFRONT, text)
        .await
        .map_err(|e| AdminError::Invalid(format!("could not enqueue: {e}")))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"enqueued": entry}))).into_response())
}

async fn show_order(State(app): State<App>, Path(id): Path<String>) -> Result<Response, AdminError> {
    Ok(Json(admin::order_story(&app.pool, &id).await?).into_response())
}

async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    let mut conn = app.conn.clone();
    let redis_ok = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let pg_ok = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&app.pool))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let body = format!("redis: {}\npostgres: {}\n", ok(redis_ok), ok(pg_ok));
    if redis_ok && pg_ok {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

fn ok(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "unreachable"
    }
}

fn bad_signature(provider: &str) -> Response {
    tracing::warn!(provider, "tracking push with a bad signature refused");
    (StatusCode::UNAUTHORIZED, "bad signature\n").into_response()
}

/// An AfterShip push: `aftership-hmac-sha256` verified (401 otherwise); the number is at
/// `msg.tracking_number`.
async fn aftership_push(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let signature = headers
        .get("aftership-hmac-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let secret = app.config.tracking.webhook_secret.expose();
    if !crate::domain::tracking::signature::aftership_ok(secret, &body, signature) {
        return bad_signature("aftership");
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match v["msg"]["tracking_number"].as_str() {
        Some(number) => poll_hint(&app, number).await,
        None => (StatusCode::BAD_REQUEST, "msg.tracking_number missing\n").into_response(),
    }
}

/// A 17TRACK push: the account's token in header `17token` (401 otherwise); the number is at
/// `data.number`.
async fn track17_push(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = headers.get("17token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !crate::domain::tracking::signature::track17_ok(app.config.tracking.webhook_secret.expose(), token) {
        return bad_signature("17track");
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match v["data"]["number"].as_str() {
        Some(number) => poll_hint(&app, number).await,
        None => (StatusCode::BAD_REQUEST, "data.number missing\n").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Kuaidi100Push {
    param: String,
    sign: String,
}

/// A Kuaidi100 push: form fields `param` (JSON) and `sign` = MD5(param + salt) (401 otherwise);
/// the number is at `lastResult.nu`. Kuaidi100 expects `{"result": true, "returnCode": "200"}`.
async fn kuaidi100_push(State(app): State<App>, axum::Form(f): axum::Form<Kuaidi100Push>) -> Response {
    let salt = app.config.tracking.webhook_secret.expose();
    if !crate::domain::tracking::signature::kuaidi100_ok(&f.param, salt, &f.sign) {
        return bad_signature("kuaidi100");
    }
    let v: serde_json::Value = serde_json::from_str(&f.param).unwrap_or_default();
    let Some(number) = v["lastResult"]["nu"].as_str() else {
        return (StatusCode::BAD_REQUEST, "lastResult.nu missing\n").into_response();
    };
    let r = poll_hint(&app, number).await;
    if r.status() != StatusCode::OK {
        return r;
    }
    Json(json!({"result": true, "returnCode": "200", "message": "ok"})).into_response()
}

/// A verified push is only a hint: each open shipment with that tracking number is polled at
/// once by a one-off job (its regular poll schedule is unchanged).
async fn poll_hint(app: &App, number: &str) -> Response {
    let number = crate::domain::tracking::carrier::normalise(number);
    let ids = match crate::store::shipments::open_by_number(&app.pool, &number).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "tracking push: database");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response();
        }
    };
    let mut polls = 0;
    for id in &ids {
        match crate::enqueue::poll_hint(app, ShipmentId(*id)).await {
            Ok(pushed) => polls += usize::from(pushed),
            Err(e) => {
                tracing::error!(error = %e, "tracking push: queue");
                return (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response();
            }
        }
    }
    // `polls` < `shipments` when a poll was already waiting for a shipment (a replay).
    Json(json!({"shipments": ids.len(), "polls": polls})).into_response()
}

/// Serves the ops router on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, admin = !app.config.admin.token.expose().is_empty(), "ops server listening");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}
