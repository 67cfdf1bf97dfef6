//! What a merchant reads: its sub-orders, returns, complaints, stock, webhook deliveries, KPIs
//! and forecasts. Every query names the caller's merchant, so another merchant's id is simply
//! not found (404), never forbidden (which would say it exists).

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{keys::Scope, Client, Problem, Who};
use crate::{app::App, store::merchant_api::reads as sql};

/// `?limit=&cursor=` of every list (and the filters some take).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub state: Option<String>,
    pub status: Option<String>,
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(v)| v)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", &e.body_text()))
}

fn limit(q: &ListQuery) -> Result<i64, Problem> {
    match q.limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit is 1 to 200",
        )),
    }
}

/// A cursor is opaque to clients: the last row's sort key, in URL-safe base64.
fn encode_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_cursor(c: &Option<String>) -> Result<Option<String>, Problem> {
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "the cursor is not one this API gave",
        )
    };
    match c.as_deref() {
        // `?cursor=` with an empty value: the first page, as a client passing on a null
        // `next_cursor` means.
        None | Some("") => Ok(None),
        Some(c) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| bad())?;
            String::from_utf8(bytes).map(Some).map_err(|_| bad())
        }
    }
}

/// A filter's value must be one it can match: a typo is refused, not answered with nothing.
fn one_of(name: &str, v: &Option<String>, allowed: &[&str]) -> Result<(), Problem> {
    match v {
        Some(s) if !allowed.contains(&s.as_str()) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            &format!("{name} is one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn bad_cursor() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
        "the cursor is not one this API gave",
    )
}

/// A `(time, id)` cursor: micros since the epoch and the row's id, as `micros.id`.
fn pair_cursor(c: &Option<String>) -> Result<Option<(i64, String)>, Problem> {
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "the cursor is not one this API gave",
        )
    };
    match decode_cursor(c)? {
        None => Ok(None),
        Some(s) => {
            let (a, b) = s.split_once('.').ok_or_else(bad)?;
            Ok(Some((a.parse().map_err(|_| bad())?, b.to_owned())))
        }
    }
}

/// `{"data": [...], "next_cursor": ...}`: a next cursor only when the page was full.
fn page(rows: Vec<Value>, limit: i64, key: impl Fn(&Value) -> String) -> Response {
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(&key(r))))
        .flatten();
    Json(json!({"data": rows, "next_cursor": next})).into_response()
}

/// `GET /merchant/v1/sub-orders?state=&limit=&cursor=`: newest first.
pub async fn sub_orders(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let n = limit(&q)?;
    one_of("state", &q.state, sql::STATES)?;
    let after = match pair_cursor(&q.cursor)? {
        None => None,
        Some((at, id)) => Some((at, id.parse::<i64>().map_err(|_| bad_cursor())?)),
    };
    let rows = sql::sub_orders(
        &app.pool,
        &who.merchant_id,
        app.config.tracking.ship_by_s as i64,
        q.state.as_deref(),
        after,
        n,
    )
    .await?;
    let next = (rows.len() as i64 == n)
        .then(|| {
            rows.last()
                .map(|(j, us)| encode_cursor(&format!("{us}.{}", j["id"])))
        })
        .flatten();
    let data: Vec<Value> = rows.into_iter().map(|(j, _)| j).collect();
    Ok(Json(json!({"data": data, "next_cursor": next})).into_response())
}

fn parse_id(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().filter(|n| *n > 0)
}

/// `GET /merchant/v1/sub-orders/{id}`: lines, parcels, timeline, and the customer's name and
/// address while the sub-order is to ship and `merchant_api.address_visible_days` after it
/// shipped (each such answer logged in `address_reads`).
pub async fn sub_order(
    State(app): State<App>,
    Extension(who): Who,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let Some(id) = parse_id(&id) else {
        return Err(Problem::not_found("sub-order"));
    };
    let row = sql::sub_order(
        &app.pool,
        &who.merchant_id,
        id,
        app.config.tracking.ship_by_s as i64,
        app.config.merchant_api.address_visible_days as i32,
    )
    .await?;
    let Some(row) = row else {
        return Err(Problem::not_found("sub-order"));
    };
    let mut j = row.json;
    if row.address_visible {
        sql::log_address_read(&app.pool, &who.merchant_id, &who.key_id, id, &client.0).await?;
        j["customer"] = json!({"name": row.name});
        j["shipping_address"] = row.address;
        j["address_visible_until"] = json!(row.visible_until);
    } else {
        j["customer"] = Value::Null;
        j["shipping_address"] = Value::Null;
        j["address_visible_until"] = Value::Null;
    }
    Ok(Json(j).into_response())
}

/// `GET /merchant/v1/returns?status=`: newest first.
pub async fn returns(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let n = limit(&q)?;
    let after = id_cursor(&q.cursor)?;
    one_of("status", &q.status, sql::RETURN_STATUSES)?;
    let rows = sql::returns(&app.pool, &who.merchant_id, q.status.as_deref(), after, n).await?;
    Ok(id_page(rows, n))
}

fn id_cursor(c: &Option<String>) -> Result<i64, Problem> {
    match decode_cursor(c)? {
        None => Ok(i64::MAX),
        Some(s) => s.parse().map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "the cursor is not one this API gave",
            )
        }),
    }
}

/// A page keyed by the hidden `_id` member, which is removed.
fn id_page(rows: Vec<Value>, n: i64) -> Response {
    let last = rows.last().map(|r| r["_id"].to_string());
    let full = rows.len() as i64 == n;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.remove("_id");
            }
            r
        })
        .collect();
    let next = if full {
        last.map(|l| encode_cursor(&l))
    } else {
        None
    };
    Json(json!({"data": data, "next_cursor": next})).into_response()
}

/// `GET /merchant/v1/complaints?status=`: newest first.
pub async fn complaints(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let n = limit(&q)?;
    let after = id_cursor(&q.cursor)?;
    one_of("status", &q.status, sql::COMPLAINT_STATUSES)?;
    let rows = sql::complaints(&app.pool, &who.merchant_id, q.status.as_deref(), after, n).await?;
    Ok(id_page(rows, n))
}

/// `GET /merchant/v1/complaints/{id}`: the case with every message.
pub async fn complaint(
    State(app): State<App>,
    Extension(who): Who,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let row = sql::complaint(&app.pool, &who.merchant_id, &id).await?;
    row.map(|j| Json(j).into_response())
        .ok_or_else(|| Problem::not_found("complaint"))
}

/// `GET /merchant/v1/stock`: by SKU.
pub async fn stock_list(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let n = limit(&q)?;
    let after = decode_cursor(&q.cursor)?.unwrap_or_default();
    let rows = sql::stock(&app.pool, &who.merchant_id, &after, n).await?;
    Ok(page(rows, n, |r| {
        r["sku"].as_str().unwrap_or_default().to_owned()
    }))
}

/// `GET /merchant/v1/stock/{sku}`.
pub async fn stock_one(
    State(app): State<App>,
    Extension(who): Who,
    Path(sku): Path<String>,
) -> Result<Response, Problem> {
    let row = sql::stock_one(&app.pool, &who.merchant_id, &sku).await?;
    row.map(|j| Json(j).into_response())
        .ok_or_else(|| Problem::not_found("SKU"))
}

/// `GET /merchant/v1/webhooks/deliveries?status=`: newest first, with the last attempt.
pub async fn deliveries(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let n = limit(&q)?;
    let after = pair_cursor(&q.cursor)?;
    one_of("status", &q.status, sql::DELIVERY_STATUSES)?;
    let rows = sql::deliveries(&app.pool, &who.merchant_id, q.status.as_deref(), after, n).await?;
    let next = (rows.len() as i64 == n)
        .then(|| {
            rows.last()
                .map(|(j, us)| encode_cursor(&format!("{us}.{}", j["id"].as_str().unwrap_or_default())))
        })
        .flatten();
    let data: Vec<Value> = rows.into_iter().map(|(j, _)| j).collect();
    Ok(Json(json!({"data": data, "next_cursor": next})).into_response())
}

/// `GET /merchant/v1/webhooks/deliveries/{id}`: with every attempt and the body sent.
pub async fn delivery(
    State(app): State<App>,
    Extension(who): Who,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let row = sql::delivery(&app.pool, &who.merchant_id, &id).await?;
    row.map(|j| Json(j).into_response())
        .ok_or_else(|| Problem::not_found("webhook delivery"))
}

/// `GET /merchant/v1/webhooks/secret` (act keys only: it lets its holder sign as souk).
pub async fn secret(State(app): State<App>, Extension(who): Who) -> Result<Response, Problem> {
    if who.scope != Scope::Act {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "read_only_key",
            "the signing secret is shown to keys with scope act only",
        ));
    }
    let secrets = sql::signing_secrets(&app.pool, &who.merchant_id).await?;
    Ok(
        Json(json!({"signing_secrets": secrets, "note": "newest first; every one signs during a rotation"}))
            .into_response(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaysQuery {
    pub days: Option<i64>,
    pub sku: Option<String>,
}

/// `GET /merchant/v1/kpis?days=30`: the figures of `souk merchants kpis`, from the daily KPI
/// rows (`compute_kpis` keeps them current).
pub async fn kpis(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<DaysQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let days = q.days.unwrap_or(30);
    if !(1..=3650).contains(&days) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "days is 1 to 3650",
        ));
    }
    let to = chrono::Utc::now().date_naive();
    let from = to - chrono::Duration::days(days - 1);
    let k = crate::store::kpis::summary(&app.pool, &who.merchant_id, from, to).await?;
    Ok(Json(json!({"from": from, "to": to, "kpis": k})).into_response())
}

/// `GET /merchant/v1/forecasts?sku=`: the latest run's advice and forecast per SKU, riskiest
/// first (the figures of `souk forecast show`).
pub async fn forecasts(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<DaysQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let rows = crate::store::forecasts::latest_advice(&app.pool, &who.merchant_id, q.sku.as_deref()).await?;
    // The run's period, else the merchant's (a weekly merchant's arrays hold one value a week).
    let granularity = match rows.first() {
        Some(r) if r.period_days == 7 => "week",
        Some(_) => "day",
        None => crate::store::forecasts::period(&app.pool, &who.merchant_id)
            .await?
            .unwrap_or_default()
            .as_str(),
    };
    Ok(Json(json!({"granularity": granularity, "data": rows})).into_response())
}
