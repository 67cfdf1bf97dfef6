//! The sandbox's AfterShip-compatible tracking provider under `/aftership`: `POST /trackings`
//! registers a number (a second time answers 400 with meta code 4003, as AfterShip does),
//! `GET /trackings/{slug}/{number}` returns the checkpoints that have "happened" so far.
//!
//! Each number gets a realistic life from a hash of it: info received, picked up, a few
//! in-transit scans, out for delivery, delivered; some have a failed attempt first, some an
//! exception, a few go back to the sender; numbers starting with `SILENT` are never scanned.
//! One step every `step_ms` from registration. Calls above `rate_per_s` in a second get 429
//! with `X-RateLimit-Reset`. Calls are counted in the sandbox's counters (`tracking_register`,
//! `tracking_get`, `tracking_rate_limited`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{lock, Sandbox};

/// The tracking stand-in's state and settings.
#[derive(Debug)]
pub struct Couriers {
    pub step: Mutex<Duration>,
    pub rate_per_s: Mutex<u32>,
    registered: Mutex<HashMap<String, DateTime<Utc>>>,
    window: Mutex<(i64, u32)>,
}

impl Default for Couriers {
    fn default() -> Self {
        Couriers {
            step: Mutex::new(Duration::from_secs(2)),
            rate_per_s: Mutex::new(20),
            registered: Mutex::default(),
            window: Mutex::new((0, 0)),
        }
    }
}

const CITIES: [&str; 6] = [
    "Shenzhen CN",
    "Leipzig DE",
    "Memphis US",
    "Rotterdam NL",
    "Lyon FR",
    "Milan IT",
];

/// The whole life of a number: (tag, subtag, message), one per step.
/// Numbers starting with `SILENT` are never scanned: no checkpoint ever.
pub fn script(number: &str) -> Vec<(&'static str, Option<&'static str>, &'static str)> {
    if number.starts_with("SILENT") {
        return Vec::new();
    }
    let h = number.bytes().fold(0xcbf29ce484222325u64, |a, b| {
        (a ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let mut s = vec![
        ("InfoReceived", None, "Shipment information received"),
        ("InTransit", None, "Picked up by the carrier"),
        ("InTransit", None, "Departed facility"),
        ("InTransit", None, "Arrived at destination hub"),
    ];
    match h % 20 {
        0 => {
            s.push((
                "Exception",
                Some("Exception_010"),
                "Address problem: returning to sender",
            ));
            s.push(("Exception", Some("Exception_011"), "Returned to sender"));
            return s;
        }
        1 => s.push(("Exception", Some("Exception_004"), "Delayed: customs inspection")),
        2 | 3 => {
            s.push(("OutForDelivery", None, "Out for delivery"));
            s.push(("AttemptFail", None, "Recipient not at home"));
        }
        _ => {}
    }
    s.push(("OutForDelivery", None, "Out for delivery"));
    s.push(("Delivered", None, "Delivered"));
    s
}

fn rate_limited(sb: &Sandbox) -> Option<Response> {
    let now = Utc::now().timestamp();
    let limit = *lock(&sb.couriers.rate_per_s);
    let mut w = lock(&sb.couriers.window);
    if w.0 != now {
        *w = (now, 0);
    }
    w.1 += 1;
    if w.1 > limit {
        sb.count("tracking_rate_limited");
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"meta": {"code": 429, "message": "Too many requests"}})),
        )
            .into_response();
        r.headers_mut().insert("x-ratelimit-reset", (now + 1).into());
        return Some(r);
    }
    None
}

fn authorised(sb: &Sandbox, headers: &HeaderMap) -> bool {
    headers.get("as-api-key").and_then(|v| v.to_str().ok()) == Some(sb.api_key.as_str())
}

pub async fn create(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorised(&sb, &headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"meta": {"code": 401}}))).into_response();
    }
    if let Some(r) = rate_limited(&sb) {
        return r;
    }
    let Some(number) = body["tracking"]["tracking_number"].as_str() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"meta": {"code": 4001, "message": "tracking_number missing"}})),
        )
            .into_response();
    };
    let mut reg = lock(&sb.couriers.registered);
    if reg.contains_key(number) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"meta": {"code": 4003, "message": "Tracking already exists."}})),
        )
            .into_response();
    }
    reg.insert(number.to_owned(), Utc::now());
    sb.count("tracking_register");
    (
        StatusCode::CREATED,
        Json(json!({"meta": {"code": 201}, "data": {"tracking": {"tracking_number": number}}})),
    )
        .into_response()
}

pub async fn get_tracking(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path((slug, number)): Path<(String, String)>,
) -> Response {
    if !authorised(&sb, &headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"meta": {"code": 401}}))).into_response();
    }
    if let Some(r) = rate_limited(&sb) {
        return r;
    }
    let Some(start) = lock(&sb.couriers.registered).get(&number).copied() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"meta": {"code": 4004, "message": "Tracking does not exist."}})),
        )
            .into_response();
    };
    sb.count("tracking_get");
    let step = chrono::Duration::from_std(*lock(&sb.couriers.step)).unwrap_or_default();
    let now = Utc::now();
    let checkpoints: Vec<Value> = script(&number)
        .into_iter()
        .enumerate()
        .map(|(i, (tag, subtag, message))| (start + step * (i as i32 + 1), tag, subtag, message, i))
        .filter(|(at, ..)| *at <= now)
        .map(|(at, tag, subtag, message, i)| {
            json!({"checkpoint_time": at.to_rfc3339(), "tag": tag, "subtag": subtag, "message": message,
                   "location": CITIES[i % CITIES.len()], "slug": slug})
        })
        .collect();
    let tag = checkpoints
        .last()
        .map_or("Pending", |c| c["tag"].as_str().unwrap_or("Pending"))
        .to_owned();
    Json(json!({"meta": {"code": 200}, "data": {"tracking": {"tracking_number": number, "slug": slug, "tag": tag,
        "checkpoints": checkpoints}}}))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tracking::status::{normalise, Provider, Status};

    #[test]
    fn every_script_ends_in_a_final_status_souk_maps() {
        let mut ends = std::collections::HashMap::new();
        for i in 0..400 {
            let s = script(&format!("SBX{i:08}"));
            let (tag, sub, _) = *s.last().unwrap();
            let end = normalise(Provider::Aftership, tag, sub).unwrap();
            assert!(end.is_final(), "{s:?}");
            *ends.entry(end).or_insert(0) += 1;
            for (tag, sub, _) in &s {
                assert!(normalise(Provider::Aftership, tag, *sub).is_some());
            }
        }
        assert!(
            ends[&Status::Delivered] > 300 && ends[&Status::Returned] > 5,
            "{ends:?}"
        );
    }
}

/// A checkpoint that has happened: time, AfterShip tag, subtag, message, location.
type Happened = (
    DateTime<Utc>,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
);

/// The checkpoints of `number` that have happened by now, oldest first. Registers the number on
/// first sight when `auto_register`.
fn happened(sb: &Sandbox, number: &str, auto_register: bool) -> Option<Vec<Happened>> {
    let start = {
        let mut reg = lock(&sb.couriers.registered);
        match reg.get(number) {
            Some(t) => *t,
            None if auto_register => *reg.entry(number.to_owned()).or_insert_with(Utc::now),
            None => return None,
        }
    };
    let step = chrono::Duration::from_std(*lock(&sb.couriers.step)).unwrap_or_default();
    let now = Utc::now();
    Some(
        script(number)
            .into_iter()
            .enumerate()
            .map(|(i, (tag, sub, msg))| {
                (
                    start + step * (i as i32 + 1),
                    tag,
                    sub,
                    msg,
                    CITIES[i % CITIES.len()],
                )
            })
            .filter(|c| c.0 <= now)
            .collect(),
    )
}

/// 17TRACK's sub-status for an AfterShip tag and subtag.
fn track17_sub_status(tag: &str, sub: Option<&str>) -> &'static str {
    match (tag, sub) {
        ("InfoReceived", _) => "InfoReceived",
        ("InTransit", _) => "InTransit_Other",
        ("OutForDelivery", _) => "OutForDelivery_Other",
        ("AttemptFail", _) => "DeliveryFailure_NoBody",
        ("Delivered", _) => "Delivered_Other",
        ("Exception", Some("Exception_011")) => "Exception_Returned",
        ("Exception", Some("Exception_010")) => "Exception_Returning",
        _ => "Exception_Other",
    }
}

/// Kuaidi100's state code for an AfterShip tag and subtag.
fn kuaidi100_state(tag: &str, sub: Option<&str>) -> &'static str {
    match (tag, sub) {
        ("InfoReceived", _) => "101",
        ("InTransit", _) => "0",
        ("OutForDelivery", _) => "5",
        ("AttemptFail", _) => "14",
        ("Delivered", _) => "3",
        ("Exception", Some("Exception_011")) => "4",
        _ => "2",
    }
}

fn numbers(body: &Value) -> Vec<String> {
    body.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["number"].as_str().map(str::to_owned))
        .collect()
}

fn track17_authorised(sb: &Sandbox, headers: &HeaderMap) -> bool {
    headers.get("17token").and_then(|v| v.to_str().ok()) == Some(sb.api_key.as_str())
}

pub async fn track17_register(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !track17_authorised(&sb, &headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"code": 401}))).into_response();
    }
    if let Some(r) = rate_limited(&sb) {
        return r;
    }
    let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
    for n in numbers(&body) {
        let mut reg = lock(&sb.couriers.registered);
        if reg.contains_key(&n) {
            rejected.push(json!({"number": n, "error": {"code": -18019901, "message": "The tracking number is already registered."}}));
        } else {
            reg.insert(n.clone(), Utc::now());
            accepted.push(json!({"number": n}));
        }
    }
    sb.count("tracking_register");
    Json(json!({"code": 0, "data": {"accepted": accepted, "rejected": rejected}})).into_response()
}

pub async fn track17_info(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !track17_authorised(&sb, &headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"code": 401}))).into_response();
    }
    if let Some(r) = rate_limited(&sb) {
        return r;
    }
    sb.count("tracking_get");
    let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
    for n in numbers(&body) {
        let Some(cps) = happened(&sb, &n, false) else {
            rejected.push(json!({"number": n, "error": {"code": -18019902, "message": "The tracking number is not registered."}}));
            continue;
        };
        // 17TRACK lists events newest first.
        let events: Vec<Value> = cps
            .iter()
            .rev()
            .map(|(at, tag, sub, msg, loc)| {
                let s = track17_sub_status(tag, *sub);
                json!({"time_iso": at.to_rfc3339(), "description": msg, "location": loc,
                       "stage": s.split('_').next(), "sub_status": s})
            })
            .collect();
        let latest = events
            .first()
            .map_or("NotFound", |e| e["stage"].as_str().unwrap_or("NotFound"))
            .to_owned();
        accepted.push(
            json!({"number": n, "track_info": {"latest_status": {"status": latest},
            "tracking": {"providers": [{"provider": {"key": 0}, "events": events}]}}}),
        );
    }
    Json(json!({"code": 0, "data": {"accepted": accepted, "rejected": rejected}})).into_response()
}

#[derive(serde::Deserialize)]
pub struct Kuaidi100Query {
    customer: String,
    param: String,
    sign: String,
}

pub async fn kuaidi100_query(
    State(sb): State<Arc<Sandbox>>,
    axum::Form(q): axum::Form<Kuaidi100Query>,
) -> Response {
    let want = crate::domain::tracking::signature::kuaidi100_sign(
        &q.param,
        &format!("{}{}", sb.api_key, q.customer),
    );
    if want != q.sign {
        return Json(json!({"result": false, "returnCode": "503", "message": "验证签名失败"}))
            .into_response();
    }
    if let Some(r) = rate_limited(&sb) {
        return r;
    }
    sb.count("tracking_get");
    let p: Value = serde_json::from_str(&q.param).unwrap_or_default();
    let Some(num) = p["num"].as_str() else {
        return Json(json!({"result": false, "returnCode": "400", "message": "num missing"})).into_response();
    };
    let cps = happened(&sb, num, true).unwrap_or_default();
    if cps.is_empty() {
        return Json(json!({"result": false, "returnCode": "500", "message": "查询无结果，请隔段时间再查"}))
            .into_response();
    }
    let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    // Kuaidi100 lists events newest first, in China time, whole seconds.
    let data: Vec<Value> = cps
        .iter()
        .rev()
        .map(|(at, tag, sub, msg, loc)| {
            let t = at.with_timezone(&china).format("%Y-%m-%d %H:%M:%S").to_string();
            json!({"time": t, "ftime": t, "context": msg, "areaName": loc, "statusCode": kuaidi100_state(tag, *sub)})
        })
        .collect();
    let state = data[0]["statusCode"].clone();
    Json(json!({"message": "ok", "status": "200", "state": state, "ischeck": if state == "3" { "1" } else { "0" },
                "com": p["com"], "nu": num, "data": data}))
    .into_response()
}
