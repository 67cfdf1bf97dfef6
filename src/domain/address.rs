//! Which addresses a merchant-supplied URL may reach, and how URLs are shown.
//!
//! The ranges are the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
//! their later entries) plus multicast: everything that is not a plain global unicast address.
//! An IPv6 address that embeds an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`) is judged by the
//! IPv4 address it names; the translation and tunnelling prefixes (NAT64 `64:ff9b::/96` and
//! `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo inside `2001::/23`, IPv4-compatible `::/96`) are
//! refused whole, since the IPv4 address they lead to is chosen by whoever wrote the URL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 ranges a webhook must not reach: (network, prefix length, registry name).
pub const V4_SPECIAL: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "this network"),
    ([10, 0, 0, 0], 8, "private-use"),
    ([100, 64, 0, 0], 10, "shared address space (CGN)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link local"),
    ([172, 16, 0, 0], 12, "private-use"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation (TEST-NET-1)"),
    ([192, 31, 196, 0], 24, "AS112-v4"),
    ([192, 52, 193, 0], 24, "AMT"),
    ([192, 88, 99, 0], 24, "deprecated 6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "private-use"),
    ([192, 175, 48, 0], 24, "direct delegation AS112"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation (TEST-NET-2)"),
    ([203, 0, 113, 0], 24, "documentation (TEST-NET-3)"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved (includes limited broadcast)"),
];

/// IPv6 ranges a webhook must not reach: (network, prefix length, registry name). IPv4-mapped
/// addresses are judged by their IPv4 address instead (see [`is_internal`]).
pub const V6_SPECIAL: &[(&str, u8, &str)] = &[
    ("::", 128, "unspecified"),
    ("::1", 128, "loopback"),
    ("::", 96, "IPv4-compatible (deprecated)"),
    ("64:ff9b::", 96, "IPv4/IPv6 translation (NAT64)"),
    ("64:ff9b:1::", 48, "local-use IPv4/IPv6 translation"),
    ("100::", 64, "discard-only"),
    ("100:0:0:1::", 64, "dummy prefix"),
    (
        "2001::",
        23,
        "IETF protocol assignments (Teredo, ORCHID, benchmarking, ...)",
    ),
    ("2001:db8::", 32, "documentation"),
    ("2002::", 16, "6to4"),
    ("3fff::", 20, "documentation"),
    ("5f00::", 16, "segment routing (SRv6) SIDs"),
    ("fc00::", 7, "unique local"),
    ("fe80::", 10, "link-local unicast"),
    ("fec0::", 10, "site-local (deprecated)"),
    ("ff00::", 8, "multicast"),
];

fn v4_in(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v6_in(ip: Ipv6Addr, net: &str, len: u8) -> bool {
    let net: Ipv6Addr = net.parse().expect("a valid range in the table");
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The special-purpose range `ip` is in, by its registry name; `None` for a global unicast
/// address a webhook may reach.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4_SPECIAL
            .iter()
            .find(|(net, len, _)| v4_in(v4, *net, *len))
            .map(|r| r.2),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_range(IpAddr::V4(v4));
            }
            V6_SPECIAL
                .iter()
                .find(|(net, len, _)| v6_in(v6, net, *len))
                .map(|r| r.2)
        }
    }
}

/// Whether a merchant-supplied URL must not reach `ip` ([`special_range`]).
pub fn is_internal(ip: IpAddr) -> bool {
    special_range(ip).is_some()
}

/// A merchant's URL as it may be printed or stored as text: user name and password replaced by
/// `***`, and every query value by `***` (keys kept), since merchants put tokens in both. Text
/// that does not parse as a URL is returned with any `user:password@` part masked.
/// (Connection URLs of souk's own configuration: `config::redact_url`, which keeps the user.)
pub fn redact_webhook_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
            _ => url.to_owned(),
        };
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("***");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for k in keys {
            q.append_pair(&k, "***");
        }
    }
    u.to_string()
}

/// `text` with every occurrence of `url` (as given, or as a URL parser writes it) redacted.
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_webhook_url(url));
    if let Ok(u) = url::Url::parse(url) {
        out = out.replace(u.as_str(), &redact_webhook_url(url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address inside, and the last one inside, of every range of both tables; and the
    /// first address after each range is not refused by that range.
    #[test]
    fn every_special_purpose_range_is_refused() {
        for (net, len, name) in V4_SPECIAL {
            let first = Ipv4Addr::from(*net);
            let last = Ipv4Addr::from(u32::from(first) | (u32::MAX >> len));
            assert!(is_internal(first.into()), "{first} ({name})");
            assert!(is_internal(last.into()), "{last} ({name})");
        }
        for (net, len, name) in V6_SPECIAL {
            let first: Ipv6Addr = net.parse().unwrap();
            let last =
                Ipv6Addr::from(u128::from(first) | (u128::MAX.checked_shr(u32::from(*len)).unwrap_or(0)));
            assert!(is_internal(first.into()), "{first} ({name})");
            assert!(is_internal(last.into()), "{last} ({name})");
        }
    }

    #[test]
    fn embedded_ipv4_forms_and_the_cases_once_let_through() {
        for ip in [
            "64:ff9b::a00:1",   // NAT64 of 10.0.0.1
            "64:ff9b::808:808", // NAT64 of a public address: the whole prefix is refused
            "::a00:1",          // IPv4-compatible ::10.0.0.1
            "::ffff:127.0.0.1", // IPv4-mapped loopback
            "::ffff:169.254.169.254",
            "2002:a00:1::",       // 6to4 of 10.0.0.1
            "2001:0:4136:e378::", // Teredo
            "fec0::1",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_internal(ip), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "198.20.0.1",
            "2a00:1450::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_internal(ip), "{ip}");
        }
    }

    #[test]
    fn urls_are_redacted_for_logs_and_stored_text() {
        assert_eq!(
            redact_webhook_url("https://user:pa55@merchant.example/hooks?token=abc&v=2"),
            "https://***@merchant.example/hooks?token=***&v=***"
        );
        assert_eq!(
            redact_webhook_url("https://merchant.example/hooks"),
            "https://merchant.example/hooks"
        );
        let e = "error sending request for url (https://merchant.example/h?token=abc): timed out";
        assert_eq!(
            redact_in(e, "https://merchant.example/h?token=abc"),
            "error sending request for url (https://merchant.example/h?token=***): timed out"
        );
        assert_eq!(redact_webhook_url("not a url://u:p@x"), "not a url://***@x");
    }
}
