//! Standard Webhooks 1.0: signing, verification, secrets, retry schedule and the SSRF rule.
//!
//! Signed content is `{webhook-id}.{webhook-timestamp}.{body}`; each signature is `v1,` +
//! base64(HMAC-SHA256(secret)); during a rotation several signatures are sent, space-separated.
//! Pure: the caller passes the time and the random bytes.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A secret in the `whsec_<base64>` form, from 32 random bytes.
pub fn new_secret(random: &[u8; 32]) -> String {
    format!("whsec_{}", B64.encode(random))
}

fn key(secret: &str) -> Result<Vec<u8>, String> {
    let b = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(b)
        .map_err(|_| "secret is not whsec_<base64>".to_owned())
}

/// Whether a string is a usable secret (24–64 bytes after base64).
pub fn secret_is_valid(secret: &str) -> bool {
    secret.starts_with("whsec_") && key(secret).map(|k| (24..=64).contains(&k.len())).unwrap_or(false)
}

/// The `webhook-signature` header value for `body`, signed with every secret given.
pub fn sign(secrets: &[String], id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let mut parts = Vec::with_capacity(secrets.len());
    for s in secrets {
        let mut mac = HmacSha256::new_from_slice(&key(s)?).map_err(|e| e.to_string())?;
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        parts.push(format!("v1,{}", B64.encode(mac.finalize().into_bytes())));
    }
    Ok(parts.join(" "))
}

/// Verifies a webhook as a receiver does: a timestamp within `tolerance` of `now`, and at
/// least one `v1` signature matching one of `secrets`, compared in constant time.
pub fn verify(
    secrets: &[String],
    id: &str,
    timestamp: i64,
    signature_header: &str,
    body: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), &'static str> {
    if (now - timestamp).unsigned_abs() > tolerance.as_secs() {
        return Err("timestamp outside the tolerance");
    }
    for s in secrets {
        let Ok(k) = key(s) else { continue };
        for sig in signature_header.split(' ') {
            let Some(b64) = sig.strip_prefix("v1,") else {
                continue;
            };
            let Ok(given) = B64.decode(b64) else { continue };
            let Ok(mut mac) = HmacSha256::new_from_slice(&k) else {
                continue;
            };
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            if mac.verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
    }
    Err("no matching signature")
}

/// The delay before delivery attempt `attempt + 1` after attempt `attempt` (1-based) failed,
/// from a schedule of delays in seconds (the first entry is the delay before the first
/// attempt, usually 0), or None when the schedule is used up.
pub fn next_delay(schedule_s: &[u64], attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
    let scheduled = Duration::from_secs(*schedule_s.get(attempt as usize)?);
    Some(match retry_after {
        Some(ra) => scheduled.max(ra.min(Duration::from_secs(24 * 3600))),
        None => scheduled,
    })
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub use super::address::is_internal;

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signing_matches_the_standard_webhooks_example() {
        let sig = sign(&[SPEC_SECRET.to_owned()], SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
        assert_eq!(sig, SPEC_SIG);
        assert!(verify(
            &[SPEC_SECRET.into()],
            SPEC_ID,
            SPEC_TS,
            SPEC_SIG,
            SPEC_BODY,
            SPEC_TS + 10,
            Duration::from_secs(300)
        )
        .is_ok());
    }

    #[test]
    fn verification_refuses_tampering_old_timestamps_and_wrong_secrets() {
        let tol = Duration::from_secs(300);
        let s = [SPEC_SECRET.to_owned()];
        assert!(verify(&s, SPEC_ID, SPEC_TS, SPEC_SIG, "{\"test\": 1}", SPEC_TS, tol).is_err());
        assert!(verify(&s, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_TS + 301, tol).is_err());
        let other = new_secret(&[7u8; 32]);
        assert!(verify(&[other], SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_TS, tol).is_err());
    }

    #[test]
    fn during_rotation_both_secrets_sign_and_either_verifies() {
        let old = new_secret(&[1u8; 32]);
        let new = new_secret(&[2u8; 32]);
        let header = sign(&[new.clone(), old.clone()], "msg_1", 100, "{}").unwrap();
        assert_eq!(header.split(' ').count(), 2);
        let tol = Duration::from_secs(300);
        assert!(verify(&[old], "msg_1", 100, &header, "{}", 100, tol).is_ok());
        assert!(verify(&[new], "msg_1", 100, &header, "{}", 100, tol).is_ok());
        assert!(secret_is_valid(&new_secret(&[3u8; 32])));
        assert!(!secret_is_valid("whsec_short"));
    }

    #[test]
    fn the_schedule_honours_retry_after_and_ends() {
        let svix = [0, 5, 300, 1800, 7200, 18000, 36000, 36000];
        assert_eq!(next_delay(&svix, 1, None), Some(Duration::from_secs(5)));
        assert_eq!(
            next_delay(&svix, 2, Some(Duration::from_secs(900))),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            next_delay(&svix, 2, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(next_delay(&svix, 8, None), None);
        assert_eq!(parse_retry_after(Some(" 120 ")), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
