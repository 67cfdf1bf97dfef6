//! The order pipeline's hot writes in set-based form: each function takes the requests of many
//! jobs and runs them as one transaction of a few statements over arrays (see [`super::batch`]).
//!
//! Each keeps the guarantees of the per-job code it replaced: compare-and-set on status, `ON
//! CONFLICT DO NOTHING` on fixed ids, so running it again with any request changes nothing
//! more; and the same lock order as every other writer (orders by id, then sub-orders by id,
//! then stock by merchant and SKU), so batches never deadlock each other. Requests are
//! answered in the order given, duplicates included.
//!
//! Here: intake (orders stored once, the catalogue read) and the shared pieces (keyed
//! transactions, events); `reserve` (stock), `hand_over` (capture and hand-over to merchants),
//! `deliveries` (webhook attempts and loads).

mod deliveries;
mod hand_over;
mod reserve;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};
use sqlx::PgPool;

pub use self::{
    deliveries::{load_deliveries, record_delivered, Delivered},
    hand_over::{hand_over, hand_over_in, Capture, HandOver, HandedOver},
    reserve::{reserve_in, reserve_sub_orders, settle_held, ReserveReq, Reserved, Settle},
};
use super::orders::{Intake, Stored, Tx};
use crate::domain::order::{commission, content_hash, OrderMessage, OrderPlan};

/// Begins a batch transaction whose lookups use their indexes whatever the statistics say.
///
/// Every statement of a batch finds rows by key over the batch's ids (`= ANY($1)`, a join on
/// `unnest`). Without statistics for a column (a new database; autovacuum off or not yet run)
/// the planner takes each id to match 0.5% of the table, so a batch of fifty ids looks like a
/// quarter of it and it scans the whole table instead; a prepared statement's cached plan
/// then keeps scanning as the table grows, and a batch costs time in proportion to every
/// order ever stored. Batches therefore run with sequential scans priced out
/// (`SET LOCAL enable_seqscan = off`): a lookup by key takes its index, and a statement with
/// no usable index still runs (the setting only prices, it forbids nothing).
///
/// They also run their prepared statements on the generic plan
/// (`plan_cache_mode = force_generic_plan`). Left to choose, PostgreSQL kept planning most of
/// them afresh for every batch, since the array's length changes the estimate: planning was
/// ~5 % of the whole machine's CPU in a burst (perf), half of it here. With sequential scans
/// priced out the generic plan is the same lookup by key, and it does not get worse as the
/// tables grow (a 20,000-order burst ran at the rate of a 4,000-order one). Both settings end
/// with the transaction.
pub async fn begin_keyed(pool: &PgPool) -> Result<Tx<'static>, sqlx::Error> {
    // One round trip: the settings travel with BEGIN (a simple query of three statements).
    pool.begin_with("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan")
        .await
}

/// One row of `order_events`, for [`add_events`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub order_id: Option<i64>,
    pub sub_order_id: Option<i64>,
    pub storefront_order_id: Option<String>,
    pub kind: &'static str,
    pub actor: &'static str,
    pub reason: Option<String>,
    pub data: Value,
}

impl NewEvent {
    /// An event about a whole order.
    pub fn for_order(
        order_id: i64,
        storefront_order_id: &str,
        kind: &'static str,
        actor: &'static str,
        data: Value,
    ) -> Self {
        Self {
            order_id: Some(order_id),
            sub_order_id: None,
            storefront_order_id: Some(storefront_order_id.to_owned()),
            kind,
            actor,
            reason: None,
            data,
        }
    }
}

/// Appends events in one statement, in the order given (so a timeline read by id keeps it).
pub async fn add_events(tx: &mut Tx<'_>, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let order_ids: Vec<Option<i64>> = events.iter().map(|e| e.order_id).collect();
    let sub_ids: Vec<Option<i64>> = events.iter().map(|e| e.sub_order_id).collect();
    let sfs: Vec<Option<String>> = events.iter().map(|e| e.storefront_order_id.clone()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let actors: Vec<&str> = events.iter().map(|e| e.actor).collect();
    let reasons: Vec<Option<String>> = events.iter().map(|e| e.reason.clone()).collect();
    let data: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
    sqlx::query(
        "INSERT INTO order_events (order_id, sub_order_id, storefront_order_id, type, actor, reason, data)
         SELECT o, s, sf, t, a, r, d
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
         WITH ORDINALITY AS e(o, s, sf, t, a, r, d, n) ORDER BY n",
    )
    .bind(&order_ids)
    .bind(&sub_ids)
    .bind(&sfs)
    .bind(&kinds)
    .bind(&actors)
    .bind(&reasons)
    .bind(&data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A validated order to store.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: OrderMessage,
    pub plan: OrderPlan,
    pub enqueued_at_ms: i64,
}

/// Stores validated orders once each, with their sub-orders, lines and events. An order whose
/// storefront id is already stored (or appears earlier in the batch) answers `Duplicate`, or
/// `Conflict` when its content hash differs; an order whose payment already backs another
/// order is not stored (its payment claim, migration 0026, is taken) and answers `PaymentUsed`.
pub async fn insert_orders(pool: &PgPool, reqs: &[NewOrder]) -> Result<Vec<Stored>, sqlx::Error> {
    let mut tx = begin_keyed(pool).await?;
    // The first request of each storefront id is the one inserted.
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in reqs.iter().enumerate() {
        first.entry(r.order.id.as_str()).or_insert(i);
    }
    let mut uniq: Vec<usize> = first.values().copied().collect();
    uniq.sort_unstable();
    let merchants: Vec<&str> = {
        let set: HashSet<&str> = uniq
            .iter()
            .flat_map(|&i| reqs[i].plan.sub_orders.iter().map(|s| s.merchant_id.as_str()))
            .collect();
        set.into_iter().collect()
    };
    let bps: HashMap<String, i32> =
        sqlx::query_as::<_, (String, i32)>("SELECT id, commission_bps FROM merchants WHERE id = ANY($1)")
            .bind(&merchants)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let o = |i: &usize| &reqs[*i].order;
    let sf: Vec<&str> = uniq.iter().map(|i| o(i).id.as_str()).collect();
    let customer: Vec<Value> = uniq
        .iter()
        .map(|i| serde_json::to_value(&o(i).customer).unwrap_or(Value::Null))
        .collect();
    let currency: Vec<&str> = uniq.iter().map(|i| o(i).currency.as_str()).collect();
    let total: Vec<i64> = uniq.iter().map(|&i| reqs[i].plan.total_minor).collect();
    let provider: Vec<&str> = uniq.iter().map(|i| o(i).payment.provider.as_str()).collect();
    let payment: Vec<&str> = uniq.iter().map(|i| o(i).payment.payment_id.as_str()).collect();
    let shipping: Vec<Value> = uniq.iter().map(|i| o(i).shipping_address.clone()).collect();
    let metadata: Vec<Value> = uniq
        .iter()
        .map(|i| match &o(i).metadata {
            Value::Null => json!({}),
            m => m.clone(),
        })
        .collect();
    let placed: Vec<chrono::DateTime<chrono::Utc>> = uniq.iter().map(|i| o(i).placed_at).collect();
    let enqueued: Vec<f64> = uniq.iter().map(|&i| reqs[i].enqueued_at_ms as f64).collect();
    let hashes: Vec<String> = reqs.iter().map(|r| content_hash(&r.order)).collect();
    let hash: Vec<&str> = uniq.iter().map(|&i| hashes[i].as_str()).collect();
    // Each order inserted claims its payment in the same statement (migration 0026); one whose
    // payment another order claimed first (earlier in this batch, or committed) is removed again.
    let inserted: Vec<(i64, String, bool)> = sqlx::query_as(
        "WITH o AS (
             INSERT INTO orders (storefront_order_id, customer, currency, total_minor, status, payment_provider,
                                 payment_id, shipping_address, metadata, placed_at, enqueued_at, content_hash)
             SELECT sf, c, cur, t, 'received', p, pid, sh, m, pl, to_timestamp(e / 1000), h
             FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::jsonb[],
                         $8::jsonb[], $9::timestamptz[], $10::float8[], $11::text[])
                  WITH ORDINALITY AS x(sf, c, cur, t, p, pid, sh, m, pl, e, h, n)
             ORDER BY n
             ON CONFLICT DO NOTHING RETURNING id, storefront_order_id, payment_provider, payment_id),
         c AS (
             INSERT INTO payment_claims (payment_provider, payment_id, order_id)
             SELECT payment_provider, payment_id, id FROM o ORDER BY id
             ON CONFLICT DO NOTHING RETURNING order_id)
         SELECT o.id, o.storefront_order_id, c.order_id IS NOT NULL FROM o LEFT JOIN c ON c.order_id = o.id",
    )
    .bind(&sf)
    .bind(&customer)
    .bind(&currency)
    .bind(&total)
    .bind(&provider)
    .bind(&payment)
    .bind(&shipping)
    .bind(&metadata)
    .bind(&placed)
    .bind(&enqueued)
    .bind(&hash)
    .fetch_all(&mut *tx)
    .await?;
    let unclaimed: Vec<i64> = inserted.iter().filter(|r| !r.2).map(|r| r.0).collect();
    if !unclaimed.is_empty() {
        sqlx::query("DELETE FROM orders WHERE id = ANY($1)")
            .bind(&unclaimed)
            .execute(&mut *tx)
            .await?;
    }
    let created: HashMap<String, i64> = inserted
        .into_iter()
        .filter(|r| r.2)
        .map(|(id, s, _)| (s, id))
        .collect();
    let missing: Vec<&str> = sf.iter().copied().filter(|s| !created.contains_key(*s)).collect();
    // Skipped by the insert: stored before under this id, or (not stored at all) naming a
    // payment that backs another order.
    let existing: HashMap<String, (i64, Option<String>)> = if missing.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (i64, String, Option<String>)>(
            "SELECT id, storefront_order_id, content_hash FROM orders WHERE storefront_order_id = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, s, h)| (s, (id, h)))
        .collect()
    };
    let (un_provider, unstored): (Vec<&str>, Vec<&str>) = reqs
        .iter()
        .map(|r| &r.order)
        .filter(|o| !created.contains_key(&o.id) && !existing.contains_key(&o.id))
        .map(|o| (o.payment.provider.as_str(), o.payment.payment_id.as_str()))
        .unzip();
    let payment_used: HashMap<(String, String), i64> = if unstored.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (i64, String, String)>(
            "SELECT c.order_id, c.payment_provider, c.payment_id FROM payment_claims c
             JOIN unnest($1::text[], $2::text[]) AS u(p, pid) ON c.payment_provider = u.p AND c.payment_id = u.pid",
        )
        .bind(&un_provider)
        .bind(&unstored)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, p, pid)| ((p, pid), id))
        .collect()
    };

    // Sub-orders of the orders created now, in request order.
    let (mut so_order, mut so_merchant, mut so_subtotal, mut so_commission) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut events = Vec::new();
    for &i in &uniq {
        let r = &reqs[i];
        let Some(&order_id) = created.get(&r.order.id) else {
            continue;
        };
        events.push(NewEvent::for_order(
            order_id,
            &r.order.id,
            "order.accepted",
            "souk:intake",
            json!({"total_minor": r.plan.total_minor, "sub_orders": r.plan.sub_orders.len()}),
        ));
        for s in &r.plan.sub_orders {
            let rate = *bps.get(&s.merchant_id).ok_or(sqlx::Error::RowNotFound)?;
            so_order.push(order_id);
            so_merchant.push(s.merchant_id.as_str());
            so_subtotal.push(s.subtotal_minor);
            so_commission.push(commission(s.subtotal_minor, rate));
        }
    }
    let sub_ids: HashMap<(i64, String), i64> = if so_order.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (i64, i64, String)>(
            "INSERT INTO sub_orders (order_id, merchant_id, status, subtotal_minor, commission_minor)
             SELECT o, m, 'pending', s, c FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])
             WITH ORDINALITY AS x(o, m, s, c, n) ORDER BY n
             RETURNING id, order_id, merchant_id",
        )
        .bind(&so_order)
        .bind(&so_merchant)
        .bind(&so_subtotal)
        .bind(&so_commission)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, o, m)| ((o, m), id))
        .collect()
    };
    let (mut l_sub, mut l_sku, mut l_qty, mut l_price) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in &uniq {
        let r = &reqs[i];
        let Some(&order_id) = created.get(&r.order.id) else {
            continue;
        };
        for s in &r.plan.sub_orders {
            let sub = sub_ids[&(order_id, s.merchant_id.clone())];
            for (sku, q, p) in &s.lines {
                l_sub.push(sub);
                l_sku.push(sku.as_str());
                l_qty.push(*q as i32);
                l_price.push(*p);
            }
            events.push(NewEvent {
                order_id: Some(order_id),
                sub_order_id: Some(sub),
                storefront_order_id: Some(r.order.id.clone()),
                kind: "sub_order.created",
                actor: "souk:intake",
                reason: None,
                data: json!({"merchant_id": s.merchant_id, "subtotal_minor": s.subtotal_minor}),
            });
        }
    }
    if !l_sub.is_empty() {
        sqlx::query(
            "INSERT INTO order_lines (sub_order_id, sku, quantity, unit_price_minor)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[])",
        )
        .bind(&l_sub)
        .bind(&l_sku)
        .bind(&l_qty)
        .bind(&l_price)
        .execute(&mut *tx)
        .await?;
    }
    add_events(&mut tx, &events).await?;
    tx.commit().await?;
    reqs.iter()
        .enumerate()
        .map(|(i, r)| {
            let id = r.order.id.as_str();
            let same = |stored: Option<&str>| stored.is_none_or(|h| h == hashes[i]);
            let resent = |order_id, same: bool| Stored {
                order_id,
                intake: if same { Intake::Duplicate } else { Intake::Conflict },
            };
            if let Some(&order_id) = created.get(id) {
                return Ok(if first[id] == i {
                    Stored {
                        order_id,
                        intake: Intake::Created,
                    }
                } else {
                    resent(order_id, same(Some(&hashes[first[id]])))
                });
            }
            if let Some((order_id, h)) = existing.get(id) {
                return Ok(resent(*order_id, same(h.as_deref())));
            }
            let key = (
                r.order.payment.provider.clone(),
                r.order.payment.payment_id.clone(),
            );
            payment_used
                .get(&key)
                .map(|&order_id| Stored {
                    order_id,
                    intake: Intake::PaymentUsed,
                })
                .ok_or(sqlx::Error::RowNotFound)
        })
        .collect()
}

/// The merchants and (merchant, SKU) pairs of an order's lines that exist.
pub type Known = (BTreeSet<String>, BTreeSet<(String, String)>);

/// For each order's (merchant, SKU) pairs, those merchants and pairs that exist: one read for
/// the whole batch.
pub async fn catalogue(pool: &PgPool, reqs: &[Vec<(String, String)>]) -> Result<Vec<Known>, sqlx::Error> {
    let mut pairs: Vec<&(String, String)> = reqs.iter().flatten().collect();
    pairs.sort();
    pairs.dedup();
    let pm: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let ps: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let mut merchants = pm.clone();
    merchants.dedup();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT 'm', id, '' FROM merchants WHERE id = ANY($1)
         UNION ALL
         SELECT 's', s.merchant_id, s.sku FROM stock s
         JOIN unnest($2::text[], $3::text[]) AS p(m, sku) ON s.merchant_id = p.m AND s.sku = p.sku",
    )
    .bind(&merchants)
    .bind(&pm)
    .bind(&ps)
    .fetch_all(pool)
    .await?;
    let mut known_m = HashSet::new();
    let mut known_p = HashSet::new();
    for (kind, a, b) in rows {
        if kind == "m" {
            known_m.insert(a);
        } else {
            known_p.insert((a, b));
        }
    }
    Ok(reqs
        .iter()
        .map(|lines| {
            let m = lines
                .iter()
                .filter(|p| known_m.contains(&p.0))
                .map(|p| p.0.clone())
                .collect();
            let p = lines.iter().filter(|p| known_p.contains(*p)).cloned().collect();
            (m, p)
        })
        .collect())
}
