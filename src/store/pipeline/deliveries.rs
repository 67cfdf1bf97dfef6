//! Webhook deliveries in set-based form: successful attempts recorded, deliveries loaded with
//! their merchants' endpoints.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::PgPool;

use super::begin_keyed;
use crate::store::deliveries::DeliveryRow;

/// One successful webhook attempt to record.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub delivery_id: String,
    pub merchant_id: String,
    pub status: u16,
    pub latency_ms: i64,
    pub excerpt: Option<String>,
}

/// Records successful attempts: each attempt logged, its delivery marked delivered (once, with
/// a `merchant.notified` event), the merchant's failing streak cleared. Answers whether the
/// delivery was marked now.
pub async fn record_delivered(pool: &PgPool, reqs: &[Delivered]) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = begin_keyed(pool).await?;
    let ids: Vec<&str> = reqs.iter().map(|r| r.delivery_id.as_str()).collect();
    let codes: Vec<i32> = reqs.iter().map(|r| r.status as i32).collect();
    let lat: Vec<i32> = reqs
        .iter()
        .map(|r| r.latency_ms.min(i32::MAX as i64) as i32)
        .collect();
    let excerpts: Vec<Option<&str>> = reqs.iter().map(|r| r.excerpt.as_deref()).collect();
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_excerpt)
         SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[])",
    )
    .bind(&ids)
    .bind(&codes)
    .bind(&lat)
    .bind(&excerpts)
    .execute(&mut *tx)
    .await?;
    let mut counts: BTreeMap<&str, i32> = BTreeMap::new();
    for id in &ids {
        *counts.entry(id).or_default() += 1;
    }
    let (cid, cn): (Vec<&str>, Vec<i32>) = counts.into_iter().unzip();
    // One statement: the deliveries locked by id, their attempts counted, those still pending
    // marked delivered (once: a rerun finds them delivered) with a `merchant.notified` event.
    let marked: HashSet<String> = sqlx::query_scalar(
        "WITH old AS (SELECT id, status FROM webhook_deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE),
              u AS (UPDATE webhook_deliveries d SET attempts = d.attempts + c.n,
                           status = CASE WHEN old.status = 'pending' THEN 'delivered' ELSE d.status END,
                           delivered_at = CASE WHEN old.status = 'pending' THEN now() ELSE d.delivered_at END
                    FROM old JOIN unnest($1::text[], $2::int[]) AS c(id, n) ON c.id = old.id
                    WHERE d.id = old.id
                    RETURNING d.id, d.order_id, d.sub_order_id, d.merchant_id, d.event_type, old.status = 'pending' AS marked),
              e AS (INSERT INTO order_events (order_id, sub_order_id, storefront_order_id, type, actor, data)
                    SELECT u.order_id, u.sub_order_id, o.storefront_order_id, 'merchant.notified', 'souk:webhooks',
                           jsonb_build_object('merchant_id', u.merchant_id, 'webhook_id', u.id, 'event_type', u.event_type)
                    FROM u LEFT JOIN orders o ON o.id = u.order_id WHERE u.marked ORDER BY u.id)
         SELECT id FROM u WHERE marked",
    )
    .bind(&cid)
    .bind(&cn)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut merchants: Vec<&str> = reqs.iter().map(|r| r.merchant_id.as_str()).collect();
    merchants.sort_unstable();
    merchants.dedup();
    sqlx::query("UPDATE merchants SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL")
        .bind(&merchants)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut answered: HashSet<&str> = HashSet::new();
    Ok(reqs
        .iter()
        .map(|r| marked.contains(&r.delivery_id) && answered.insert(r.delivery_id.as_str()))
        .collect())
}

/// Webhook deliveries with their merchants' endpoints, by id: one read for the whole batch.
pub async fn load_deliveries(pool: &PgPool, ids: &[String]) -> Result<Vec<Option<DeliveryRow>>, sqlx::Error> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.id, d.merchant_id, d.order_id, d.sub_order_id, d.event_type, d.payload::text AS payload, d.status, d.created_at,
                m.webhook_url, m.signing_secrets, m.endpoint_disabled_at, m.failing_since, m.webhook_version
         FROM webhook_deliveries d JOIN merchants m ON m.id = d.merchant_id WHERE d.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let by_id: HashMap<&str, &DeliveryRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    Ok(ids
        .iter()
        .map(|id| by_id.get(id.as_str()).map(|r| (*r).clone()))
        .collect())
}
