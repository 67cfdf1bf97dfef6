//! RFC 9457 problem details: `type` names the stable `code`, which is also a member of its own.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

/// A refused or failed request.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    /// Extension members (an operation, the refused command's code …).
    pub extra: Value,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: &str) -> Problem {
        Problem {
            status,
            code: code.to_owned(),
            detail: detail.to_owned(),
            extra: Value::Null,
        }
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", &format!("no {what} of yours"))
    }

    pub fn invalid(code: &str, detail: &str) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// A database error: logged, never shown.
    pub fn internal(e: &dyn std::fmt::Display) -> Problem {
        tracing::error!(error = %e, "merchant API request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "souk could not answer; try again",
        )
    }

    /// Redis unreachable: the request did not run.
    pub fn unavailable(e: &dyn std::fmt::Display) -> Problem {
        tracing::warn!(error = %e, "merchant API: queue unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "souk cannot take this now; try again",
        )
    }

    pub fn with(mut self, extra: Value) -> Problem {
        self.extra = extra;
        self
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Problem {
        Problem::internal(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:souk:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), self.extra) {
            b.extend(extra);
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}
