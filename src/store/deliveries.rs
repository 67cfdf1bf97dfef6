//! SQL of merchant webhook deliveries and their attempts.

use serde_json::json;
use sqlx::PgPool;

use super::orders::add_event;

/// A delivery with its merchant's endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub merchant_id: String,
    pub order_id: Option<i64>,
    pub sub_order_id: Option<i64>,
    pub event_type: String,
    /// The event's data as the JSON text the database holds, sent as is.
    pub payload: String,
    pub status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub webhook_url: String,
    pub signing_secrets: Vec<String>,
    pub endpoint_disabled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    /// The merchant's webhook body version (1 or 2; migration 0018).
    pub webhook_version: i16,
}

/// Records one attempt (time, status, latency, excerpt, error).
pub async fn record_attempt(
    pool: &PgPool,
    id: &str,
    status: Option<u16>,
    latency_ms: i64,
    error: Option<&str>,
    excerpt: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, error, response_excerpt) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(status.map(|s| s as i32))
    .bind(latency_ms.min(i32::MAX as i64) as i32)
    .bind(error)
    .bind(excerpt)
    .execute(&mut *tx)
    .await?;
    // A replay's first attempt: its job is alive, the sweep need not push it again.
    sqlx::query("UPDATE webhook_deliveries SET attempts = attempts + 1, replayed_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Marks a delivery delivered (once), clears the merchant's failing streak, adds the outcome event.
pub async fn mark_delivered(pool: &PgPool, d: &DeliveryRow) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now() WHERE id = $1 AND status = 'pending'")
        .bind(&d.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 1 {
        sqlx::query("UPDATE merchants SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
            .bind(&d.merchant_id)
            .execute(&mut *tx)
            .await?;
        let sf = storefront_id(&mut tx, d.order_id).await?;
        add_event(
            &mut tx,
            d.order_id,
            d.sub_order_id,
            sf.as_deref(),
            "merchant.notified",
            "souk:webhooks",
            None,
            json!({"merchant_id": d.merchant_id, "webhook_id": d.id, "event_type": d.event_type}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

async fn storefront_id(
    tx: &mut super::orders::Tx<'_>,
    order_id: Option<i64>,
) -> Result<Option<String>, sqlx::Error> {
    match order_id {
        Some(id) => {
            sqlx::query_scalar("SELECT storefront_order_id FROM orders WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await
        }
        None => Ok(None),
    }
}

/// Marks a delivery as given up (`failed` or `endpoint_disabled`) with an outcome event.
pub async fn mark_given_up(
    pool: &PgPool,
    d: &DeliveryRow,
    status: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE webhook_deliveries SET status = $2 WHERE id = $1 AND status = 'pending'")
        .bind(&d.id)
        .bind(status)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 1 {
        let sf = storefront_id(&mut tx, d.order_id).await?;
        add_event(
            &mut tx,
            d.order_id,
            d.sub_order_id,
            sf.as_deref(),
            "merchant.notification_failed",
            "souk:webhooks",
            Some(reason),
            json!({"merchant_id": d.merchant_id, "webhook_id": d.id}),
        )
        .await?;
    }
    tx.commit().await
}

/// Starts (or keeps) the merchant's failing streak; returns when it started.
pub async fn note_failure(
    pool: &PgPool,
    merchant: &str,
) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar("UPDATE merchants SET failing_since = coalesce(failing_since, now()) WHERE id = $1 RETURNING failing_since")
        .bind(merchant)
        .fetch_one(pool)
        .await
}

/// Disables a merchant's endpoint (410 Gone, or failing too long), with an outcome event.
pub async fn disable_endpoint(pool: &PgPool, merchant: &str, reason: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE merchants SET endpoint_disabled_at = now(), endpoint_disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND endpoint_disabled_at IS NULL",
    )
    .bind(merchant)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        add_event(
            &mut tx,
            None,
            None,
            None,
            "merchant.endpoint_disabled",
            "souk:webhooks",
            Some(reason),
            json!({"merchant_id": merchant}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// Webhook deliveries still pending, never attempted (or replayed) and older than `grace_s`:
/// their job was lost (or waits for a slow merchant's slot; pushing again is then a no-op). Oldest first.
pub async fn unsent(pool: &PgPool, grace_s: u64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM webhook_deliveries
         WHERE status = 'pending' AND (attempts = 0 AND created_at < now() - make_interval(secs => $1)
                                        OR replayed_at < now() - make_interval(secs => $1))
         ORDER BY created_at LIMIT $2",
    )
    .bind(grace_s as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}
