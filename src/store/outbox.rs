//! The outbox of the outcome stream: order events not yet published to Redis, found by a
//! cursor over (writing transaction, event id).

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
    /// The event's data as the JSON text the database holds, passed on without parsing.
    pub data: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The writing transaction (xid8 as text), for the relay's cursor.
    pub xid: String,
}

/// Takes up to `limit` events after `stream`'s cursor whose transactions are final (older than
/// every transaction still running; see migration 0009), hands them to `publish`, and moves the
/// cursor past them only if it succeeds; a failed publish or a crash publishes them again. The
/// cursor row is locked, so relays in several processes take turns (one that finds it taken
/// does nothing this round).
pub async fn relay<F, Fut>(
    pool: &PgPool,
    stream: &str,
    limit: i64,
    publish: F,
) -> Result<usize, anyhow::Error>
where
    F: FnOnce(Vec<OutboxEvent>) -> Fut,
    Fut: std::future::Future<Output = Result<(), anyhow::Error>>,
{
    let mut tx = pool.begin().await?;
    let cursor: Option<(String, i64)> = sqlx::query_as(
        "SELECT xid::text, event_id FROM outbox_cursor WHERE stream = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(stream)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((xid, event_id)) = cursor else {
        return Ok(0);
    };
    let events: Vec<OutboxEvent> = sqlx::query_as(
        "SELECT id, order_id, sub_order_id, storefront_order_id, type, actor, reason, data::text AS data, created_at, xid::text AS xid
         FROM order_events
         WHERE (xid, id) > ($1::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY xid, id LIMIT $3",
    )
    .bind(&xid)
    .bind(event_id)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = events.last() else {
        return Ok(0);
    };
    let (last_xid, last_id) = (last.xid.clone(), last.id);
    let n = events.len();
    publish(events).await?;
    sqlx::query("UPDATE outbox_cursor SET xid = $2::xid8, event_id = $3 WHERE stream = $1")
        .bind(stream)
        .bind(&last_xid)
        .bind(last_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}
