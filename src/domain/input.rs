//! What any storefront input must be before souk stores it: rules that PostgreSQL would
//! otherwise enforce with an error (a NUL character in text, a date outside its range, an
//! integer wider than a column) and rules of what an id is. Checked at the boundary, so bad
//! input is a refusal with a code, never a database error retried until it dead-letters.

use serde_json::Value;

use super::order::Rejection;

/// The largest stock quantity a column holds (`stock.on_hand`, `integer`).
pub const MAX_STOCK: i64 = i32::MAX as i64;

/// Earliest `placed_at` accepted: orders are not older than the marketplace's software.
pub const EARLIEST_PLACED_AT: &str = "2000-01-01T00:00:00Z";
/// How far ahead of souk's clock a `placed_at` may be (clocks differ).
pub const PLACED_AT_SKEW_S: i64 = 24 * 3600;

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// Refuses a document holding U+0000 in any string or key: PostgreSQL's `text` and `jsonb`
/// cannot store it.
pub fn no_nul(v: &Value) -> Result<(), Rejection> {
    let bad = |s: &str| s.contains('\0');
    let found = match v {
        Value::String(s) => bad(s),
        Value::Array(a) => return a.iter().try_for_each(no_nul),
        Value::Object(o) => {
            if o.keys().any(|k| bad(k)) {
                true
            } else {
                return o.values().try_for_each(no_nul);
            }
        }
        _ => false,
    };
    if found {
        return Err(reject(
            "invalid_characters",
            "a string holds a NUL character (U+0000), which souk cannot store",
        ));
    }
    Ok(())
}

/// Bidirectional formatting characters: they make an id display as another (a right-to-left
/// override, U+202E, before `fed` makes `abc` + U+202E + `fed` read as `abcdef`).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An id: 1–200 bytes, not only spaces, with no control or bidirectional formatting character.
pub fn id_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 200 && !s.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// An id field of a command, refused with `code` when it is not an [`id_ok`] id.
pub fn check_id(code: &'static str, field: &str, s: &str) -> Result<(), Rejection> {
    if id_ok(s) {
        Ok(())
    } else {
        Err(reject(
            code,
            format!("{field} must be 1–200 printable characters without bidirectional controls"),
        ))
    }
}

/// A merchant's complaint message or close names the merchant (`merchant_id`).
pub fn merchant_named(
    author: super::after_sales::Author,
    merchant_id: Option<&str>,
) -> Result<(), Rejection> {
    if author == super::after_sales::Author::Merchant && merchant_id.is_none() {
        return Err(reject(
            "merchant_required",
            "a merchant's message or close must name the merchant (merchant_id)",
        ));
    }
    Ok(())
}

/// A quantity of stock on hand to set.
pub fn check_on_hand(on_hand: i64) -> Result<(), Rejection> {
    if (0..=MAX_STOCK).contains(&on_hand) {
        Ok(())
    } else {
        Err(reject(
            "quantity_out_of_range",
            format!("on_hand {on_hand} is outside 0..={MAX_STOCK}"),
        ))
    }
}

/// A change of stock on hand.
pub fn check_delta(delta: i64) -> Result<(), Rejection> {
    if (-MAX_STOCK..=MAX_STOCK).contains(&delta) {
        Ok(())
    } else {
        Err(reject(
            "quantity_out_of_range",
            format!("delta {delta} is outside ±{MAX_STOCK}"),
        ))
    }
}

/// `placed_at` between [`EARLIEST_PLACED_AT`] and a day after `now`.
pub fn check_placed_at(
    at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Rejection> {
    let earliest: chrono::DateTime<chrono::Utc> = EARLIEST_PLACED_AT.parse().expect("a valid constant");
    if at < earliest || at > now + chrono::Duration::seconds(PLACED_AT_SKEW_S) {
        return Err(reject(
            "invalid_placed_at",
            format!("placed_at {at} is before {EARLIEST_PLACED_AT} or more than a day ahead of souk's clock"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_found_anywhere() {
        assert!(no_nul(&serde_json::json!({"a": ["x", {"b": "ok"}]})).is_ok());
        assert!(no_nul(&serde_json::json!({"a": ["x", {"b": "o\u{0}k"}]})).is_err());
        assert!(no_nul(&serde_json::json!({"a\u{0}": 1})).is_err());
    }

    #[test]
    fn ids_refuse_controls_and_bidi_overrides() {
        assert!(id_ok("SF-1"));
        assert!(id_ok("订单-42"));
        assert!(!id_ok("SF-\u{202E}1"));
        assert!(!id_ok("SF-\u{2066}1"));
        assert!(!id_ok("SF\n1"));
        assert!(!id_ok("   "));
        assert!(!id_ok(&"x".repeat(201)));
    }

    #[test]
    fn quantities_and_dates_stay_in_the_columns_range() {
        assert!(check_on_hand(MAX_STOCK).is_ok());
        assert_eq!(
            check_on_hand(MAX_STOCK + 1).unwrap_err().code,
            "quantity_out_of_range"
        );
        assert!(check_on_hand(-1).is_err());
        assert!(check_delta(-3_000_000_000).is_err());
        assert!(check_delta(-MAX_STOCK).is_ok());
        let now: chrono::DateTime<chrono::Utc> = "2026-12-03T00:00:00Z".parse().unwrap();
        assert!(check_placed_at("2026-11-24T10:00:00Z".parse().unwrap(), now).is_ok());
        assert!(check_placed_at("0001-01-01T00:00:00Z".parse().unwrap(), now).is_err());
        assert!(check_placed_at("9999-01-01T00:00:00Z".parse().unwrap(), now).is_err());
    }
}
