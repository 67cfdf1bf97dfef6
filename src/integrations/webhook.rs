//! Sending one webhook attempt to a merchant endpoint, behind an SSRF guard.
//!
//! Merchants supply their URLs, so every host name is resolved by a resolver that drops
//! internal addresses (loopback, private, link-local, ...) unless configuration allows them,
//! and URLs naming an IP literal are checked the same way. Redirects are not followed (a 3xx
//! is a failure, as Standard Webhooks says).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::webhook::{is_internal, parse_retry_after};

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub latency: Duration,
    pub retry_after: Option<Duration>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

impl AttemptResult {
    pub fn is_success(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }
}

/// Why a URL is refused before any request is made.
#[derive(Debug, thiserror::Error)]
pub enum UrlRefused {
    #[error("webhook URL is not a valid http(s) URL")]
    Invalid,
    #[error("webhook URL points at an internal address ({0}); refused")]
    Internal(IpAddr),
}

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow || !is_internal(a.ip()))
                .collect();
            if kept.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to internal addresses; refused").into();
                return Err(e);
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// Sends webhook attempts.
#[derive(Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookSender {
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent("souk-webhooks/1")
            .build()?;
        Ok(Self { http, allow_private })
    }

    /// Checks a merchant URL without sending anything (used when a merchant is saved).
    pub fn check_url(&self, url: &str) -> Result<(), UrlRefused> {
        check_url(url, self.allow_private)
    }

    /// POSTs one signed webhook.
    pub async fn send(
        &self,
        url: &str,
        id: &str,
        timestamp: i64,
        signature: &str,
        body: String,
    ) -> AttemptResult {
        let started = Instant::now();
        if let Err(e) = self.check_url(url) {
            return AttemptResult {
                status: None,
                latency: started.elapsed(),
                retry_after: None,
                response_excerpt: None,
                error: Some(e.to_string()),
            };
        }
        let res = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match res {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after =
                    parse_retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                let text = resp.text().await.unwrap_or_default();
                AttemptResult {
                    status: Some(status),
                    latency: started.elapsed(),
                    retry_after,
                    response_excerpt: Some(text.chars().take(500).collect()),
                    error: None,
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
                while let Some(c) = cur {
                    msg.push_str(": ");
                    msg.push_str(&c.to_string());
                    cur = c.source();
                }
                AttemptResult {
                    status: None,
                    latency: started.elapsed(),
                    retry_after: None,
                    response_excerpt: None,
                    error: Some(msg.chars().take(500).collect()),
                }
            }
        }
    }
}

/// Refuses URLs that are not http(s) or that name an internal IP literal.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), UrlRefused> {
    let u = reqwest::Url::parse(url).map_err(|_| UrlRefused::Invalid)?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(UrlRefused::Invalid);
    }
    let ip = match u.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = ip {
        if !allow_private && is_internal(ip) {
            return Err(UrlRefused::Internal(ip));
        }
    }
    if !allow_private
        && u.host_str()
            .map(|h| h.eq_ignore_ascii_case("localhost"))
            .unwrap_or(false)
    {
        return Err(UrlRefused::Internal(IpAddr::from([127, 0, 0, 1])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_malformed_urls_are_refused_unless_allowed() {
        for u in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://10.0.0.8/",
            "http://localhost:9/",
        ] {
            assert!(check_url(u, false).is_err(), "{u}");
            assert!(check_url(u, true).is_ok(), "{u}");
        }
        assert!(matches!(
            check_url("ftp://example.com/", true),
            Err(UrlRefused::Invalid)
        ));
        assert!(matches!(check_url("not a url", true), Err(UrlRefused::Invalid)));
        assert!(check_url("https://merchant.example/hooks", false).is_ok());
    }
}
