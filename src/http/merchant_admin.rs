//! The admin API's merchant-facing tools: a merchant's API keys (`/admin/merchants/{id}/keys`),
//! the log of its reads of customer addresses, and test webhooks to its endpoint. Same bearer
//! token as the rest of `/admin`; a key is shown once, when created or rotated.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    admin::AdminError,
    app::App,
    merchant_api::{keys, test_webhook},
};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin/merchants/{id}/keys", get(list_keys).post(create_key))
        .route("/admin/merchants/{id}/keys/{key}/rotate", post(rotate_key))
        .route("/admin/merchants/{id}/keys/{key}/revoke", post(revoke_key))
        .route("/admin/merchants/{id}/address-reads", get(address_reads))
        .route("/admin/merchants/{id}/test-webhook", post(test))
        .route(
            "/admin/merchants/{id}/demand-history",
            post(import_history).layer(axum::extract::DefaultBodyLimit::max(HISTORY_MAX)),
        )
}

/// A history sent over HTTP is held in memory: larger files go through `souk forecast import`.
const HISTORY_MAX: usize = 64 << 20;

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(default)]
    replace: bool,
    format: Option<String>,
}

/// A merchant's daily sales history (CSV or JSON lines, as `souk forecast import`): checked
/// whole, then written; 422 with every refused line (and nothing written) when any is bad.
async fn import_history(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    use crate::forecast::import::{self, Source};
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = import::format_of(q.format.as_deref(), kind).ok_or_else(|| {
        AdminError::Invalid("send content-type text/csv or application/x-ndjson, or ?format=csv|jsonl".into())
    })?;
    if crate::store::merchants::get(&app.pool, &id).await?.is_none() {
        return Err(AdminError::NotFound(format!("merchant {id}")));
    }
    let out = import::import(
        &app.pool,
        &id,
        &Source::Bytes(body.to_vec()),
        format,
        q.replace,
        |_, _| {},
    )
    .await
    .map_err(|e| match e.downcast::<sqlx::Error>() {
        Ok(db) => AdminError::Db(db),
        Err(e) => AdminError::Invalid(e.to_string()),
    })?;
    let status = if out.error_count > 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default = "act")]
    scope: String,
    #[serde(default)]
    label: Option<String>,
}

fn act() -> String {
    "act".into()
}

async fn list_keys(State(app): State<App>, Path(id): Path<String>) -> Result<Response, AdminError> {
    Ok(Json(keys::list(&app.pool, &id).await?).into_response())
}

async fn create_key(
    State(app): State<App>,
    Path(id): Path<String>,
    Json(b): Json<NewKey>,
) -> Result<Response, AdminError> {
    let k = keys::create(&app.pool, &id, keys::Scope::parse(&b.scope)?, b.label.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(k)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    #[serde(default = "a_day")]
    overlap_s: u32,
}

fn a_day() -> u32 {
    86_400
}

async fn rotate_key(
    State(app): State<App>,
    Path((id, key)): Path<(String, String)>,
    Json(b): Json<Rotate>,
) -> Result<Response, AdminError> {
    let k = keys::rotate(&app.pool, &id, &key, b.overlap_s).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"replaces": key, "overlap_s": b.overlap_s, "new": k})),
    )
        .into_response())
}

async fn revoke_key(
    State(app): State<App>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, AdminError> {
    keys::revoke(&app.pool, &id, &key).await?;
    Ok(Json(json!({"revoked": key})).into_response())
}

#[derive(Deserialize)]
struct Since {
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<i64>,
}

/// Who read the merchant's customers' addresses, newest first (default: the last 30 days).
async fn address_reads(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<Since>,
) -> Result<Response, AdminError> {
    let since = q
        .since
        .unwrap_or_else(|| chrono::Utc::now() - chrono::Duration::days(30));
    let limit = q.limit.unwrap_or(500);
    if !(1..=10_000).contains(&limit) {
        return Err(AdminError::Invalid("limit is 1 to 10000".into()));
    }
    let rows = crate::store::merchant_api::reads::address_reads(&app.pool, &id, since, limit).await?;
    Ok(Json(json!({"merchant_id": id, "since": since, "reads": rows})).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Test {
    #[serde(default)]
    event_type: Option<String>,
}

async fn test(
    State(app): State<App>,
    Path(id): Path<String>,
    b: Result<Option<Json<Test>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let only = b
        .map_err(|e| AdminError::Invalid(e.body_text()))?
        .and_then(|Json(b)| b.event_type);
    let sent = test_webhook::run(&app, &id, only.as_deref()).await?;
    Ok(Json(test_webhook::report(&sent)).into_response())
}
