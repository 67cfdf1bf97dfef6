//! SQL of the merchant API's reads. Every query names the merchant, so another merchant's row
//! is simply not found. Rows come out as JSON, shaped as the API answers them.

use serde_json::Value;
use sqlx::PgPool;

/// The state a merchant works by, from the sub-order's status and its parcels.
const STATE: &str = "CASE WHEN s.status IN ('pending', 'reserved') THEN 'pending'
     WHEN s.status = 'accepted' AND s.delivered_at IS NOT NULL THEN 'delivered'
     WHEN s.status = 'accepted' AND u.unshipped > 0 THEN 'to_ship'
     WHEN s.status = 'accepted' THEN 'shipped'
     ELSE s.status END";

/// The `status` values of returns, complaints and webhook deliveries (their CHECKs and writers).
pub const RETURN_STATUSES: &[&str] = &["requested", "approved", "refused", "received", "refunded"];
pub const COMPLAINT_STATUSES: &[&str] = &["open", "answered", "escalated", "closed"];
pub const DELIVERY_STATUSES: &[&str] = &["pending", "delivered", "failed", "endpoint_disabled"];

/// The states of [`STATE`], for the `state` filter.
pub const STATES: &[&str] = &[
    "pending",
    "out_of_stock",
    "awaiting_acceptance",
    "to_ship",
    "shipped",
    "delivered",
    "completed",
    "rejected",
    "cancelled",
];

const UNSHIPPED: &str = "LEFT JOIN LATERAL (SELECT
        (SELECT coalesce(sum(quantity), 0) FROM order_lines WHERE sub_order_id = s.id)
      - (SELECT coalesce(sum(sl.quantity), 0) FROM shipments sh JOIN shipment_lines sl ON sl.shipment_id = sh.id
         WHERE sh.sub_order_id = s.id AND sh.return_id IS NULL) AS unshipped,
        (SELECT max(created_at) FROM shipments WHERE sub_order_id = s.id AND return_id IS NULL) AS last_shipped_at) u ON true";

/// Micros `$2` as a timestamp, exactly (no floating point on the way).
const AT_MICROS: &str = "(timestamptz 'epoch' + $2::bigint * interval '1 microsecond')";

fn sub_order_json(ship_by_s: i64) -> String {
    format!(
        "json_build_object('id', s.id, 'storefront_order_id', o.storefront_order_id, 'state', {STATE},
            'status', s.status, 'status_reason', s.status_reason, 'currency', o.currency,
            'subtotal_minor', s.subtotal_minor, 'commission_minor', s.commission_minor,
            'created_at', s.created_at, 'accept_by', CASE WHEN s.status = 'awaiting_acceptance' THEN s.accept_by END,
            'accepted_at', s.accepted_at,
            'ship_by', CASE WHEN s.status = 'accepted' AND u.unshipped > 0
                 THEN s.accepted_at + make_interval(secs => coalesce(m.ship_by_s, {ship_by_s})) END,
            'shipped_at', s.shipped_at, 'delivered_at', s.delivered_at, 'delivery_status', s.delivery_status,
            'late', s.late_at IS NOT NULL)"
    )
}

/// A merchant's sub-orders, newest first, after `(created micros, id)`; each with its
/// creation micros (the next cursor).
pub async fn sub_orders(
    pool: &PgPool,
    merchant: &str,
    ship_by_s: i64,
    state: Option<&str>,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<(Value, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {}, (extract(epoch FROM s.created_at) * 1e6)::bigint
         FROM sub_orders s JOIN orders o ON o.id = s.order_id JOIN merchants m ON m.id = s.merchant_id {UNSHIPPED}
         WHERE s.merchant_id = $1 AND ($2::bigint IS NULL OR (s.created_at, s.id) < ({AT_MICROS}, $3))
           AND ($4::text IS NULL OR {STATE} = $4)
         ORDER BY s.created_at DESC, s.id DESC LIMIT $5",
        sub_order_json(ship_by_s)
    ))
    .bind(merchant)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One sub-order in full, and what the address rule needs: whether the customer's name and
/// address may be shown, until when, the name and the address.
pub struct SubOrderRow {
    pub json: Value,
    pub address_visible: bool,
    pub visible_until: Option<chrono::DateTime<chrono::Utc>>,
    pub name: Option<String>,
    pub address: Value,
}

pub async fn sub_order(
    pool: &PgPool,
    merchant: &str,
    id: i64,
    ship_by_s: i64,
    visible_days: i32,
) -> Result<Option<SubOrderRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {} ::jsonb || jsonb_build_object(
            'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object('sku', l.sku, 'quantity', l.quantity,
                        'unit_price_minor', l.unit_price_minor,
                        'shipped_quantity', (SELECT coalesce(sum(sl.quantity), 0) FROM shipments sh
                             JOIN shipment_lines sl ON sl.shipment_id = sh.id AND sl.sku = l.sku
                             WHERE sh.sub_order_id = s.id AND sh.return_id IS NULL)) ORDER BY l.sku), '[]')
                      FROM order_lines l WHERE l.sub_order_id = s.id),
            'shipments', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', sh.id, 'tracking_number', sh.tracking_number,
                        'carrier', sh.carrier, 'status', sh.status, 'created_at', sh.created_at, 'delivered_at', sh.delivered_at,
                        'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object('sku', sl.sku, 'quantity', sl.quantity) ORDER BY sl.sku), '[]')
                                  FROM shipment_lines sl WHERE sl.shipment_id = sh.id)) ORDER BY sh.id), '[]')
                      FROM shipments sh WHERE sh.sub_order_id = s.id AND sh.return_id IS NULL),
            'timeline', (SELECT coalesce(jsonb_agg(jsonb_build_object('type', e.type, 'actor', e.actor, 'reason', e.reason,
                        'at', e.created_at) ORDER BY e.created_at, e.id), '[]')
                      FROM order_events e WHERE e.order_id = s.order_id AND e.sub_order_id = s.id)),
            coalesce(s.status = 'accepted' AND (u.unshipped > 0
                OR u.last_shipped_at > now() - make_interval(days => $3)), false),
            u.last_shipped_at + make_interval(days => $3),
            o.customer->>'name', o.shipping_address
         FROM sub_orders s JOIN orders o ON o.id = s.order_id JOIN merchants m ON m.id = s.merchant_id {UNSHIPPED}
         WHERE s.id = $1 AND s.merchant_id = $2",
        sub_order_json(ship_by_s)
    );
    type Row = (
        Value,
        bool,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
        Value,
    );
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(id)
        .bind(merchant)
        .bind(visible_days)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(
        |(json, address_visible, visible_until, name, address)| SubOrderRow {
            json,
            address_visible,
            visible_until,
            name,
            address,
        },
    ))
}

/// Writes one read of a customer's address to the access log.
pub async fn log_address_read(
    pool: &PgPool,
    merchant: &str,
    key_id: &str,
    sub_order_id: i64,
    client: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO address_reads (merchant_id, key_id, sub_order_id, client) VALUES ($1, $2, $3, $4)",
    )
    .bind(merchant)
    .bind(key_id)
    .bind(sub_order_id)
    .bind(client)
    .execute(pool)
    .await?;
    Ok(())
}

/// The address reads of a merchant since a time, newest first (the operator's query).
pub async fn address_reads(
    pool: &PgPool,
    merchant: &str,
    since: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT json_build_object('at', read_at, 'key_id', key_id, 'sub_order_id', sub_order_id, 'client', client)
         FROM address_reads WHERE merchant_id = $1 AND read_at >= $2 ORDER BY read_at DESC, id DESC LIMIT $3",
    )
    .bind(merchant)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A merchant's returns, newest first, after row id `after`; `_id` carries the row id.
pub async fn returns(
    pool: &PgPool,
    merchant: &str,
    status: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT json_build_object('id', r.storefront_return_id, 'sub_order_id', r.sub_order_id,
            'storefront_order_id', o.storefront_order_id, 'status', r.status, 'reason', r.reason,
            'refund_minor', r.refund_minor, 'respond_by', CASE WHEN r.status = 'requested' THEN r.respond_by END,
            'decided_by', r.decided_by, 'decided_at', r.decided_at, 'received_at', r.received_at, 'refunded_at', r.refunded_at,
            'created_at', r.created_at, '_id', r.id,
            'lines', (SELECT coalesce(json_agg(json_build_object('sku', sku, 'quantity', quantity) ORDER BY sku), '[]')
                      FROM return_lines WHERE return_id = r.id))
         FROM returns r JOIN orders o ON o.id = r.order_id
         WHERE r.merchant_id = $1 AND r.id < $2 AND ($3::text IS NULL OR r.status = $3)
         ORDER BY r.id DESC LIMIT $4",
    )
    .bind(merchant)
    .bind(after)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

const COMPLAINT: &str = "json_build_object('id', c.storefront_complaint_id, 'sub_order_id', c.sub_order_id,
    'storefront_order_id', o.storefront_order_id, 'subject', c.subject, 'status', c.status,
    'reply_by', CASE WHEN c.status = 'open' THEN c.reply_by END, 'escalated_at', c.escalated_at,
    'closed_at', c.closed_at, 'resolution', c.resolution, 'created_at', c.created_at, '_id', c.id)";

/// A merchant's complaints, newest first, after row id `after`; `_id` carries the row id.
pub async fn complaints(
    pool: &PgPool,
    merchant: &str,
    status: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT {COMPLAINT} FROM complaints c JOIN orders o ON o.id = c.order_id
         WHERE c.merchant_id = $1 AND c.id < $2 AND ($3::text IS NULL OR c.status = $3)
         ORDER BY c.id DESC LIMIT $4"
    ))
    .bind(merchant)
    .bind(after)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One complaint with every message.
pub async fn complaint(pool: &PgPool, merchant: &str, id: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT ({COMPLAINT})::jsonb - '_id' || jsonb_build_object('messages',
            (SELECT coalesce(jsonb_agg(jsonb_build_object('author', author, 'kind', kind, 'body', body, 'at', created_at)
                     ORDER BY id), '[]') FROM case_messages WHERE complaint_id = c.id))
         FROM complaints c JOIN orders o ON o.id = c.order_id
         WHERE c.storefront_complaint_id = $1 AND c.merchant_id = $2"
    ))
    .bind(id)
    .bind(merchant)
    .fetch_optional(pool)
    .await
}

const STOCK: &str = "json_build_object('sku', sku, 'on_hand', on_hand, 'reserved', reserved,
    'available', on_hand - reserved, 'updated_at', updated_at)";

/// A merchant's stock by SKU, after `after`.
pub async fn stock(
    pool: &PgPool,
    merchant: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT {STOCK} FROM stock WHERE merchant_id = $1 AND sku > $2 ORDER BY sku LIMIT $3"
    ))
    .bind(merchant)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn stock_one(pool: &PgPool, merchant: &str, sku: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT {STOCK} FROM stock WHERE merchant_id = $1 AND sku = $2"
    ))
    .bind(merchant)
    .bind(sku)
    .fetch_optional(pool)
    .await
}

const DELIVERY: &str = "json_build_object('id', d.id, 'event_type', d.event_type, 'status', d.status,
    'attempts', d.attempts, 'sub_order_id', d.sub_order_id, 'created_at', d.created_at, 'delivered_at', d.delivered_at,
    'replayed_at', d.replayed_at,
    'last_attempt', (SELECT json_build_object('at', a.attempted_at, 'status_code', a.status_code,
                            'latency_ms', a.latency_ms, 'error', a.error)
                     FROM webhook_attempts a WHERE a.delivery_id = d.id ORDER BY a.id DESC LIMIT 1))";

/// A merchant's webhook deliveries, newest first, after `(created micros, id)`, each with its
/// last attempt and its creation micros.
pub async fn deliveries(
    pool: &PgPool,
    merchant: &str,
    status: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<(Value, i64)>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {DELIVERY}, (extract(epoch FROM d.created_at) * 1e6)::bigint FROM webhook_deliveries d
         WHERE d.merchant_id = $1 AND ($2::bigint IS NULL OR (d.created_at, d.id) < ({AT_MICROS}, $3))
           AND ($4::text IS NULL OR d.status = $4)
         ORDER BY d.created_at DESC, d.id DESC LIMIT $5"
    ))
    .bind(merchant)
    .bind(at)
    .bind(id)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One delivery with the body sent and every attempt.
pub async fn delivery(pool: &PgPool, merchant: &str, id: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT ({DELIVERY})::jsonb || jsonb_build_object('payload', d.payload, 'attempt_log',
            (SELECT coalesce(jsonb_agg(jsonb_build_object('at', a.attempted_at, 'status_code', a.status_code,
                     'latency_ms', a.latency_ms, 'error', a.error) ORDER BY a.id), '[]')
             FROM webhook_attempts a WHERE a.delivery_id = d.id))
         FROM webhook_deliveries d WHERE d.id = $1 AND d.merchant_id = $2"
    ))
    .bind(id)
    .bind(merchant)
    .fetch_optional(pool)
    .await
}

/// The merchant's signing secrets, newest first.
pub async fn signing_secrets(pool: &PgPool, merchant: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT signing_secrets FROM merchants WHERE id = $1")
        .bind(merchant)
        .fetch_one(pool)
        .await
}
