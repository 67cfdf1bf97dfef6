//! The payment provider: a trait, and a client for Stripe's PaymentIntent API (retrieve,
//! capture with an amount, cancel, refund), with a bearer key and an `Idempotency-Key` on every
//! mutating call. The base URL comes from configuration, so the sandbox stands in for Stripe.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::domain::payment::{Currency, IntentStatus, ProviderView};

/// A failed provider call, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Try again later (network trouble, 5xx).
    #[error("payment provider unavailable: {0}")]
    Transient(String),
    /// Slow down; the provider said when.
    #[error("payment provider rate limit, retry in {0:?}")]
    RateLimited(Duration),
    /// The request itself is wrong (4xx): retrying the same call will not help.
    #[error("payment provider refused: {0}")]
    Refused(String),
}

/// What souk needs of a payment provider.
pub trait PaymentProvider: Send + Sync {
    fn retrieve<'a>(&'a self, payment_id: &'a str) -> BoxFuture<'a, Result<ProviderView, ProviderError>>;
    fn capture<'a>(
        &'a self,
        payment_id: &'a str,
        amount: i64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<ProviderView, ProviderError>>;
    fn cancel<'a>(
        &'a self,
        payment_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<ProviderView, ProviderError>>;
    fn refund<'a>(
        &'a self,
        payment_id: &'a str,
        amount: i64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Sends `amount` to a merchant's account (Stripe: a Transfer to a connected account, in a
    /// transfer group named after the parent order). Returns the transfer id.
    fn transfer<'a>(&'a self, t: &'a Transfer<'a>) -> BoxFuture<'a, Result<String, ProviderError>>;
    /// Takes `amount` back from a transfer made earlier (Stripe: a transfer reversal). Returns
    /// the reversal's id.
    fn reverse_transfer<'a>(
        &'a self,
        transfer_id: &'a str,
        amount: i64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>>;
}

/// A transfer to a merchant.
#[derive(Debug, Clone)]
pub struct Transfer<'a> {
    pub amount: i64,
    pub currency: &'a str,
    pub destination: &'a str,
    pub group: &'a str,
    pub key: &'a str,
}

/// Stripe-compatible client.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Intent {
    status: IntentStatus,
    amount: i64,
    #[serde(default)]
    amount_received: i64,
    #[serde(default)]
    amount_capturable: i64,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    latest_charge: Option<Charge>,
}

#[derive(Deserialize)]
struct Charge {
    #[serde(default)]
    amount_refunded: i64,
}

impl Intent {
    fn view(&self) -> ProviderView {
        ProviderView {
            status: self.status,
            amount: self.amount,
            amount_received: self.amount_received,
            amount_refunded: self
                .latest_charge
                .as_ref()
                .map(|c| c.amount_refunded)
                .unwrap_or(0),
            amount_capturable: self.amount_capturable,
            currency: Currency::parse(&self.currency),
        }
    }
}

impl StripeClient {
    pub fn new(base_url: &str, api_key: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            key: api_key.to_owned(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| ProviderError::Transient(without_url(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        Err(match status.as_u16() {
            429 => ProviderError::RateLimited(Duration::from_secs(retry_after.unwrap_or(1))),
            409 | 500..=599 => ProviderError::Transient(format!("{status}: {body}")),
            _ => ProviderError::Refused(format!("{status}: {body}")),
        })
    }

    async fn intent(&self, req: reqwest::RequestBuilder) -> Result<ProviderView, ProviderError> {
        let resp = self.send(req).await?;
        let intent: Intent = resp.json().await.map_err(|e| {
            ProviderError::Transient(format!("unreadable PaymentIntent: {}", without_url(&e)))
        })?;
        Ok(intent.view())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A reqwest error's text without the URL (which could carry ids worth keeping out of logs).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}

impl PaymentProvider for StripeClient {
    fn retrieve<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ProviderView, ProviderError>> {
        Box::pin(async move {
            let req = self
                .http
                .get(self.url(&format!("/v1/payment_intents/{id}")))
                .query(&[("expand[]", "latest_charge")]);
            self.intent(req).await
        })
    }

    fn capture<'a>(
        &'a self,
        id: &'a str,
        amount: i64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<ProviderView, ProviderError>> {
        Box::pin(async move {
            let req = self
                .http
                .post(self.url(&format!("/v1/payment_intents/{id}/capture")))
                .header("Idempotency-Key", key)
                .form(&[("amount_to_capture", amount.to_string())]);
            self.intent(req).await
        })
    }

    fn cancel<'a>(&'a self, id: &'a str, key: &'a str) -> BoxFuture<'a, Result<ProviderView, ProviderError>> {
        Box::pin(async move {
            let req = self
                .http
                .post(self.url(&format!("/v1/payment_intents/{id}/cancel")))
                .header("Idempotency-Key", key)
                .form(&[("cancellation_reason", "abandoned")]);
            self.intent(req).await
        })
    }

    fn refund<'a>(
        &'a self,
        id: &'a str,
        amount: i64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let req = self
                .http
                .post(self.url("/v1/refunds"))
                .header("Idempotency-Key", key)
                .form(&[("payment_intent", id.to_owned()), ("amount", amount.to_string())]);
            self.send(req).await.map(|_| ())
        })
    }

    fn transfer<'a>(&'a self, t: &'a Transfer<'a>) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let req = self
                .http
                .post(self.url("/v1/transfers"))
                .header("Idempotency-Key", t.key)
                .form(&[
                    ("amount", t.amount.to_string()),
                    ("currency", t.currency.to_lowercase()),
                    ("destination", t.destination.to_owned()),
                    ("transfer_group", t.group.to_owned()),
                ]);
            let resp = self.send(req).await?;
            let v: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| ProviderError::Transient(format!("unreadable transfer: {}", without_url(&e))))?;
            v["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ProviderError::Transient("transfer without an id".into()))
        })
    }

    fn reverse_transfer<'a>(
        &'a self,
        transfer_id: &'a str,
        amount: i64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let req = self
                .http
                .post(self.url(&format!("/v1/transfers/{transfer_id}/reversals")))
                .header("Idempotency-Key", key)
                .form(&[("amount", amount.to_string())]);
            let resp = self.send(req).await?;
            let v: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| ProviderError::Transient(format!("unreadable reversal: {}", without_url(&e))))?;
            v["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ProviderError::Transient("transfer reversal without an id".into()))
        })
    }
}
