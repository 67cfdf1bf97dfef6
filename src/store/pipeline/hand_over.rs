//! The hand-over in set-based form: a paid order's capture recorded (fenced), the order moved
//! on and its reserved sub-orders to their merchants, with their webhook rows; and what an
//! order then needs pushed.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};
use sqlx::PgPool;

use super::{add_events, begin_keyed, settle_held, NewEvent, Settle};
use crate::store::orders::Tx;

/// An order whose charge matches what will ship, to hand to its merchants.
#[derive(Debug, Clone)]
pub struct HandOver {
    pub order_id: i64,
    /// What the order is charged (for the `order.processing` event).
    pub charged_minor: i64,
    /// The capture that made the charge match, to record with the hand-over.
    pub capture: Option<Capture>,
}

/// A capture made at the payment provider, recorded as [`crate::store::orders::record_payment`]
/// records one: the operation, the order's amounts and an `order.captured` event.
#[derive(Debug, Clone)]
pub struct Capture {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub payment_status: String,
    pub data: Value,
    /// The payment lock's fencing token of the run that made it (migration 0016): the capture
    /// is recorded only if no newer holder wrote the order since.
    pub fence: i64,
}

/// Moves paid orders on: their capture recorded (when the request brings one), `authorised` →
/// `captured` with an `order.processing` event, and
/// their reserved sub-orders on to their merchants: accepted at once for merchants in auto
/// mode (their stock leaves on hand), else awaiting a decision until the merchant's deadline;
/// with the `sub_order.created` webhook delivery (`delivery_id` names it, so a rerun finds it)
/// and an event each. Orders and sub-orders already moved on are left alone.
pub async fn hand_over(
    pool: &PgPool,
    reqs: &[HandOver],
    delivery_id: fn(i64, &str) -> String,
) -> Result<Vec<HandedOver>, sqlx::Error> {
    let mut tx = begin_keyed(pool).await?;
    let next = hand_over_in(&mut tx, reqs, delivery_id).await?;
    tx.commit().await?;
    Ok(next)
}

/// [`hand_over`] inside the caller's transaction (begun with [`begin_keyed`]).
pub async fn hand_over_in(
    tx: &mut Tx<'_>,
    reqs: &[HandOver],
    delivery_id: fn(i64, &str) -> String,
) -> Result<Vec<HandedOver>, sqlx::Error> {
    type Row = (i64, i64, String, String, i64, i64, String, i32, String, Value);
    let order_ids: Vec<i64> = reqs.iter().map(|r| r.order_id).collect();
    let order_ids = order_ids.as_slice();
    // The orders first, locked by id like every writer locks them; then, in one statement,
    // each capture recorded (operation and amounts) and each order moved on, once per order.
    let mut sorted = order_ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut first: HashMap<i64, &HandOver> = HashMap::new();
    for r in reqs {
        first.entry(r.order_id).or_insert(r);
    }
    let captures: Vec<(i64, &Capture)> = sorted
        .iter()
        .filter_map(|id| first[id].capture.as_ref().map(|c| (*id, c)))
        .collect();
    let moved: Vec<(i64, String, bool, bool)> = sqlx::query_as(
        "WITH l AS (SELECT id, status, payment_fence FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE),
              c0 AS (SELECT * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])
                     AS c(id, key, amount, captured, refunded, ps, fence)),
              c AS (SELECT c0.* FROM c0 JOIN l ON l.id = c0.id WHERE l.payment_fence <= c0.fence),
              op AS (INSERT INTO payment_operations (order_id, kind, idempotency_key, amount_minor, outcome)
                     SELECT id, 'capture', key, amount, 'ok' FROM c)
         UPDATE orders o SET
                status = CASE WHEN l.status = 'authorised' THEN 'captured' ELSE o.status END,
                status_reason = CASE WHEN l.status = 'authorised' THEN NULL ELSE o.status_reason END,
                captured_minor = coalesce(c.captured, o.captured_minor),
                refunded_minor = coalesce(c.refunded, o.refunded_minor),
                payment_status = coalesce(c.ps, o.payment_status),
                payment_fence = coalesce(c.fence, o.payment_fence),
                updated_at = now()
         FROM l LEFT JOIN c ON c.id = l.id
         WHERE o.id = l.id AND (l.status = 'authorised' OR c.id IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM c0 WHERE c0.id = l.id AND c0.fence < l.payment_fence)
         RETURNING o.id, o.storefront_order_id, c.id IS NOT NULL, l.status = 'authorised'",
    )
    .bind(&sorted)
    .bind(captures.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.1.idempotency_key.clone()).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.1.amount_minor).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.1.captured_minor).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.1.refunded_minor).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.1.payment_status.clone()).collect::<Vec<_>>())
    .bind(captures.iter().map(|c| c.1.fence).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let mut events = Vec::new();
    for (id, sf, captured, moved_on) in moved {
        let req = first[&id];
        if let (true, Some(c)) = (captured, &req.capture) {
            events.push(NewEvent::for_order(
                id,
                &sf,
                "order.captured",
                "souk:payment",
                c.data.clone(),
            ));
        }
        if moved_on {
            events.push(NewEvent::for_order(
                id,
                &sf,
                "order.processing",
                "souk:payment",
                json!({"charged_minor": req.charged_minor}),
            ));
        }
    }
    let subs: Vec<Row> = sqlx::query_as(
        "SELECT s.id, s.order_id, o.storefront_order_id, s.merchant_id, s.subtotal_minor, s.commission_minor,
                m.acceptance_mode, m.acceptance_deadline_s, o.currency, o.shipping_address
         FROM sub_orders s JOIN orders o ON o.id = s.order_id JOIN merchants m ON m.id = s.merchant_id
         WHERE s.order_id = ANY($1) AND s.status = 'reserved' ORDER BY s.id FOR UPDATE OF s",
    )
    .bind(order_ids)
    .fetch_all(&mut **tx)
    .await?;
    if subs.is_empty() {
        add_events(tx, &events).await?;
        return next_steps(tx, order_ids).await;
    }
    let ids: Vec<i64> = subs.iter().map(|r| r.0).collect();
    let mut lines: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for (sub, sku, q, p) in sqlx::query_as::<_, (i64, String, i32, i64)>(
        "SELECT sub_order_id, sku, quantity, unit_price_minor FROM order_lines WHERE sub_order_id = ANY($1)
         ORDER BY sub_order_id, sku",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?
    {
        lines
            .entry(sub)
            .or_default()
            .push(json!({"sku": sku, "quantity": q, "unit_price_minor": p}));
    }
    let to: Vec<&str> = subs
        .iter()
        .map(|r| {
            if r.6 == "auto" {
                "accepted"
            } else {
                "awaiting_acceptance"
            }
        })
        .collect();
    let secs: Vec<f64> = subs.iter().map(|r| r.7 as f64).collect();
    // The deadline goes into the `sub_order.created` webhook that starts it.
    let accept_by: HashMap<i64, Option<chrono::DateTime<chrono::Utc>>> = sqlx::query_as(
        "UPDATE sub_orders s SET status = u.st,
                accept_by = CASE WHEN u.st = 'accepted' THEN NULL ELSE now() + make_interval(secs => u.secs) END,
                accepted_at = CASE WHEN u.st = 'accepted' THEN now() END,
                updated_at = now()
         FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS u(id, st, secs) WHERE s.id = u.id
         RETURNING s.id, s.accept_by",
    )
    .bind(&ids)
    .bind(&to)
    .bind(&secs)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    events.reserve(subs.len());
    let (mut d_id, mut d_merchant, mut d_order, mut d_sub, mut d_payload) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, order_id, sf, merchant, subtotal, commission, mode, _, currency, shipping) in &subs {
        let auto = mode == "auto";
        events.push(NewEvent {
            order_id: Some(*order_id),
            sub_order_id: Some(*id),
            storefront_order_id: Some(sf.clone()),
            kind: if auto {
                "sub_order.accepted"
            } else {
                "sub_order.awaiting_acceptance"
            },
            actor: if auto { "souk:auto-accept" } else { "souk:pipeline" },
            reason: None,
            data: json!({"merchant_id": merchant}),
        });
        d_id.push(delivery_id(*id, "sub_order.created"));
        d_merchant.push(merchant.as_str());
        d_order.push(*order_id);
        d_sub.push(*id);
        d_payload.push(json!({
            "storefront_order_id": sf,
            "sub_order_id": id,
            "merchant_id": merchant,
            "currency": currency,
            "lines": lines.remove(id).unwrap_or_default(),
            "subtotal_minor": subtotal,
            "commission_minor": commission,
            "shipping_address": shipping,
            "acceptance": if auto { "accepted" } else { "awaiting_decision" },
            "accept_by": accept_by.get(id).copied().flatten(),
        }));
    }
    add_events(tx, &events).await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, merchant_id, order_id, sub_order_id, event_type, payload)
         SELECT i, m, o, s, 'sub_order.created', p FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::jsonb[])
         AS d(i, m, o, s, p)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&d_id)
    .bind(&d_merchant)
    .bind(&d_order)
    .bind(&d_sub)
    .bind(&d_payload)
    .execute(&mut **tx)
    .await?;
    let next = next_steps(tx, order_ids).await?;
    let auto: Vec<i64> = subs.iter().filter(|r| r.6 == "auto").map(|r| r.0).collect();
    if !auto.is_empty() {
        settle_held(tx, &auto, Settle::Confirm).await?;
    }
    Ok(next)
}

/// What an order needs pushed once handed over (also when an earlier run handed it over and
/// stopped before pushing): a deadline job per sub-order awaiting a decision, a webhook job per
/// pending delivery.
#[derive(Debug, Clone, Default)]
pub struct HandedOver {
    /// Sub-orders awaiting their merchant's decision, with the deadline.
    pub awaiting: Vec<(i64, chrono::DateTime<chrono::Utc>)>,
    /// Webhook deliveries of the order not delivered yet.
    pub pending_deliveries: Vec<String>,
}

async fn next_steps(tx: &mut Tx<'_>, order_ids: &[i64]) -> Result<Vec<HandedOver>, sqlx::Error> {
    type Next = (
        i64,
        Option<i64>,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let mut by_order: HashMap<i64, HandedOver> = HashMap::new();
    // Both kinds in one statement: sub-orders awaiting a decision (with their deadline), then
    // pending deliveries.
    for (order_id, sub, delivery, at) in sqlx::query_as::<_, Next>(
        "SELECT order_id, id, NULL::text, accept_by FROM sub_orders
         WHERE order_id = ANY($1) AND status = 'awaiting_acceptance' AND accept_by IS NOT NULL
         UNION ALL
         SELECT order_id, NULL, id, NULL FROM webhook_deliveries WHERE order_id = ANY($1) AND status = 'pending'
         ORDER BY 2, 3",
    )
    .bind(order_ids)
    .fetch_all(&mut **tx)
    .await?
    {
        let next = by_order.entry(order_id).or_default();
        match (sub, delivery, at) {
            (Some(sub), _, Some(at)) => next.awaiting.push((sub, at)),
            (_, Some(delivery), _) => next.pending_deliveries.push(delivery),
            _ => {}
        }
    }
    Ok(order_ids
        .iter()
        .map(|o| by_order.get(o).cloned().unwrap_or_default())
        .collect())
}
