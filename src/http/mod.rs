//! The ops HTTP server: `/healthz` (the process answers), `/readyz` (Redis and PostgreSQL
//! answer within 2 s) and `/metrics` (Prometheus text). Read-only; no secrets in any answer.

use std::{net::SocketAddr, time::Duration};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

#[derive(Clone)]
struct Ops {
    conn: ConnectionManager,
    pool: PgPool,
}

/// The ops router.
pub fn router(conn: ConnectionManager, pool: PgPool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { crate::queue::metrics::render() }))
        .with_state(Ops { conn, pool })
}

async fn readyz(State(ops): State<Ops>) -> (StatusCode, String) {
    let mut conn = ops.conn.clone();
    let redis_ok = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let pg_ok = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&ops.pool))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let body = format!("redis: {}\npostgres: {}\n", ok(redis_ok), ok(pg_ok));
    if redis_ok && pg_ok {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

fn ok(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "unreachable"
    }
}

/// Serves the ops router on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    conn: ConnectionManager,
    pool: PgPool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "ops server listening");
    axum::serve(listener, router(conn, pool))
        .with_graceful_shutdown(shutdown)
        .await
}
