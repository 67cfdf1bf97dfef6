//! SQL of shipments and tracking events.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

use std::collections::BTreeMap;

use super::orders::{add_event, Tx};
use crate::domain::{
    after_sales::{plan_shipment, ItemLine},
    order::Rejection,
    tracking::status::{roll_up as roll_up_statuses, Status},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Shipment {
    pub id: i64,
    pub sub_order_id: i64,
    pub order_id: i64,
    pub storefront_order_id: String,
    pub merchant_id: String,
    pub tracking_number: String,
    pub carrier: Option<String>,
    pub provider: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub status: String,
    pub last_event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Set for a customer's return parcel (going back to the merchant).
    pub return_id: Option<i64>,
}

const SELECT: &str =
    "SELECT s.id, s.sub_order_id, so.order_id, o.storefront_order_id, s.merchant_id, s.tracking_number,
        s.carrier, s.provider, s.registered_at, s.status, s.last_event_at, s.created_at, s.return_id
        FROM shipments s JOIN sub_orders so ON so.id = s.sub_order_id JOIN orders o ON o.id = so.order_id";

pub async fn load(pool: &PgPool, id: i64) -> Result<Option<Shipment>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE s.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Whether some of a sub-order's units have not left in any outbound parcel yet.
async fn unshipped(tx: &mut Tx<'_>, sub_order_id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM shipments sh WHERE sh.sub_order_id = $1 AND sh.return_id IS NULL
                              AND NOT EXISTS (SELECT 1 FROM shipment_lines sl WHERE sl.shipment_id = sh.id))
            AND EXISTS (SELECT 1 FROM order_lines l WHERE l.sub_order_id = $1
                          AND l.quantity > (SELECT coalesce(sum(sl.quantity), 0) FROM shipment_lines sl
                                            JOIN shipments sh ON sh.id = sl.shipment_id
                                            WHERE sh.sub_order_id = $1 AND sh.return_id IS NULL AND sl.sku = l.sku))",
    )
    .bind(sub_order_id)
    .fetch_one(&mut **tx)
    .await
}

/// A sub-order's delivery roll-up: its outbound parcels, and `pending` for what has not left.
async fn sub_order_roll_up(tx: &mut Tx<'_>, sub_order_id: i64) -> Result<Option<String>, sqlx::Error> {
    let mut all: Vec<Status> = sqlx::query_scalar::<_, String>(
        "SELECT status FROM shipments WHERE sub_order_id = $1 AND return_id IS NULL",
    )
    .bind(sub_order_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .filter_map(|s| Status::parse(s))
    .collect();
    if !all.is_empty() && unshipped(tx, sub_order_id).await? {
        all.push(Status::Pending);
    }
    Ok(roll_up_statuses(&all).map(|s| s.as_str().to_owned()))
}

/// A parcel to record.
pub struct NewShipment<'a> {
    pub sub_order_id: i64,
    pub merchant: &'a str,
    pub tracking_number: &'a str,
    pub carrier: Option<&'a str>,
    pub candidates: &'a Value,
    pub provider: &'a str,
    /// What an outbound parcel carries; None: everything not shipped yet.
    pub lines: Option<&'a [ItemLine]>,
    /// Set for a customer's return parcel.
    pub return_id: Option<i64>,
}

/// Creates the shipment of a sub-order (once per tracking number); returns its id and whether
/// it is new, or why the parcel is refused (its lines exceed what is left to ship). The
/// sub-order is marked shipped, its delivery roll-up updated and the storefront told. A return
/// parcel (`return_id`) leaves the sub-order's shipping as it is.
pub async fn create(
    pool: &PgPool,
    n: &NewShipment<'_>,
) -> Result<Result<(i64, bool), Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The sub-order's row lock serialises parcels claiming its lines.
    let (order_id, sf): (i64, String) = sqlx::query_as(
        "SELECT s.order_id, o.storefront_order_id FROM sub_orders s JOIN orders o ON o.id = s.order_id
         WHERE s.id = $1 FOR UPDATE OF s",
    )
    .bind(n.sub_order_id)
    .fetch_one(&mut *tx)
    .await?;
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT id FROM shipments WHERE sub_order_id = $1 AND tracking_number = $2")
            .bind(n.sub_order_id)
            .bind(n.tracking_number)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(id) = existing {
        tx.commit().await?;
        return Ok(Ok((id, false)));
    }
    let mut carried = Vec::new();
    if n.return_id.is_none() {
        if !unshipped(&mut tx, n.sub_order_id).await? {
            return Ok(Err(Rejection {
                code: "nothing_left_to_ship",
                message: "every line of the sub-order has shipped already".into(),
            }));
        }
        let ordered: BTreeMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i32, i64)>(
            "SELECT sku, quantity, unit_price_minor FROM order_lines WHERE sub_order_id = $1",
        )
        .bind(n.sub_order_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(s, q, p)| (s, (q as i64, p)))
        .collect();
        let shipped: BTreeMap<String, i64> = sqlx::query_as(
            "SELECT sl.sku, sum(sl.quantity)::bigint FROM shipment_lines sl JOIN shipments sh ON sh.id = sl.shipment_id
             WHERE sh.sub_order_id = $1 AND sh.return_id IS NULL GROUP BY sl.sku",
        )
        .bind(n.sub_order_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        carried = match plan_shipment(n.lines, &ordered, &shipped) {
            Ok(l) => l,
            Err(r) => return Ok(Err(r)),
        };
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO shipments (sub_order_id, merchant_id, tracking_number, carrier, carrier_candidates, provider, return_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(n.sub_order_id)
    .bind(n.merchant)
    .bind(n.tracking_number)
    .bind(n.carrier)
    .bind(n.candidates)
    .bind(n.provider)
    .bind(n.return_id)
    .fetch_one(&mut *tx)
    .await?;
    let skus: Vec<&str> = carried.iter().map(|l| l.sku.as_str()).collect();
    let qty: Vec<i32> = carried.iter().map(|l| l.quantity as i32).collect();
    sqlx::query(
        "INSERT INTO shipment_lines (shipment_id, sku, quantity)
         SELECT $1, u.sku, u.q FROM UNNEST($2::text[], $3::int4[]) AS u(sku, q)",
    )
    .bind(id)
    .bind(&skus)
    .bind(&qty)
    .execute(&mut *tx)
    .await?;
    if n.return_id.is_none() {
        let rolled = sub_order_roll_up(&mut tx, n.sub_order_id).await?;
        sqlx::query(
            "UPDATE sub_orders SET shipped_at = coalesce(shipped_at, now()), delivery_status = $2, updated_at = now()
             WHERE id = $1",
        )
        .bind(n.sub_order_id)
        .bind(&rolled)
        .execute(&mut *tx)
        .await?;
    }
    let (kind, actor) = match n.return_id {
        Some(_) => ("return.shipped", "customer".to_owned()),
        None => ("shipment.created", format!("merchant:{}", n.merchant)),
    };
    let lines: Vec<Value> = carried
        .iter()
        .map(|l| json!({"sku": l.sku, "quantity": l.quantity}))
        .collect();
    add_event(
        &mut tx,
        Some(order_id),
        Some(n.sub_order_id),
        Some(&sf),
        kind,
        &actor,
        None,
        json!({"shipment_id": id, "merchant_id": n.merchant, "tracking_number": n.tracking_number,
               "carrier": n.carrier, "return_id": n.return_id, "lines": lines}),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok((id, true)))
}

/// Open shipments (not at their end) with this tracking number: what a provider's push is about.
pub async fn open_by_number(pool: &PgPool, number: &str) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM shipments WHERE tracking_number = $1 AND status NOT IN ('delivered', 'returned', 'expired')",
    )
    .bind(number)
    .fetch_all(pool)
    .await
}

pub async fn mark_registered(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shipments SET registered_at = coalesce(registered_at, now()) WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// One carrier event as the provider reported it, with souk's status.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub occurred_at: DateTime<Utc>,
    pub status: Option<&'static str>,
    pub raw_status: String,
    pub raw_sub_status: Option<String>,
    pub location: Option<String>,
    pub message: Option<String>,
    pub dedupe_key: String,
}

/// What a poll changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    pub new_events: usize,
    /// The shipment's status after the poll, and whether it changed.
    pub status: String,
    pub changed: bool,
    pub last_event_at: Option<DateTime<Utc>>,
    /// A return parcel delivered to the merchant made its return received now.
    pub return_received: bool,
}

/// Stores the events not seen before and moves the shipment to the status of its latest event
/// with a known status (events may arrive late or out of order: the latest by carrier time
/// wins). A change rolls up into the sub-order and the order and is told to the storefront, in
/// the same transaction, with the merchant's `shipment.status_changed` webhook delivery
/// (`delivery_id` names it): stored with the change it tells, so a crash before the webhook job
/// is pushed cannot lose it (the sweep pushes pending deliveries).
pub async fn record_poll(
    pool: &PgPool,
    s: &Shipment,
    events: &[NewEvent],
    roll_up: impl Fn(&[String]) -> Option<String>,
    delivery_id: fn(i64, &str) -> String,
) -> Result<PollOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let current: String = sqlx::query_scalar("SELECT status FROM shipments WHERE id = $1 FOR UPDATE")
        .bind(s.id)
        .fetch_one(&mut *tx)
        .await?;
    // Every poll returns every checkpoint again: one statement stores the new ones.
    let col = |f: fn(&NewEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let new_events = sqlx::query(
        "INSERT INTO tracking_events (shipment_id, occurred_at, status, raw_status, raw_sub_status, location, message,
                provider, dedupe_key)
         SELECT $1, u.at, u.status, u.raw, u.sub, u.loc, u.msg, $2, u.key
         FROM UNNEST($3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
              AS u(at, status, raw, sub, loc, msg, key)
         ON CONFLICT (shipment_id, dedupe_key) DO NOTHING",
    )
    .bind(s.id)
    .bind(&s.provider)
    .bind(&at)
    .bind(col(|e| e.status))
    .bind(col(|e| Some(e.raw_status.as_str())))
    .bind(col(|e| e.raw_sub_status.as_deref()))
    .bind(col(|e| e.location.as_deref()))
    .bind(col(|e| e.message.as_deref()))
    .bind(col(|e| Some(e.dedupe_key.as_str())))
    .execute(&mut *tx)
    .await?
    .rows_affected() as usize;
    let latest: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT status, occurred_at FROM tracking_events WHERE shipment_id = $1 AND status IS NOT NULL
         ORDER BY occurred_at DESC, id DESC LIMIT 1",
    )
    .bind(s.id)
    .fetch_optional(&mut *tx)
    .await?;
    let last_event_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(occurred_at) FROM tracking_events WHERE shipment_id = $1")
            .bind(s.id)
            .fetch_one(&mut *tx)
            .await?;
    let status = latest.as_ref().map_or(current.clone(), |l| l.0.clone());
    let changed = status != current;
    sqlx::query(
        "UPDATE shipments SET last_polled_at = now(), polls = polls + 1, last_event_at = $2,
                status = $3, status_changed_at = CASE WHEN $4 THEN now() ELSE status_changed_at END,
                delivered_at = CASE WHEN $3 = 'delivered' THEN coalesce(delivered_at, now()) ELSE delivered_at END
         WHERE id = $1",
    )
    .bind(s.id)
    .bind(last_event_at)
    .bind(&status)
    .bind(changed)
    .execute(&mut *tx)
    .await?;
    let mut return_received = false;
    if let (true, Some(rid)) = (changed, s.return_id) {
        // A return parcel: its own story, not the sub-order's delivery.
        add_event(
            &mut tx,
            Some(s.order_id),
            Some(s.sub_order_id),
            Some(&s.storefront_order_id),
            &format!("return_shipment.{status}"),
            &format!("souk:tracking:{}", s.provider),
            None,
            json!({"shipment_id": s.id, "return_id": rid, "tracking_number": s.tracking_number, "status": status,
                   "previous": current, "occurred_at": latest.as_ref().map(|l| l.1)}),
        )
        .await?;
        if status == "delivered" {
            return_received = super::after_sales::mark_received(
                &mut tx,
                rid,
                &format!("souk:tracking:{}", s.provider),
                "the return parcel was delivered to the merchant",
            )
            .await?;
        }
    } else if changed {
        // Parcels of one order polled at once must roll up one after another: each would
        // otherwise read the others as not yet moved (READ COMMITTED), and two parcels
        // delivered together would leave their sub-order and order short of `delivered`.
        // After the wait, the roll-up's statements see the other polls' commits.
        sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
            .bind(s.order_id)
            .execute(&mut *tx)
            .await?;
        let sub_status = sub_order_roll_up(&mut tx, s.sub_order_id).await?;
        sqlx::query(
            "UPDATE sub_orders SET delivery_status = $2,
                    delivered_at = CASE WHEN $2 = 'delivered' THEN coalesce(delivered_at, now()) ELSE delivered_at END,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(s.sub_order_id)
        .bind(&sub_status)
        .execute(&mut *tx)
        .await?;
        let subs: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT delivery_status FROM sub_orders WHERE order_id = $1 AND status IN ('accepted', 'completed')",
        )
        .bind(s.order_id)
        .fetch_all(&mut *tx)
        .await?;
        let subs: Vec<String> = subs
            .into_iter()
            .map(|d| d.unwrap_or_else(|| "pending".to_owned()))
            .collect();
        let order_status = roll_up(&subs);
        sqlx::query("UPDATE orders SET delivery_status = $2, updated_at = now() WHERE id = $1")
            .bind(s.order_id)
            .bind(&order_status)
            .execute(&mut *tx)
            .await?;
        add_event(
            &mut tx,
            Some(s.order_id),
            Some(s.sub_order_id),
            Some(&s.storefront_order_id),
            &format!("shipment.{status}"),
            &format!("souk:tracking:{}", s.provider),
            None,
            json!({"shipment_id": s.id, "merchant_id": s.merchant_id, "tracking_number": s.tracking_number,
                   "status": status, "previous": current, "sub_order_delivery_status": sub_status,
                   "order_delivery_status": order_status,
                   "occurred_at": latest.map(|l| l.1)}),
        )
        .await?;
    }
    if changed {
        let payload = json!({
            "storefront_order_id": s.storefront_order_id,
            "sub_order_id": s.sub_order_id,
            "merchant_id": s.merchant_id,
            "shipment_id": s.id,
            "tracking_number": s.tracking_number,
            "carrier": s.carrier,
            "status": status,
            "last_event_at": last_event_at,
        });
        crate::store::orders::insert_delivery(
            &mut tx,
            &delivery_id(s.id, &status),
            &s.merchant_id,
            Some(s.order_id),
            Some(s.sub_order_id),
            "shipment.status_changed",
            &payload,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(PollOutcome {
        new_events,
        status,
        changed,
        last_event_at,
        return_received,
    })
}

/// Shipments of an order with their events, for `souk orders show`.
pub async fn story(pool: &PgPool, order_id: i64) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT json_build_object('id', s.id, 'sub_order_id', s.sub_order_id, 'merchant_id', s.merchant_id,
                'tracking_number', s.tracking_number, 'carrier', s.carrier, 'provider', s.provider, 'status', s.status,
                'return_id', s.return_id,
                'lines', (SELECT coalesce(json_agg(json_build_object('sku', l.sku, 'quantity', l.quantity) ORDER BY l.sku), '[]')
                          FROM shipment_lines l WHERE l.shipment_id = s.id),
                'polls', s.polls, 'last_event_at', s.last_event_at, 'delivered_at', s.delivered_at,
                'events', (SELECT coalesce(json_agg(json_build_object('at', e.occurred_at, 'status', e.status,
                            'raw_status', e.raw_status, 'location', e.location, 'message', e.message) ORDER BY e.occurred_at, e.id), '[]')
                           FROM tracking_events e WHERE e.shipment_id = s.id))
         FROM shipments s JOIN sub_orders so ON so.id = s.sub_order_id WHERE so.order_id = $1 ORDER BY s.id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// Completes accepted sub-orders delivered more than `after_s` ago and with no open return or
/// complaint (with an outcome event), and settles each in the same transaction (ledger, payout queued); returns how many.
pub async fn complete_delivered(pool: &PgPool, after_s: u64, limit: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done: Vec<(i64, i64, String, String)> = sqlx::query_as(
        "UPDATE sub_orders s SET status = 'completed', status_reason = 'delivered', updated_at = now()
         FROM orders o
         WHERE s.id IN (SELECT so.id FROM sub_orders so WHERE so.status = 'accepted' AND so.delivery_status = 'delivered'
                          AND so.delivered_at < now() - make_interval(secs => $1)
                          -- an open after-sales case holds completion (and settlement) back
                          AND NOT EXISTS (SELECT 1 FROM returns r WHERE r.sub_order_id = so.id
                                          AND r.status IN ('requested', 'approved', 'received'))
                          AND NOT EXISTS (SELECT 1 FROM complaints c WHERE c.sub_order_id = so.id AND c.status <> 'closed')
                          ORDER BY so.id LIMIT $2 FOR UPDATE SKIP LOCKED)
           AND o.id = s.order_id
         RETURNING s.id, s.order_id, o.storefront_order_id, s.merchant_id",
    )
    .bind(after_s as f64)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for (sub, order, sf, merchant) in &done {
        super::settlement::settle_sub_order(&mut tx, *sub).await?;
        add_event(
            &mut tx,
            Some(*order),
            Some(*sub),
            Some(sf),
            "sub_order.completed",
            "souk:sweeper",
            Some("delivered and the completion delay has passed"),
            json!({"merchant_id": merchant}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(done.len() as u64)
}

/// Flags accepted sub-orders not shipped by their merchant's ship-by deadline (merchant's own, else
/// `default_s`) with an outcome event and the merchant's `sub_order.late` webhook; returns
/// (order id, sub-order id, merchant) of each.
pub async fn flag_late(
    pool: &PgPool,
    default_s: u64,
    limit: i64,
) -> Result<Vec<(i64, i64, String)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let late: Vec<(i64, i64, String, String)> = sqlx::query_as(
        "UPDATE sub_orders s SET late_at = now(), updated_at = now()
         FROM orders o
         WHERE s.id IN (
             SELECT so.id FROM sub_orders so JOIN merchants m ON m.id = so.merchant_id
             WHERE so.status = 'accepted' AND so.shipped_at IS NULL AND so.late_at IS NULL
               -- the shortest ship-by of any merchant bounds the index range read
               AND so.accepted_at < now() - make_interval(secs => (SELECT least(min(ship_by_s), $1) FROM merchants)::float8)
               AND so.accepted_at < now() - make_interval(secs => coalesce(m.ship_by_s, $1)::float8)
             ORDER BY so.accepted_at LIMIT $2 FOR UPDATE OF so SKIP LOCKED)
           AND o.id = s.order_id
         RETURNING s.order_id, s.id, s.merchant_id, o.storefront_order_id",
    )
    .bind(default_s.min(i32::MAX as u64) as i64)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for (order, sub, merchant, sf) in &late {
        // The merchant's webhook in the same transaction as the flag: a crash after the
        // commit leaves a pending delivery the sweep finds, never a flag nobody was told of.
        crate::store::orders::insert_sub_order_delivery(
            &mut tx,
            merchant,
            *order,
            sf,
            *sub,
            "sub_order.late",
            json!({"reason": "not shipped by the ship-by deadline"}),
        )
        .await?;
        add_event(
            &mut tx,
            Some(*order),
            Some(*sub),
            Some(sf),
            "sub_order.late",
            "souk:sweeper",
            Some("not shipped by the ship-by deadline"),
            json!({"merchant_id": merchant}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(late.into_iter().map(|(o, s, m, _)| (o, s, m)).collect())
}

/// Sets (or clears) a merchant's ship-by deadline; `false` for an unknown merchant.
pub async fn set_ship_by(pool: &PgPool, merchant: &str, seconds: Option<i32>) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("UPDATE merchants SET ship_by_s = $2, updated_at = now() WHERE id = $1")
            .bind(merchant)
            .bind(seconds)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}
