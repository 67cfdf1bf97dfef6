//! The merchant API, `/merchant/v1/…` on `merchant_api.listen` (docs/merchants.md): each
//! merchant with its own keys sees and acts on its own data only. Reads come from the read
//! model; every action is a storefront command enqueued on the storefront stream, so it goes
//! through the same service, in the same per-order order, with the same recorded refusals as
//! the storefront's own commands.
//!
//! Every request passes [`gate`]: the key (`Authorization: Bearer smk_…`), the per-key rate
//! limit (`RateLimit` / `RateLimit-Policy` of draft-ietf-httpapi-ratelimit-headers-10), the
//! key's scope, and `Idempotency-Key` on POST and PUT (Stripe's rules, per merchant, 24 h).
//! Errors are RFC 9457 problem details with a stable `code`.

pub mod actions;
mod body;
pub mod forecast_inputs;
mod problem;
pub mod reads;
pub mod test_webhook;

pub use crate::store::merchant_api::keys;

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    http::{HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Router,
};
use sha2::{Digest, Sha256};

pub use problem::Problem;

use crate::{app::App, store::merchant_api as idempotency};
use keys::{Caller, Scope};

/// The OpenAPI 3.1 document of this API (kept in docs/, checked against [`ROUTES`] by a test).
pub const OPENAPI: &str = include_str!("../../docs/openapi/merchant-v1.json");

/// Every route of the API: method and path (axum's `{param}` syntax, as in the OpenAPI paths).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/merchant/v1/sub-orders"),
    ("GET", "/merchant/v1/sub-orders/{id}"),
    ("POST", "/merchant/v1/sub-orders/{id}/accept"),
    ("POST", "/merchant/v1/sub-orders/{id}/reject"),
    ("POST", "/merchant/v1/sub-orders/{id}/shipments"),
    ("GET", "/merchant/v1/returns"),
    ("POST", "/merchant/v1/returns/{id}/decision"),
    ("POST", "/merchant/v1/returns/{id}/receipt"),
    ("GET", "/merchant/v1/complaints"),
    ("GET", "/merchant/v1/complaints/{id}"),
    ("POST", "/merchant/v1/complaints/{id}/messages"),
    ("GET", "/merchant/v1/stock"),
    ("GET", "/merchant/v1/stock/{sku}"),
    ("PUT", "/merchant/v1/stock/{sku}"),
    ("POST", "/merchant/v1/stock/{sku}/adjustments"),
    ("GET", "/merchant/v1/webhooks/deliveries"),
    ("GET", "/merchant/v1/webhooks/deliveries/{id}"),
    ("POST", "/merchant/v1/webhooks/deliveries/{id}/replay"),
    ("POST", "/merchant/v1/webhooks/replay"),
    ("GET", "/merchant/v1/webhooks/secret"),
    ("POST", "/merchant/v1/webhooks/secret/rotate"),
    ("POST", "/merchant/v1/webhooks/test"),
    ("GET", "/merchant/v1/kpis"),
    ("GET", "/merchant/v1/forecasts"),
    ("POST", "/merchant/v1/forecasts/history"),
    ("POST", "/merchant/v1/forecasts/calendar"),
    ("PUT", "/merchant/v1/forecasts/time-zone"),
    ("PUT", "/merchant/v1/forecasts/country"),
    ("PUT", "/merchant/v1/forecasts/period"),
    ("GET", "/merchant/v1/operations/{id}"),
    ("GET", "/merchant/v1/openapi.json"),
];

/// The merchant API's router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// (as [`serve`] does): unauthenticated requests are limited per peer address.
pub fn router(app: App) -> Router {
    use actions as a;
    use forecast_inputs as f;
    use reads as r;
    let v1 = Router::new()
        .route("/merchant/v1/sub-orders", get(r::sub_orders))
        .route("/merchant/v1/sub-orders/{id}", get(r::sub_order))
        .route("/merchant/v1/sub-orders/{id}/accept", post(a::accept))
        .route("/merchant/v1/sub-orders/{id}/reject", post(a::reject))
        .route("/merchant/v1/sub-orders/{id}/shipments", post(a::ship))
        .route("/merchant/v1/returns", get(r::returns))
        .route("/merchant/v1/returns/{id}/decision", post(a::return_decision))
        .route("/merchant/v1/returns/{id}/receipt", post(a::return_receipt))
        .route("/merchant/v1/complaints", get(r::complaints))
        .route("/merchant/v1/complaints/{id}", get(r::complaint))
        .route(
            "/merchant/v1/complaints/{id}/messages",
            post(a::complaint_message),
        )
        .route("/merchant/v1/stock", get(r::stock_list))
        .route("/merchant/v1/stock/{sku}", get(r::stock_one).put(a::stock_set))
        .route("/merchant/v1/stock/{sku}/adjustments", post(a::stock_adjust))
        .route("/merchant/v1/webhooks/deliveries", get(r::deliveries))
        .route("/merchant/v1/webhooks/deliveries/{id}", get(r::delivery))
        .route(
            "/merchant/v1/webhooks/deliveries/{id}/replay",
            post(a::replay_one),
        )
        .route("/merchant/v1/webhooks/replay", post(a::replay_failed))
        .route("/merchant/v1/webhooks/secret", get(r::secret))
        .route("/merchant/v1/webhooks/secret/rotate", post(a::rotate_secret))
        .route("/merchant/v1/webhooks/test", post(a::test_webhook))
        .route("/merchant/v1/kpis", get(r::kpis))
        .route("/merchant/v1/forecasts", get(r::forecasts))
        .route(
            "/merchant/v1/forecasts/history",
            post(f::history).layer(DefaultBodyLimit::max(f::MAX_FILE)),
        )
        .route(
            "/merchant/v1/forecasts/calendar",
            post(f::calendar).layer(DefaultBodyLimit::max(f::MAX_FILE)),
        )
        .route("/merchant/v1/forecasts/time-zone", put(f::time_zone))
        .route("/merchant/v1/forecasts/country", put(f::country))
        .route("/merchant/v1/forecasts/period", put(f::period))
        .route("/merchant/v1/operations/{id}", get(a::operation))
        .route_layer(middleware::from_fn_with_state(app.clone(), gate));
    Router::new()
        .route("/merchant/v1/openapi.json", get(openapi))
        .merge(v1)
        .fallback(|| async {
            Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
            .into_response()
        })
        .with_state(app)
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

/// Bodies above this are refused before they are read (commands are at most 64 KiB; files for
/// the forecasts, [`forecast_inputs::MAX_FILE`]).
const MAX_BODY: usize = 64 * 1024;

fn body_limit(path: &str) -> usize {
    if path.starts_with("/merchant/v1/forecasts/") {
        forecast_inputs::MAX_FILE
    } else {
        MAX_BODY
    }
}
/// An `Idempotency-Key` answer still being made blocks a second request for this long; after
/// it, the first is taken to have died and the second runs.
const IN_FLIGHT: Duration = Duration::from_secs(60);

/// Authentication, rate limit, scope and idempotency, in that order, around every route.
async fn gate(State(app): State<App>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let caller = match keys::authenticate(&app.pool, &given).await {
        Ok(c) => c,
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let Some(caller) = caller else {
        // Guessing keys is limited per client address, at the keys' own rate.
        let limit = app.config.merchant_api.requests_per_minute;
        let window = match limiter(&app, &format!("peer:{peer}"), limit).await {
            Ok(w) => w,
            Err(e) => return Problem::unavailable(&e).into_response(),
        };
        if window.exceeded() {
            return window.apply(window.refusal().into_response());
        }
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a live merchant API key as `Authorization: Bearer smk_…`",
        )
        .into_response();
    };
    let limit = app.config.merchant_api.requests_per_minute;
    let window = match limiter(&app, &format!("key:{}", caller.key_id), limit).await {
        Ok(w) => w,
        Err(e) => return Problem::unavailable(&e).into_response(),
    };
    if window.exceeded() {
        return window.apply(window.refusal().into_response());
    }
    // PostgreSQL text cannot hold U+0000; a URL can only carry it percent-encoded.
    let uri = req.uri();
    let nul = |s: &str| s.contains("%00");
    if nul(uri.path()) || uri.query().is_some_and(nul) {
        return window.apply(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_characters",
                "the URL holds a NUL character (%00), which souk cannot store or look up",
            )
            .into_response(),
        );
    }
    let acting = !matches!(*req.method(), Method::GET | Method::HEAD);
    if acting && caller.scope != Scope::Act {
        return window.apply(
            Problem::new(
                StatusCode::FORBIDDEN,
                "read_only_key",
                "this key may read only; use a key with scope act",
            )
            .into_response(),
        );
    }
    let idem = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Client(peer));
    parts.extensions.insert(caller.clone());
    let Some(idem) = idem.filter(|_| acting) else {
        let resp = next.run(Request::from_parts(parts, body)).await;
        return window.apply(resp);
    };
    let idem = match idem {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k,
        _ => {
            return window.apply(
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "an Idempotency-Key is 1 to 255 visible ASCII characters",
                )
                .into_response(),
            )
        }
    };
    let limit = body_limit(parts.uri.path());
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return window.apply(
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!("the body is over {} KiB", limit / 1024),
                )
                .into_response(),
            )
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update([0]);
    h.update(parts.uri.path().as_bytes());
    h.update([0]);
    h.update(&bytes);
    let fingerprint = h.finalize().to_vec();
    match idempotency::begin(&app.pool, &caller.merchant_id, &idem, &fingerprint, IN_FLIGHT).await {
        Err(e) => window.apply(Problem::internal(&e).into_response()),
        Ok(idempotency::Begin::Replay(status, body)) => {
            // Every error answer of this API is a problem document.
            let kind = if status >= 400 {
                "application/problem+json"
            } else {
                "application/json"
            };
            let mut resp = (
                StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
                [("content-type", kind)],
                body,
            )
                .into_response();
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            window.apply(resp)
        }
        Ok(idempotency::Begin::InFlight) => window.apply(
            Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being answered; retry in a moment",
            )
            .into_response(),
        ),
        Ok(idempotency::Begin::Mismatch) => window.apply(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another method, path or body in the last 24 h",
            )
            .into_response(),
        ),
        Ok(idempotency::Begin::Fresh) => {
            parts.extensions.insert(IdempotencyKey(idem.clone()));
            let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let (rparts, rbody) = resp.into_parts();
            let rbytes = axum::body::to_bytes(rbody, usize::MAX).await.unwrap_or_default();
            let status = rparts.status.as_u16();
            // Stripe's rule: an answer that says the request did not run (a 5xx, a 429) is not
            // kept, so a retry with the same key runs it.
            let keep = status < 500 && status != 429;
            if let Err(e) = idempotency::finish(
                &app.pool,
                &caller.merchant_id,
                &idem,
                keep.then_some((status, &rbytes)),
            )
            .await
            {
                tracing::warn!(error = %e, "could not record an Idempotency-Key answer");
            }
            window.apply(Response::from_parts(rparts, Body::from(rbytes)))
        }
    }
}

/// The client's address (the TCP peer), for the address-read log.
#[derive(Clone)]
pub struct Client(pub String);

/// The request's `Idempotency-Key`, when it had one: an action's enqueue is deduplicated on it,
/// so a retry after a crash between the enqueue and the answer finds the same command.
#[derive(Clone)]
pub struct IdempotencyKey(pub String);

/// One fixed one-minute window of a rate limit.
struct Window {
    limit: u32,
    used: u64,
    reset_s: u64,
}

const POLICY: &str = "per-key";

impl Window {
    fn exceeded(&self) -> bool {
        self.used > u64::from(self.limit)
    }

    fn refusal(&self) -> Problem {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "over {} requests this minute; retry after {} s",
                self.limit, self.reset_s
            ),
        )
    }

    fn apply(&self, mut resp: Response) -> Response {
        let remaining = u64::from(self.limit).saturating_sub(self.used);
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("\"{POLICY}\";q={};w=60", self.limit)) {
            h.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("\"{POLICY}\";r={remaining};t={}", self.reset_s)) {
            h.insert("ratelimit", v);
        }
        if self.exceeded() {
            h.insert("retry-after", HeaderValue::from(self.reset_s));
        }
        resp
    }
}

/// Counts one request of `who` in the current minute (one `INCR`, the key expiring with it).
async fn limiter(app: &App, who: &str, limit: u32) -> redis::RedisResult<Window> {
    let now = chrono::Utc::now().timestamp();
    let minute = now / 60;
    let key = format!("{}:merchant-api:rate:{who}:{minute}", app.config.redis.key_prefix);
    let mut conn = app.conn.clone();
    let (used,): (u64,) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(&key)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(120)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(Window {
        limit,
        used,
        reset_s: (60 - (now % 60)) as u64,
    })
}

/// Serves the merchant API on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "merchant API listening");
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Used by reads and actions: the caller from the gate.
pub(crate) type Who = axum::Extension<Caller>;
