//! SQL of the order pipeline: intake, payment state, reservations, decisions, events.
//!
//! Every state change is a compare-and-set (`UPDATE … WHERE status = …`) inside one
//! transaction that also appends to `order_events`, so a handler run twice changes nothing the
//! second time. Rows are locked in a fixed order (order, then sub-order, then stock by SKU) so
//! concurrent transactions never deadlock.

use std::collections::HashMap;

use serde_json::{json, Value};
use sqlx::{FromRow, PgPool, Postgres, Row, Transaction};

use super::follow_ups::mark_adjust_due;

pub type Tx<'a> = Transaction<'a, Postgres>;

/// Appends an event to an order's history (and to the outcome stream's outbox).
#[allow(clippy::too_many_arguments)]
pub async fn add_event(
    tx: &mut Tx<'_>,
    order_id: Option<i64>,
    sub_order_id: Option<i64>,
    storefront_order_id: Option<&str>,
    kind: &str,
    actor: &str,
    reason: Option<&str>,
    data: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_events (order_id, sub_order_id, storefront_order_id, type, actor, reason, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(order_id)
    .bind(sub_order_id)
    .bind(storefront_order_id)
    .bind(kind)
    .bind(actor)
    .bind(reason)
    .bind(data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a refused storefront message once per stream entry, with an outcome event.
pub async fn record_rejection(
    pool: &PgPool,
    entry_id: &str,
    storefront_order_id: Option<&str>,
    code: &str,
    reason: &str,
    raw: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let excerpt: String = raw.chars().take(1000).collect();
    let inserted = sqlx::query(
        "INSERT INTO rejected_messages (entry_id, storefront_order_id, code, reason, payload_excerpt)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (entry_id) DO NOTHING",
    )
    .bind(entry_id)
    .bind(storefront_order_id)
    .bind(code)
    .bind(reason)
    .bind(&excerpt)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        add_event(
            &mut tx,
            None,
            None,
            storefront_order_id,
            "message.rejected",
            "souk:intake",
            Some(reason),
            json!({"code": code, "entry_id": entry_id}),
        )
        .await?;
    }
    tx.commit().await
}

/// The result of storing an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The order stored now or before under this storefront id; for
    /// [`Intake::PaymentUsed`], the order the payment backs.
    pub order_id: i64,
    pub intake: Intake,
}

/// What intake made of an order message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Stored now.
    Created,
    /// Stored before with the same content (a resend): nothing more happens.
    Duplicate,
    /// Stored before with different content (`order_conflict`).
    Conflict,
    /// Not stored: its payment already backs another order (`payment_already_used`).
    PaymentUsed,
}

/// An order as the payment steps need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub storefront_order_id: String,
    pub status: String,
    pub payment_id: String,
    pub currency: String,
    pub total_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub enqueued_at: chrono::DateTime<chrono::Utc>,
    /// Set while the charge must still be brought in line with what ships (migration 0014).
    pub adjust_due_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Orders by id, in one read: an answer per id, in the order given.
pub async fn orders_by_id(pool: &PgPool, ids: &[i64]) -> Result<Vec<Option<OrderRow>>, sqlx::Error> {
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, storefront_order_id, status, payment_id, currency, total_minor, captured_minor, refunded_minor, enqueued_at,
                adjust_due_at
         FROM orders WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let by_id: HashMap<i64, OrderRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    Ok(ids.iter().map(|id| by_id.get(id).cloned()).collect())
}

pub async fn order_id_by_storefront_id(pool: &PgPool, sf: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM orders WHERE storefront_order_id = $1")
        .bind(sf)
        .fetch_optional(pool)
        .await
}

/// Moves an order from `from` to `to` (compare-and-set) with an event; false if it was not in `from`.
#[allow(clippy::too_many_arguments)]
pub async fn transition_order(
    pool: &PgPool,
    id: i64,
    from: &[&str],
    to: &str,
    event: &str,
    actor: &str,
    reason: Option<&str>,
    data: Value,
) -> Result<bool, sqlx::Error> {
    // One statement: the compare-and-set and its event commit together.
    let moved: Option<i32> = sqlx::query_scalar(
        "WITH u AS (
            UPDATE orders SET status = $3, status_reason = $4, updated_at = now()
            WHERE id = $1 AND status = ANY($2) RETURNING id, storefront_order_id)
         INSERT INTO order_events (order_id, storefront_order_id, type, actor, reason, data)
         SELECT id, storefront_order_id, $5, $6, $4, $7 FROM u RETURNING 1",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(reason)
    .bind(event)
    .bind(actor)
    .bind(data)
    .fetch_optional(pool)
    .await?;
    Ok(moved.is_some())
}

/// Records the provider's payment status on the order.
pub async fn set_payment_status(pool: &PgPool, id: i64, status: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET payment_status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(pool)
        .await?;
    Ok(())
}

/// Outcome of a reservation attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    /// All lines reserved together.
    Reserved,
    /// Not enough stock: the short SKUs with (wanted, available).
    OutOfStock(Vec<(String, i64, i64)>),
    /// The sub-order was no longer pending (already decided, cancelled): nothing done.
    NotPending,
}

/// Releases a sub-order's held reservations (stock becomes available again).
pub async fn release_reservations(tx: &mut Tx<'_>, sub_order_id: i64) -> Result<u64, sqlx::Error> {
    crate::store::pipeline::settle_held(tx, &[sub_order_id], crate::store::pipeline::Settle::Release).await
}

/// Turns a sub-order's held reservations into a sale: stock leaves on hand.
pub async fn confirm_reservations(tx: &mut Tx<'_>, sub_order_id: i64) -> Result<u64, sqlx::Error> {
    crate::store::pipeline::settle_held(tx, &[sub_order_id], crate::store::pipeline::Settle::Confirm).await
}

/// An order with what should be charged: (the sub-orders that will ship, may still ship or
/// were delivered and completed; the goods returned and received back, whose refund is due).
/// The charge is the first less the second. None while any sub-order still waits for its stock
/// decision.
pub type WithTarget = (OrderRow, Option<Target>);

/// What an order should be charged once every sub-order has its stock decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The subtotals of the sub-orders that ship (or may still ship).
    pub shipping: i64,
    /// Refunds owed for returns received.
    pub returned: i64,
    /// How many sub-orders ship or may still ship: 0 ends the order, whatever the amounts (a
    /// free order has `shipping` 0 and still ships).
    pub live: i64,
}

/// Orders with what should be charged ([`WithTarget`]), in one read: an answer per id, in the
/// order given.
pub async fn orders_with_targets(pool: &PgPool, ids: &[i64]) -> Result<Vec<Option<WithTarget>>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.id, o.storefront_order_id, o.status, o.payment_id, o.currency, o.total_minor, o.captured_minor,
                o.refunded_minor, o.enqueued_at, o.adjust_due_at, t.pending, t.shipping, t.live,
                (SELECT coalesce(sum(refund_minor), 0) FROM returns
                 WHERE order_id = o.id AND status IN ('received', 'refunded'))::bigint AS returned
         FROM orders o,
              LATERAL (SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                              coalesce(sum(subtotal_minor) FILTER (WHERE status IN ('reserved', 'awaiting_acceptance', 'accepted', 'completed')), 0)::bigint AS shipping,
                              count(*) FILTER (WHERE status IN ('reserved', 'awaiting_acceptance', 'accepted', 'completed')) AS live
                       FROM sub_orders WHERE order_id = o.id) t
         WHERE o.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut by_id: HashMap<i64, WithTarget> = HashMap::new();
    for r in rows {
        let order = OrderRow::from_row(&r)?;
        let pending: i64 = r.try_get("pending")?;
        let target = if pending == 0 {
            Some(Target {
                shipping: r.try_get("shipping")?,
                returned: r.try_get("returned")?,
                live: r.try_get("live")?,
            })
        } else {
            None
        };
        by_id.insert(order.id, (order, target));
    }
    Ok(ids.iter().map(|id| by_id.get(id).cloned()).collect())
}

/// Whether an order is backed by this payment.
pub async fn payment_in_use(pool: &PgPool, provider: &str, payment_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM payment_claims WHERE payment_provider = $1 AND payment_id = $2)",
    )
    .bind(provider)
    .bind(payment_id)
    .fetch_one(pool)
    .await
}

/// The sub-orders of an order with how each ended: (status, actor of its rejection if it was
/// rejected, else ""). For the reason of an order in which nothing ships.
pub async fn ended_sub_orders(pool: &PgPool, order_id: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.status,
                coalesce((SELECT e.actor FROM order_events e
                          WHERE e.order_id = s.order_id AND e.sub_order_id = s.id AND e.type = 'sub_order.rejected'
                          ORDER BY e.id DESC LIMIT 1), '')
         FROM sub_orders s WHERE s.order_id = $1 ORDER BY s.id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// A payment call (or a sync with the provider's state) to record with the order's resulting
/// amounts and status.
#[derive(Debug, Clone)]
pub struct PaymentRecord<'a> {
    pub order_id: i64,
    /// `capture`, `cancel`, `refund` or `sync`.
    pub kind: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub amount_minor: Option<i64>,
    pub outcome: &'a str,
    /// The provider's totals after the call.
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub payment_status: &'a str,
    /// The outcome event, when the call changed something the storefront should hear of.
    pub event: Option<(&'a str, Value)>,
    /// The payment lock's fencing token of the writer (migration 0016).
    pub fence: i64,
}

/// Records a payment call and the order's resulting amounts and status, unless a newer
/// payment-lock holder has written the order since (`payment_fence` above `r.fence`): then
/// nothing is written and the answer is false.
pub async fn record_payment(pool: &PgPool, r: &PaymentRecord<'_>) -> Result<bool, sqlx::Error> {
    let (event, data) = match &r.event {
        Some((k, d)) => (Some(*k), d.clone()),
        None => (None, Value::Null),
    };
    // One statement: the fenced update, then the operation and the event only if it applied.
    let applied: i64 = sqlx::query_scalar(
        "WITH u AS (
            UPDATE orders SET captured_minor = $6, refunded_minor = $7, payment_status = $8,
                              payment_fence = $11, updated_at = now()
            WHERE id = $1 AND payment_fence <= $11 RETURNING id, storefront_order_id),
         op AS (
            INSERT INTO payment_operations (order_id, kind, idempotency_key, amount_minor, outcome)
            SELECT id, $2, $3, $4, $5 FROM u),
         ev AS (
            INSERT INTO order_events (order_id, storefront_order_id, type, actor, data)
            SELECT id, storefront_order_id, $9, 'souk:payment', $10 FROM u WHERE $9::text IS NOT NULL)
         SELECT count(*) FROM u",
    )
    .bind(r.order_id)
    .bind(r.kind)
    .bind(r.idempotency_key)
    .bind(r.amount_minor)
    .bind(r.outcome)
    .bind(r.captured_minor)
    .bind(r.refunded_minor)
    .bind(r.payment_status)
    .bind(event)
    .bind(data)
    .bind(r.fence)
    .fetch_one(pool)
    .await?;
    Ok(applied == 1)
}

/// A sub-order with what notifying and deciding need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubOrderRow {
    pub id: i64,
    pub order_id: i64,
    pub storefront_order_id: String,
    pub merchant_id: String,
    pub status: String,
    pub subtotal_minor: i64,
    pub commission_minor: i64,
    pub accept_by: Option<chrono::DateTime<chrono::Utc>>,
    pub acceptance_mode: String,
    pub acceptance_default: String,
    pub acceptance_deadline_s: i32,
}

pub async fn sub_order(pool: &PgPool, id: i64) -> Result<Option<SubOrderRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.order_id, o.storefront_order_id, s.merchant_id, s.status, s.subtotal_minor, s.commission_minor,
                s.accept_by, m.acceptance_mode, m.acceptance_default, m.acceptance_deadline_s
         FROM sub_orders s JOIN orders o ON o.id = s.order_id JOIN merchants m ON m.id = s.merchant_id
         WHERE s.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn sub_order_by_storefront(
    pool: &PgPool,
    sf: &str,
    merchant: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.id FROM sub_orders s JOIN orders o ON o.id = s.order_id
         WHERE o.storefront_order_id = $1 AND s.merchant_id = $2",
    )
    .bind(sf)
    .bind(merchant)
    .fetch_optional(pool)
    .await
}

/// Creates a webhook delivery unless one with this id exists.
pub async fn insert_delivery(
    tx: &mut Tx<'_>,
    id: &str,
    merchant: &str,
    order_id: Option<i64>,
    sub_order_id: Option<i64>,
    event_type: &str,
    payload: &Value,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO webhook_deliveries (id, merchant_id, order_id, sub_order_id, event_type, payload)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(merchant)
    .bind(order_id)
    .bind(sub_order_id)
    .bind(event_type)
    .bind(payload)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Applies a merchant's decision (or the default at the deadline) to a sub-order awaiting it.
/// Accepting confirms the reservations; rejecting releases them. False if it was not awaiting.
pub async fn decide(
    pool: &PgPool,
    sub_order_id: i64,
    accept: bool,
    actor: &str,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let to = if accept { "accepted" } else { "rejected" };
    let row = sqlx::query(
        "UPDATE sub_orders s SET status = $2, status_reason = $3, updated_at = now(),
                accepted_at = CASE WHEN $2 = 'accepted' THEN now() END
         FROM orders o WHERE s.id = $1 AND s.status = 'awaiting_acceptance' AND o.id = s.order_id
         RETURNING s.order_id, s.merchant_id, o.storefront_order_id",
    )
    .bind(sub_order_id)
    .bind(to)
    .bind(reason)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        return Ok(false);
    };
    let order_id: i64 = row.get(0);
    let merchant: String = row.get(1);
    let sf: String = row.get(2);
    if accept {
        confirm_reservations(&mut tx, sub_order_id).await?;
    } else {
        release_reservations(&mut tx, sub_order_id).await?;
        // That share no longer ships: the charge follows, even if this process dies now.
        mark_adjust_due(&mut tx, order_id).await?;
    }
    let event = if accept {
        "sub_order.accepted"
    } else {
        "sub_order.rejected"
    };
    add_event(
        &mut tx,
        Some(order_id),
        Some(sub_order_id),
        Some(&sf),
        event,
        actor,
        reason,
        json!({"merchant_id": merchant}),
    )
    .await?;
    if actor.starts_with("souk:") {
        // Decided on the merchant's behalf (its default at the deadline): it is told, in the
        // transaction of the decision.
        insert_sub_order_delivery(
            &mut tx,
            &merchant,
            order_id,
            &sf,
            sub_order_id,
            event,
            json!({"reason": reason, "decided_by": actor}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Cancels every live sub-order of an order, releasing stock, and the order itself. In the
/// same transaction: a `sub_order.cancelled` webhook for each merchant that had been told of its
/// sub-order, and the order's charge marked due for adjustment. Returns the sub-orders cancelled
/// now (with their merchants); a rerun cancels nothing more and returns none, and what is left to
/// push is read from the state ([`super::follow_ups::outstanding`]).
pub async fn cancel_order(
    pool: &PgPool,
    order_id: i64,
    actor: &str,
    code: &str,
    reason: &str,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let sf: Option<(String, String)> =
        sqlx::query_as("SELECT storefront_order_id, status FROM orders WHERE id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((sf, status)) = sf else {
        tx.rollback().await?;
        return Ok(Vec::new());
    };
    let subs: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, merchant_id, status FROM sub_orders WHERE order_id = $1 AND status IN ('pending', 'reserved', 'awaiting_acceptance', 'accepted')
         ORDER BY id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut cancelled = Vec::new();
    for (id, merchant, st) in subs {
        release_reservations(&mut tx, id).await?;
        if st == "accepted" {
            // Stock already left on hand for an accepted sub-order: put it back.
            sqlx::query(
                "WITH r AS (UPDATE reservations SET status = 'released', settled_at = now()
                            WHERE sub_order_id = $1 AND status = 'confirmed' RETURNING merchant_id, sku, quantity)
                 UPDATE stock s SET on_hand = s.on_hand + r.quantity, updated_at = now()
                 FROM r WHERE s.merchant_id = r.merchant_id AND s.sku = r.sku",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE sub_orders SET status = 'cancelled', status_reason = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        add_event(
            &mut tx,
            Some(order_id),
            Some(id),
            Some(&sf),
            "sub_order.cancelled",
            actor,
            Some(reason),
            json!({"merchant_id": merchant, "code": code}),
        )
        .await?;
        if st != "pending" {
            // The merchant was told of this sub-order (or is being told): it hears of the
            // cancellation too. Written here, so a crash after the commit cannot skip it.
            insert_sub_order_delivery(
                &mut tx,
                &merchant,
                order_id,
                &sf,
                id,
                "sub_order.cancelled",
                json!({"reason": reason, "code": code}),
            )
            .await?;
            cancelled.push((id, merchant));
        }
    }
    if status != "cancelled" || !cancelled.is_empty() {
        mark_adjust_due(&mut tx, order_id).await?;
    }
    if status != "cancelled" {
        sqlx::query(
            "UPDATE orders SET status = 'cancelled', status_reason = $2, updated_at = now() WHERE id = $1",
        )
        .bind(order_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        add_event(
            &mut tx,
            Some(order_id),
            None,
            Some(&sf),
            "order.cancelled",
            actor,
            Some(reason),
            json!({"code": code}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(cancelled)
}

/// Releases held reservations past their expiry (sub-orders waiting too long), rejecting those
/// sub-orders and marking their orders' charge due for adjustment; returns the orders touched.
pub async fn release_expired(pool: &PgPool, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    let subs: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT sub_order_id FROM reservations WHERE status = 'held' AND expires_at < now() LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut done = Vec::new();
    for id in subs {
        let mut tx = pool.begin().await?;
        let row: Option<(i64, String)> = sqlx::query_as(
            "UPDATE sub_orders s SET status = 'rejected', status_reason = 'reservation expired', updated_at = now()
             FROM orders o WHERE s.id = $1 AND s.status IN ('reserved', 'awaiting_acceptance') AND o.id = s.order_id
             RETURNING s.order_id, o.storefront_order_id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        release_reservations(&mut tx, id).await?;
        if let Some((order_id, sf)) = &row {
            mark_adjust_due(&mut tx, *order_id).await?;
            add_event(
                &mut tx,
                Some(*order_id),
                Some(id),
                Some(sf),
                "sub_order.rejected",
                "souk:sweeper",
                Some("reservation expired"),
                json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        if let Some((order_id, _)) = row {
            done.push(order_id);
        }
    }
    done.sort_unstable();
    done.dedup();
    Ok(done)
}

/// Orders still waiting for payment longer than `timeout_s`.
pub async fn stale_unpaid(pool: &PgPool, timeout_s: u64, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM orders WHERE status = 'received' AND enqueued_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
    )
    .bind(timeout_s as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks a storefront command as applied (exactly once per job id); false if it was before.
pub async fn mark_applied(tx: &mut Tx<'_>, job_id: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("INSERT INTO applied_commands (job_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(job_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Creates (once) the webhook delivery of an event about a sub-order, inside the transaction of
/// the state change it reports. The payload is the published shape: the order's storefront id,
/// the sub-order, the merchant and the event's `details`.
pub async fn insert_sub_order_delivery(
    tx: &mut Tx<'_>,
    merchant: &str,
    order_id: i64,
    storefront_order_id: &str,
    sub_order_id: i64,
    event_type: &str,
    details: Value,
) -> Result<bool, sqlx::Error> {
    let id = crate::domain::ids::sub_order_webhook_id(sub_order_id, event_type);
    let data = json!({"storefront_order_id": storefront_order_id, "sub_order_id": sub_order_id,
                      "merchant_id": merchant, "details": details});
    insert_delivery(
        tx,
        &id,
        merchant,
        Some(order_id),
        Some(sub_order_id),
        event_type,
        &data,
    )
    .await
}

/// A sub-order's status.
pub async fn sub_order_status(pool: &PgPool, id: i64) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM sub_orders WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
}
