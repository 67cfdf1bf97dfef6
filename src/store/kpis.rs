//! SQL of merchant KPIs: one upsert computes every merchant's day rows over a window.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;

/// Recomputes the KPI rows of days `[from, to]`; returns how many rows were written.
pub async fn compute(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "WITH subs AS (
            SELECT s.id, s.merchant_id, (s.created_at AT TIME ZONE 'UTC')::date AS day, s.shipped_at, s.delivered_at,
                   s.late_at,
                   ((s.status IN ('rejected', 'cancelled', 'out_of_stock') AND o.refunded_minor > 0)
                    OR EXISTS (SELECT 1 FROM returns r WHERE r.sub_order_id = s.id AND r.status = 'refunded')) AS refunded,
                   EXISTS (SELECT 1 FROM returns r WHERE r.sub_order_id = s.id AND r.status <> 'refused') AS returned,
                   EXISTS (SELECT 1 FROM complaints c WHERE c.sub_order_id = s.id) AS complained,
                   d.actor AS decided_by, d.type AS decision, a.accepted_at
            FROM sub_orders s JOIN orders o ON o.id = s.order_id
            -- Through the order's events (indexed by order), not a scan per sub-order.
            LEFT JOIN LATERAL (SELECT e.actor, e.type FROM order_events e
                               WHERE e.order_id = s.order_id AND e.sub_order_id = s.id
                                 AND e.type IN ('sub_order.accepted', 'sub_order.rejected')
                               ORDER BY e.id LIMIT 1) d ON true
            LEFT JOIN LATERAL (SELECT min(e.created_at) AS accepted_at FROM order_events e
                               WHERE e.order_id = s.order_id AND e.sub_order_id = s.id
                                 AND e.type = 'sub_order.accepted') a ON true
            WHERE (s.created_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2)
         INSERT INTO merchant_kpis (merchant_id, day, sub_orders, decided, acceptance_rate, auto_rejected_rate,
                late_shipment_rate, avg_time_to_ship_s, avg_delivery_time_s, refund_rate, return_rate, complaint_rate)
         SELECT merchant_id, day, count(*), count(decision),
                (count(*) FILTER (WHERE decision = 'sub_order.accepted'))::float8 / nullif(count(decision), 0),
                (count(*) FILTER (WHERE decision = 'sub_order.rejected' AND decided_by = 'souk:deadline'))::float8
                    / nullif(count(decision), 0),
                (count(*) FILTER (WHERE late_at IS NOT NULL))::float8
                    / nullif(count(*) FILTER (WHERE decision = 'sub_order.accepted'), 0),
                avg(extract(epoch FROM shipped_at - accepted_at)) FILTER (WHERE shipped_at IS NOT NULL),
                avg(extract(epoch FROM delivered_at - shipped_at)) FILTER (WHERE delivered_at IS NOT NULL),
                (count(*) FILTER (WHERE refunded))::float8 / count(*),
                (count(*) FILTER (WHERE returned))::float8 / nullif(count(*) FILTER (WHERE shipped_at IS NOT NULL), 0),
                (count(*) FILTER (WHERE complained))::float8 / count(*)
         FROM subs GROUP BY merchant_id, day
         ON CONFLICT (merchant_id, day) DO UPDATE SET
                sub_orders = EXCLUDED.sub_orders, decided = EXCLUDED.decided,
                acceptance_rate = EXCLUDED.acceptance_rate, auto_rejected_rate = EXCLUDED.auto_rejected_rate,
                late_shipment_rate = EXCLUDED.late_shipment_rate, avg_time_to_ship_s = EXCLUDED.avg_time_to_ship_s,
                avg_delivery_time_s = EXCLUDED.avg_delivery_time_s, refund_rate = EXCLUDED.refund_rate,
                return_rate = EXCLUDED.return_rate, complaint_rate = EXCLUDED.complaint_rate,
                computed_at = now()",
    )
    .bind(from)
    .bind(to)
    .execute(pool)
    .await?
    .rows_affected())
}

/// A merchant's KPIs over `[from, to]`, weighted by sub-orders.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Summary {
    pub sub_orders: i64,
    pub acceptance_rate: Option<f64>,
    pub auto_rejected_rate: Option<f64>,
    pub late_shipment_rate: Option<f64>,
    pub avg_time_to_ship_s: Option<f64>,
    pub avg_delivery_time_s: Option<f64>,
    pub refund_rate: Option<f64>,
    pub return_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
}

pub async fn summary(
    pool: &PgPool,
    merchant: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Summary, sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(sum(sub_orders), 0)::bigint AS sub_orders,
                sum(acceptance_rate * decided) / nullif(sum(decided) FILTER (WHERE acceptance_rate IS NOT NULL), 0) AS acceptance_rate,
                sum(auto_rejected_rate * decided) / nullif(sum(decided) FILTER (WHERE auto_rejected_rate IS NOT NULL), 0) AS auto_rejected_rate,
                avg(late_shipment_rate) AS late_shipment_rate,
                avg(avg_time_to_ship_s) AS avg_time_to_ship_s,
                avg(avg_delivery_time_s) AS avg_delivery_time_s,
                sum(refund_rate * sub_orders) / nullif(sum(sub_orders), 0) AS refund_rate,
                avg(return_rate) AS return_rate,
                sum(complaint_rate * sub_orders) / nullif(sum(sub_orders), 0) AS complaint_rate
         FROM merchant_kpis WHERE merchant_id = $1 AND day BETWEEN $2 AND $3",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}
