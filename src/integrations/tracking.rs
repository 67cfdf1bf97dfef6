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
        // X-RateLimit-Reset: unix seconds when the window resets.
        let reset = resp
            .headers()
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        Err(match status.as_u16() {
            429 => {
                let wait = reset.map_or(1_000, |r| {
                    (r * 1000 - Utc::now().timestamp_millis()).clamp(100, 3_600_000)
                });
                TrackingError::RateLimited(Duration::from_millis(wait as u64))
            }
            500..=599 => TrackingError::Transient(format!("{status}: {body}")),
            _ => TrackingError::Refused(format!("{status}: {body}")),
        })
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
