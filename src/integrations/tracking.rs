//! Tracking providers: a trait, and a client speaking AfterShip's API shape (v4: `POST
//! /trackings` to register, `GET /trackings/{slug}/{number}` to read checkpoints, header
//! `as-api-key`, 429 with `X-RateLimit-Reset`). The base URL comes from configuration, so the
//! sandbox stands in for AfterShip.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::domain::tracking::status::Provider;

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("tracking provider unavailable: {0}")]
    Transient(String),
    /// Slow down until then (the provider said when).
    #[error("tracking provider rate limit, retry in {0:?}")]
    RateLimited(Duration),
    #[error("tracking provider refused: {0}")]
    Refused(String),
}

/// One carrier event as a provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub at: DateTime<Utc>,
    pub status: String,
    pub sub_status: Option<String>,
    pub location: Option<String>,
    pub message: Option<String>,
}

pub trait TrackingProvider: Send + Sync {
    fn kind(&self) -> Provider;
    /// Registers a number for tracking; registering it again is not an error.
    fn register<'a>(
        &'a self,
        carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<(), TrackingError>>;
    /// Every checkpoint the provider has for the number.
    fn fetch<'a>(
        &'a self,
        carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, TrackingError>>;
}

#[derive(Clone)]
pub struct AftershipClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl std::fmt::Debug for AftershipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AftershipClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    tracking: Tracking,
}

#[derive(Deserialize)]
struct Tracking {
    #[serde(default)]
    checkpoints: Vec<RawCheckpoint>,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    checkpoint_time: DateTime<Utc>,
    tag: String,
    #[serde(default)]
    subtag: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl AftershipClient {
    pub fn new(base_url: &str, api_key: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            key: api_key.to_owned(),
        })
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        ok_statuses: &[u16],
    ) -> Result<reqwest::Response, TrackingError> {
        let resp = req
            .header("as-api-key", &self.key)
            .send()
            .await
            .map_err(|e| TrackingError::Transient(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() || ok_statuses.contains(&status.as_u16()) {
            return Ok(resp);
        }
        Err(http_error(resp).await)
    }
}

impl TrackingProvider for AftershipClient {
    fn kind(&self) -> Provider {
        Provider::Aftership
    }

    fn register<'a>(
        &'a self,
        carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<(), TrackingError>> {
        Box::pin(async move {
            let body = json!({"tracking": {"tracking_number": number, "slug": carrier}});
            // 4003: AfterShip's "tracking already exists", answered with 400.
            let resp = self
                .send(
                    self.http.post(format!("{}/trackings", self.base)).json(&body),
                    &[400],
                )
                .await?;
            if resp.status().as_u16() == 400 {
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                if v["meta"]["code"].as_i64() != Some(4003) {
                    return Err(TrackingError::Refused(format!("400: {v}")));
                }
            }
            Ok(())
        })
    }

    fn fetch<'a>(
        &'a self,
        carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, TrackingError>> {
        Box::pin(async move {
            let url = format!("{}/trackings/{}/{}", self.base, carrier.unwrap_or("auto"), number);
            let resp = self.send(self.http.get(url), &[]).await?;
            let env: Envelope = resp
                .json()
                .await
                .map_err(|e| TrackingError::Transient(format!("unreadable tracking: {}", e.without_url())))?;
            Ok(env
                .data
                .tracking
                .checkpoints
                .into_iter()
                .map(|c| Checkpoint {
                    at: c.checkpoint_time,
                    status: c.tag,
                    sub_status: c.subtag,
                    location: c.location,
                    message: c.message,
                })
                .collect())
        })
    }
}

/// A 17TRACK-compatible client (API v2.2): `POST /register` and `POST /gettrackinfo` with JSON
/// arrays of numbers, header `17token`. Registered without a carrier: 17TRACK detects it. An
/// event's status is the part of its `sub_status` before `_` (`InTransit_PickedUp` → `InTransit`).
#[derive(Clone)]
pub struct Track17Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl std::fmt::Debug for Track17Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Track17Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Maps an HTTP failure to what the caller should do.
async fn http_error(resp: reqwest::Response) -> TrackingError {
    let status = resp.status();
    let reset = resp
        .headers()
        .get("x-ratelimit-reset")
        .or_else(|| resp.headers().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
    match status.as_u16() {
        429 => {
            // A reset far above "now" in seconds is a unix time; a small one is Retry-After.
            let wait_ms = reset.map_or(1_000, |r| {
                if r > 1_000_000_000 {
                    r * 1000 - Utc::now().timestamp_millis()
                } else {
                    r * 1000
                }
            });
            TrackingError::RateLimited(Duration::from_millis(wait_ms.clamp(100, 3_600_000) as u64))
        }
        500..=599 => TrackingError::Transient(format!("{status}: {body}")),
        _ => TrackingError::Refused(format!("{status}: {body}")),
    }
}

impl Track17Client {
    pub fn new(base_url: &str, api_key: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            key: api_key.to_owned(),
        })
    }

    async fn call(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, TrackingError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("17token", &self.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| TrackingError::Transient(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(http_error(resp).await);
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| TrackingError::Transient(format!("unreadable answer: {}", e.without_url())))?;
        if v["code"].as_i64() != Some(0) {
            return Err(TrackingError::Refused(format!("17TRACK code {}", v["code"])));
        }
        Ok(v)
    }
}

impl TrackingProvider for Track17Client {
    fn kind(&self) -> Provider {
        Provider::Track17
    }

    fn register<'a>(
        &'a self,
        _carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<(), TrackingError>> {
        Box::pin(async move {
            let v = self.call("/register", json!([{"number": number}])).await?;
            // A number registered before comes back under `rejected` with code -18019901.
            let rejected = v["data"]["rejected"].as_array().cloned().unwrap_or_default();
            match rejected.first() {
                Some(r) if r["error"]["code"].as_i64() != Some(-18019901) => Err(TrackingError::Refused(
                    format!("17TRACK refused the number: {}", r["error"]),
                )),
                _ => Ok(()),
            }
        })
    }

    fn fetch<'a>(
        &'a self,
        _carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, TrackingError>> {
        Box::pin(async move {
            let v = self.call("/gettrackinfo", json!([{"number": number}])).await?;
            let mut out = Vec::new();
            for acc in v["data"]["accepted"].as_array().into_iter().flatten() {
                for p in acc["track_info"]["tracking"]["providers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    for e in p["events"].as_array().into_iter().flatten() {
                        let Some(at) = e["time_iso"]
                            .as_str()
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        else {
                            continue;
                        };
                        let sub = e["sub_status"].as_str().unwrap_or("").to_owned();
                        out.push(Checkpoint {
                            at: at.with_timezone(&Utc),
                            status: sub.split('_').next().unwrap_or("").to_owned(),
                            sub_status: Some(sub).filter(|s| !s.is_empty()),
                            location: e["location"].as_str().map(str::to_owned),
                            message: e["description"].as_str().map(str::to_owned),
                        });
                    }
                }
            }
            Ok(out)
        })
    }
}

/// A Kuaidi100-compatible client: real-time query `POST /poll/query.do` (form: `customer`,
/// `param` = `{"com","num","resultv2":"1"}`, `sign` = upper-case MD5(param + key + customer)),
/// and subscription `POST /poll` for pushes. Times are China time (UTC+8) without a zone.
#[derive(Clone)]
pub struct Kuaidi100Client {
    http: reqwest::Client,
    base: String,
    key: String,
    customer: String,
}

impl std::fmt::Debug for Kuaidi100Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kuaidi100Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Kuaidi100's company code for souk's carrier slugs (`auto` lets it detect).
pub fn kuaidi100_company(carrier: Option<&str>) -> &'static str {
    match carrier {
        Some("sf-express") => "shunfeng",
        Some("yto") => "yuantong",
        Some("zto-express") => "zhongtong",
        Some("china-post") => "youzhengguonei",
        Some("china-ems") => "ems",
        Some("ups") => "ups",
        Some("fedex") => "fedex",
        Some("dhl") => "dhl",
        Some("usps") => "usps",
        _ => "auto",
    }
}

impl Kuaidi100Client {
    pub fn new(base_url: &str, key: &str, customer: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            customer: customer.to_owned(),
        })
    }
}

impl TrackingProvider for Kuaidi100Client {
    fn kind(&self) -> Provider {
        Provider::Kuaidi100
    }

    /// Kuaidi100 needs no registration for real-time queries; pushes need a subscription with a
    /// callback URL, which souk does not ask for yet (polling covers it).
    fn register<'a>(
        &'a self,
        _carrier: Option<&'a str>,
        _number: &'a str,
    ) -> BoxFuture<'a, Result<(), TrackingError>> {
        Box::pin(async { Ok(()) })
    }

    fn fetch<'a>(
        &'a self,
        carrier: Option<&'a str>,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, TrackingError>> {
        Box::pin(async move {
            let param =
                json!({"com": kuaidi100_company(carrier), "num": number, "resultv2": "1"}).to_string();
            let sign = crate::domain::tracking::signature::kuaidi100_sign(
                &param,
                &format!("{}{}", self.key, self.customer),
            );
            let resp = self
                .http
                .post(format!("{}/poll/query.do", self.base))
                .form(&[
                    ("customer", self.customer.as_str()),
                    ("param", param.as_str()),
                    ("sign", sign.as_str()),
                ])
                .send()
                .await
                .map_err(|e| TrackingError::Transient(e.without_url().to_string()))?;
            if !resp.status().is_success() {
                return Err(http_error(resp).await);
            }
            let v: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| TrackingError::Transient(format!("unreadable answer: {}", e.without_url())))?;
            if v["status"].as_str() != Some("200") {
                // returnCode/status 503 sign error, 500 no result yet (not an error for us).
                return match v["status"].as_str().or(v["returnCode"].as_str()) {
                    Some("500") => Ok(Vec::new()),
                    other => Err(TrackingError::Refused(format!(
                        "Kuaidi100 status {other:?}: {}",
                        v["message"]
                    ))),
                };
            }
            let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
            let mut out = Vec::new();
            for e in v["data"].as_array().into_iter().flatten() {
                let Some(at) = e["time"]
                    .as_str()
                    .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
                    .and_then(|t| t.and_local_timezone(china).single())
                else {
                    continue;
                };
                out.push(Checkpoint {
                    at: at.with_timezone(&Utc),
                    status: e["statusCode"]
                        .as_str()
                        .or(v["state"].as_str())
                        .unwrap_or("")
                        .to_owned(),
                    sub_status: None,
                    location: e["areaName"].as_str().map(str::to_owned),
                    message: e["context"].as_str().map(str::to_owned),
                });
            }
            Ok(out)
        })
    }
}

/// The configured provider's client.
pub fn from_config(
    t: &crate::config::TrackingConfig,
) -> Result<std::sync::Arc<dyn TrackingProvider>, reqwest::Error> {
    let timeout = Duration::from_millis(t.timeout_ms);
    Ok(match t.provider.as_str() {
        "17track" => std::sync::Arc::new(Track17Client::new(&t.base_url, t.api_key.expose(), timeout)?),
        "kuaidi100" => std::sync::Arc::new(Kuaidi100Client::new(
            &t.base_url,
            t.api_key.expose(),
            &t.customer,
            timeout,
        )?),
        _ => std::sync::Arc::new(AftershipClient::new(&t.base_url, t.api_key.expose(), timeout)?),
    })
}
