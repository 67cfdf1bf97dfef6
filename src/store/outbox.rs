//! The outbox of the outcome stream: order events not yet published to Redis.

use sqlx::PgPool;

/// One event to publish.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxEvent {
    pub id: i64,
    pub order_id: Option<i64>,
    pub sub_order_id: Option<i64>,
    pub storefront_order_id: Option<String>,
    pub r#type: String,
    pub actor: String,
    pub reason: Option<String>,
    pub data: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Takes up to `limit` unpublished events (locked, so two relays never take the same ones),
/// hands them to `publish`, and marks them published only if it succeeds.
pub async fn relay<F, Fut>(pool: &PgPool, limit: i64, publish: F) -> Result<usize, anyhow::Error>
where
    F: FnOnce(Vec<OutboxEvent>) -> Fut,
    Fut: std::future::Future<Output = Result<(), anyhow::Error>>,
{
    let mut tx = pool.begin().await?;
    let events: Vec<OutboxEvent> = sqlx::query_as(
        "SELECT id, order_id, sub_order_id, storefront_order_id, type, actor, reason, data, created_at
         FROM order_events WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let n = events.len();
    publish(events).await?;
    sqlx::query("UPDATE order_events SET published_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}
