//! Verification of inbound tracking-provider pushes. A push that fails verification is refused
//! (and counted); one that passes is only a hint: souk re-reads the tracking from the provider.

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// AfterShip: header `aftership-hmac-sha256` = base64(HMAC-SHA256(secret, raw body)).
pub fn aftership_ok(secret: &str, body: &[u8], header: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    mac.verify_slice(&given).is_ok()
}

/// Kuaidi100 push: form fields `param` (JSON) and `sign` = upper-case hex MD5(param + salt).
pub fn kuaidi100_sign(param: &str, salt: &str) -> String {
    let mut h = Md5::new();
    h.update(param.as_bytes());
    h.update(salt.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02X}")).collect()
}

pub fn kuaidi100_ok(param: &str, salt: &str, sign: &str) -> bool {
    constant_time_eq(
        kuaidi100_sign(param, salt).as_bytes(),
        sign.trim().to_ascii_uppercase().as_bytes(),
    )
}

/// 17TRACK: the push carries the account's token in header `17token`.
pub fn track17_ok(token: &str, header: &str) -> bool {
    !token.is_empty() && constant_time_eq(token.as_bytes(), header.trim().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aftership_hmac_matches_a_known_value() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") is the RFC-style
        // example f7bc83f4…d8; its base64 is below.
        let body = b"The quick brown fox jumps over the lazy dog";
        let header = "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=";
        assert!(aftership_ok("key", body, header));
        assert!(!aftership_ok("other", body, header));
        assert!(!aftership_ok("key", b"tampered", header));
        assert!(!aftership_ok("key", body, "not base64!"));
    }

    #[test]
    fn kuaidi100_md5_sign_matches_a_known_value() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; MD5("abc") = 900150983cd24fb0d6963f7d28e17f72.
        assert_eq!(kuaidi100_sign("", ""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(kuaidi100_sign("ab", "c"), "900150983CD24FB0D6963F7D28E17F72");
        assert!(kuaidi100_ok("ab", "c", "900150983cd24fb0d6963f7d28e17f72"));
        assert!(!kuaidi100_ok("ab", "d", "900150983cd24fb0d6963f7d28e17f72"));
    }

    #[test]
    fn track17_token_must_match() {
        assert!(track17_ok("tok", "tok"));
        assert!(!track17_ok("tok", "tok2"));
        assert!(!track17_ok("", ""));
    }
}
