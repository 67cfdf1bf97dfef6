//! Request bodies of the merchant API: JSON (`application/json` or a `+json` type), at most
//! 64 KiB, refused as problem documents (`invalid_body`, `unsupported_media_type`).
//!
//! A number with a zero fraction (`3.0`) is the integer it equals, as JSON Schema counts it
//! (the OpenAPI document's `integer` fields accept it), so it is read as that integer; any
//! other fraction is refused, never rounded.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Problem;

/// A JSON body, or `None` when the request has none.
pub struct Body<T>(pub Option<T>);

impl<T> Body<T> {
    /// The body, which the route requires.
    pub fn required(self) -> Result<T, Problem> {
        self.0
            .ok_or_else(|| Problem::invalid("invalid_body", "this route takes a JSON body"))
    }
}

impl<T: Default> Body<T> {
    /// The body, or the defaults when there is none.
    pub fn or_default(self) -> T {
        self.0.unwrap_or_default()
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let json_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|t| {
                let t = t.trim().to_ascii_lowercase();
                t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
            });
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::invalid("invalid_body", &e.body_text()))?;
        if bytes.is_empty() {
            return Ok(Body(None));
        }
        if json_type != Some(true) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as content-type: application/json",
            ));
        }
        let mut v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Problem::invalid("invalid_body", &format!("the body is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(Problem::invalid("invalid_body", "the body must be a JSON object"));
        }
        whole_numbers(&mut v);
        serde_json::from_value(v)
            .map(|t| Body(Some(t)))
            .map_err(|e| Problem::invalid("invalid_body", &e.to_string()))
    }
}

/// Every number with a zero fraction, within i64, made that integer.
fn whole_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                // The bounds are exact in f64: -2^63 is included, 2^63 is not.
                if f.fract() == 0.0
                    && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
                {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers),
        Value::Object(o) => o.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_float_is_its_integer_and_a_fraction_stays_a_fraction() {
        let mut v = serde_json::json!({"a": 3.0, "b": [-2.0, 2.5], "c": 1e300});
        whole_numbers(&mut v);
        assert_eq!(v["a"], serde_json::json!(3));
        assert_eq!(v["b"][0], serde_json::json!(-2));
        assert!(v["b"][1].is_f64());
        assert!(v["c"].is_f64(), "out of i64: left for the field to refuse");
    }
}
