//! Sending one webhook attempt to a merchant endpoint, behind an SSRF guard.
//!
//! Merchants supply their URLs, so every host name is resolved by a resolver that drops
//! internal addresses (every special-purpose range: `domain::address`) unless configuration
//! allows them, and URLs naming an IP literal are checked the same way. The resolver's answer
//! is what the connection uses (reqwest connects to the addresses its resolver returns, and
//! resolves once per connection), so the address vetted is the address connected to: a DNS
//! answer that changes between a check and a connect (rebinding) has no gap to slip through.
//! Proxy variables of the environment are ignored (a proxy would resolve the name itself,
//! past the guard); `webhooks.proxy` sets one explicitly. Redirects are not followed (a 3xx is
//! a failure, as Standard Webhooks says). URLs are redacted in every error text.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::{
    address::{redact_in, redact_webhook_url},
    webhook::{is_internal, parse_retry_after},
};

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
    pub fn new(timeout: Duration, allow_private: bool, proxy: &str) -> Result<Self, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent("souk-webhooks/1")
            .no_proxy();
        if !proxy.is_empty() {
            b = b.proxy(reqwest::Proxy::all(proxy)?);
        }
        Ok(Self {
            http: b.build()?,
            allow_private,
        })
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
                // reqwest's text names the URL (without its user info): replaced by the
                // redacted URL, so a token in the query is never logged or stored.
                let e = e.without_url();
                let mut msg = format!("{e} ({})", redact_webhook_url(url));
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
                    error: Some(redact_in(&msg, url).chars().take(500).collect()),
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

    /// A minimal HTTP/1.1 server on loopback answering 200 to each connection; returns its
    /// address and a count of connections.
    async fn server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = n.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf).await;
                    let _ = c
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        (addr, n)
    }

    #[tokio::test]
    async fn proxy_variables_of_the_environment_are_not_used_for_webhooks() {
        let (target, hits) = server().await;
        let (proxy, via_proxy) = server().await;
        // The only test of this crate that sets it; the client reads it when built.
        std::env::set_var("HTTP_PROXY", format!("http://{proxy}"));
        std::env::set_var("http_proxy", format!("http://{proxy}"));
        let sender = WebhookSender::new(Duration::from_secs(5), true, "").unwrap();
        let r = sender
            .send(&format!("http://{target}/hook"), "msg_1", 1, "v1,x", "{}".into())
            .await;
        std::env::remove_var("HTTP_PROXY");
        std::env::remove_var("http_proxy");
        assert_eq!(r.status, Some(200), "{r:?}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "went straight to the target"
        );
        assert_eq!(
            via_proxy.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "never through the proxy"
        );
        // An explicitly configured proxy is used.
        let sender = WebhookSender::new(Duration::from_secs(5), true, &format!("http://{proxy}")).unwrap();
        let _ = sender
            .send(&format!("http://{target}/hook"), "msg_2", 1, "v1,x", "{}".into())
            .await;
        assert_eq!(via_proxy.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_resolver_that_connections_use_drops_internal_addresses() {
        use std::str::FromStr;
        // What reqwest connects to is what this resolver returns: a name that resolves only to
        // loopback yields no address at all, so nothing can connect there.
        let guarded = GuardedResolver { allow_private: false };
        let refused = guarded.resolve(Name::from_str("localhost").unwrap()).await;
        let e = refused.err().expect("refused").to_string();
        assert!(e.contains("internal"), "{e}");
        let open = GuardedResolver { allow_private: true };
        let addrs: Vec<SocketAddr> = open
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()));
    }
}
