//! What a merchant tells souk's forecasts about itself (docs/forecasting.md): its own sales
//! history, its calendar of holidays and promotions, the time zone its days are cut in, and
//! whether it counts by day or by week.
//! The same checks and writes as `souk forecast import|calendar|time-zone` and the admin API,
//! always for the caller's merchant. A file with any bad line is refused whole (422
//! `invalid_lines`, each refusal with its line number) and nothing of it is written.

use axum::{
    body::Bytes,
    extract::{rejection::QueryRejection, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;
use serde_json::json;

use super::{body::Body, Problem, Who};
use crate::{
    app::App,
    domain::forecast::Period,
    domain::forecast::{calendar::parse_calendar, history::LineError},
    forecast::import::{self, Source},
    store::forecasts::{set_period, set_time_zone, ZoneSet},
};

/// A history or calendar sent here is held in memory: larger files go through the operator's
/// `souk forecast import`.
pub const MAX_FILE: usize = 64 << 20;

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    replace: bool,
    format: Option<String>,
}

/// An empty body is refused, not read as an empty file: with `?replace=true` that would
/// remove the history a client meant to send.
fn not_empty(body: &Bytes) -> Result<(), Problem> {
    if body.is_empty() {
        return Err(Problem::invalid(
            "empty_file",
            "the body is empty: send the file (its header line alone, with ?replace=true, removes what you imported)",
        ));
    }
    Ok(())
}

fn bad_lines(errors: &[LineError], count: usize) -> Problem {
    Problem::invalid(
        "invalid_lines",
        &format!("{count} bad lines: nothing was written"),
    )
    .with(json!({ "errors": errors, "error_count": count }))
}

/// `POST /merchant/v1/forecasts/history[?replace=true][&format=csv|jsonl]`: the merchant's daily
/// sales history as CSV (`text/csv`) or JSON lines (`application/x-ndjson`), merged with what
/// it imported before (a SKU-day given again is replaced) or replacing all of it.
pub async fn history(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<FileQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let q = super::reads::query(q)?;
    not_empty(&body)?;
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(format) = import::format_of(q.format.as_deref(), &kind) else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send content-type text/csv or application/x-ndjson, or ?format=csv|jsonl",
        ));
    };
    let out = import::import(
        &app.pool,
        &who.merchant_id,
        &Source::Bytes(body.to_vec()),
        format,
        q.replace,
        |_, _| {},
    )
    .await
    .map_err(|e| match e.downcast::<sqlx::Error>() {
        Ok(db) => Problem::from(db),
        // Not UTF-8, or a line too long to read: the file itself is unreadable.
        Err(e) => Problem::invalid("invalid_file", &e.to_string()),
    })?;
    if out.error_count > 0 {
        return Err(bad_lines(&out.errors, out.error_count));
    }
    Ok(Json(json!({"rows": out.rows, "replaced": out.replaced})).into_response())
}

/// `POST /merchant/v1/forecasts/calendar[?replace=true]`: holidays and promotions as CSV
/// (`kind,from,to,sku,name`), merged with the calendar already given or replacing it.
pub async fn calendar(
    State(app): State<App>,
    Extension(who): Who,
    q: Result<Query<FileQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Problem> {
    let q = super::reads::query(q)?;
    not_empty(&body)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::invalid("invalid_file", "the calendar is not UTF-8 text"))?;
    let periods = match parse_calendar(text) {
        Ok(p) => p,
        Err(errors) => {
            let n = errors.len();
            return Err(bad_lines(&errors[..n.min(import::MAX_ERRORS)], n));
        }
    };
    let days = crate::store::calendar::write(&app.pool, &who.merchant_id, &periods, q.replace).await?;
    Ok(Json(json!({"periods": periods.len(), "days": days, "replaced": q.replace})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeZoneBody {
    time_zone: String,
}

/// `PUT /merchant/v1/forecasts/time-zone` `{"time_zone": "Asia/Shanghai"}`: the zone whose
/// midnight ends the merchant's sales days, from the next forecast run on (its order history is
/// re-bucketed then).
pub async fn time_zone(
    State(app): State<App>,
    Extension(who): Who,
    b: Body<TimeZoneBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    match set_time_zone(&app.pool, &who.merchant_id, &b.time_zone).await? {
        ZoneSet::Set => Ok(Json(json!({"time_zone": b.time_zone})).into_response()),
        ZoneSet::UnknownZone => Err(Problem::invalid(
            "unknown_time_zone",
            "give an IANA time zone name such as Asia/Shanghai or Europe/Paris",
        )),
        // The key's merchant was removed under it.
        ZoneSet::NoMerchant => Err(Problem::not_found("merchant")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryBody {
    /// A code, or null for none; the key itself is required.
    country: serde_json::Value,
}

/// `PUT /merchant/v1/forecasts/country` `{"country": "CN"}` (or `null`): the country whose
/// public holidays, loaded by the operator, the merchant's forecasts use besides its own
/// calendar, from the next run on.
pub async fn country(
    State(app): State<App>,
    Extension(who): Who,
    b: Body<CountryBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    let code = match &b.country {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => match crate::domain::forecast::calendar::country_code(s) {
            Some(c) => Some(c),
            None => {
                return Err(Problem::invalid(
                    "invalid_country",
                    "give an ISO 3166-1 alpha-2 code such as CN, or null",
                ))
            }
        },
        _ => return Err(Problem::invalid("invalid_body", "country is a string or null")),
    };
    if !crate::store::calendar::set_country(&app.pool, &who.merchant_id, code.as_deref()).await? {
        return Err(Problem::not_found("merchant"));
    }
    Ok(Json(json!({"country": code})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodBody {
    period: String,
}

/// `PUT /merchant/v1/forecasts/period` `{"period": "week"}`: the merchant's history and
/// forecasts by day (the default) or by Monday-to-Sunday week, from the next run on.
pub async fn period(
    State(app): State<App>,
    Extension(who): Who,
    b: Body<PeriodBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    let Some(p) = Period::parse(&b.period) else {
        return Err(Problem::invalid("invalid_body", "period is day or week"));
    };
    if !set_period(&app.pool, &who.merchant_id, p).await? {
        return Err(Problem::not_found("merchant"));
    }
    Ok(Json(json!({"period": p.as_str()})).into_response())
}
