//! Reservations in set-based form: sub-orders reserved all lines or none, never beyond what is
//! on hand less what is held, and held reservations confirmed or released.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};
use sqlx::PgPool;

use super::{add_events, begin_keyed, NewEvent};
use crate::store::orders::{Reserve, Tx};

/// A reservation request.
#[derive(Debug, Clone)]
pub enum ReserveReq {
    /// One sub-order (re-driven by an operator).
    Sub(i64),
    /// Every pending sub-order of an order. With `authorised` (the provider's payment status
    /// and the event's data) the same transaction first moves the order `received` →
    /// `authorised` with an `order.paid` event, so a paid order costs no commit of its own.
    Order {
        order_id: i64,
        authorised: Option<(String, Value)>,
    },
}

/// What a reservation request answers: its order, the outcome of each sub-order it covered
/// (one for [`ReserveReq::Sub`]; the pending ones, by id, for an order), and whether every
/// sub-order of that order now has its stock decision.
#[derive(Debug)]
pub struct Reserved {
    pub order_id: i64,
    pub outcomes: Vec<(i64, Reserve)>,
    pub all_decided: bool,
}

/// Reserves sub-orders, each all its lines or none, and never beyond what is on hand less what
/// is reserved. Sub-orders are decided in the order given; one that is no longer `pending`
/// (decided before, or earlier in this batch) answers `NotPending`. A sub-order that does not
/// exist fails the batch (`RowNotFound`; the batcher then runs each request alone).
pub async fn reserve_sub_orders(
    pool: &PgPool,
    reqs: &[ReserveReq],
    ttl_s: u64,
) -> Result<Vec<Reserved>, sqlx::Error> {
    let mut tx = begin_keyed(pool).await?;
    let answers = reserve_in(&mut tx, reqs, ttl_s).await?;
    tx.commit().await?;
    Ok(answers)
}

/// [`reserve_sub_orders`] inside the caller's transaction (begun with [`begin_keyed`]).
pub async fn reserve_in(
    tx: &mut Tx<'_>,
    reqs: &[ReserveReq],
    ttl_s: u64,
) -> Result<Vec<Reserved>, sqlx::Error> {
    let asked_subs: Vec<i64> = reqs
        .iter()
        .filter_map(|r| match r {
            ReserveReq::Sub(s) => Some(*s),
            ReserveReq::Order { .. } => None,
        })
        .collect();
    let asked_orders: Vec<i64> = reqs
        .iter()
        .filter_map(|r| match r {
            ReserveReq::Order { order_id, .. } => Some(*order_id),
            ReserveReq::Sub(_) => None,
        })
        .collect();
    // The sub-orders asked for and the pending ones of the orders asked for (read before the
    // locks; each is checked for `pending` again once locked).
    let mut owners: HashMap<i64, i64> = HashMap::new();
    let mut of_order: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (id, order_id, pending) in sqlx::query_as::<_, (i64, i64, bool)>(
        "SELECT id, order_id, status = 'pending' FROM sub_orders
         WHERE id = ANY($1) OR (order_id = ANY($2) AND status = 'pending') ORDER BY id",
    )
    .bind(&asked_subs)
    .bind(&asked_orders)
    .fetch_all(&mut **tx)
    .await?
    {
        owners.insert(id, order_id);
        if pending {
            of_order.entry(order_id).or_default().push(id);
        }
    }
    if asked_subs.iter().any(|s| !owners.contains_key(s)) {
        return Err(sqlx::Error::RowNotFound);
    }
    let mut order_ids: Vec<i64> = owners
        .values()
        .copied()
        .chain(asked_orders.iter().copied())
        .collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    // Lock order: the orders (so two sibling sub-orders' "all decided" checks see each other),
    // then the sub-orders, then the stock rows, each sorted.
    let locked: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, storefront_order_id, status FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&order_ids)
    .fetch_all(&mut **tx)
    .await?;
    let sf: HashMap<i64, String> = locked.iter().map(|(id, sf, _)| (*id, sf.clone())).collect();
    // Paid orders still `received` are authorised, each once.
    let received: HashSet<i64> = locked
        .iter()
        .filter(|(_, _, st)| st == "received")
        .map(|(id, _, _)| *id)
        .collect();
    let mut authorised: HashSet<i64> = HashSet::new();
    let (mut a_id, mut a_status) = (Vec::new(), Vec::new());
    let mut events = Vec::new();
    for r in reqs {
        if let ReserveReq::Order {
            order_id,
            authorised: Some((status, data)),
        } = r
        {
            if received.contains(order_id) && authorised.insert(*order_id) {
                a_id.push(*order_id);
                a_status.push(status.clone());
                events.push(NewEvent::for_order(
                    *order_id,
                    &sf[order_id],
                    "order.paid",
                    "souk:payment",
                    data.clone(),
                ));
            }
        }
    }
    if !a_id.is_empty() {
        sqlx::query(
            "UPDATE orders o SET status = 'authorised', status_reason = NULL, payment_status = u.ps, updated_at = now()
             FROM unnest($1::bigint[], $2::text[]) AS u(id, ps) WHERE o.id = u.id AND o.status = 'received'",
        )
        .bind(&a_id)
        .bind(&a_status)
        .execute(&mut **tx)
        .await?;
    }
    // Every sub-order to decide, in the order asked.
    let subs: Vec<i64> = reqs
        .iter()
        .flat_map(|r| match r {
            ReserveReq::Sub(s) => vec![*s],
            ReserveReq::Order { order_id, .. } => of_order.get(order_id).cloned().unwrap_or_default(),
        })
        .collect();
    let subs = subs.as_slice();
    let state: HashMap<i64, (String, String)> = sqlx::query_as::<_, (i64, String, String)>(
        "SELECT id, merchant_id, status FROM sub_orders WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(subs)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(id, m, s)| (id, (m, s)))
    .collect();
    let pending: Vec<i64> = state
        .iter()
        .filter(|(_, (_, s))| s == "pending")
        .map(|(id, _)| *id)
        .collect();
    let mut lines: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for (sub, sku, q) in sqlx::query_as::<_, (i64, String, i32)>(
        "SELECT sub_order_id, sku, quantity FROM order_lines WHERE sub_order_id = ANY($1) ORDER BY sub_order_id, sku",
    )
    .bind(&pending)
    .fetch_all(&mut **tx)
    .await?
    {
        lines.entry(sub).or_default().push((sku, q as i64));
    }
    let mut pairs: Vec<(String, String)> = lines
        .iter()
        .flat_map(|(sub, ls)| ls.iter().map(|(sku, _)| (state[sub].0.clone(), sku.clone())))
        .collect();
    pairs.sort();
    pairs.dedup();
    let (pm, ps): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
    let mut available: HashMap<(String, String), i64> = sqlx::query_as::<_, (String, String, i32, i32)>(
        "SELECT s.merchant_id, s.sku, s.on_hand, s.reserved FROM stock s
         JOIN unnest($1::text[], $2::text[]) AS p(m, sku) ON s.merchant_id = p.m AND s.sku = p.sku
         ORDER BY s.merchant_id, s.sku FOR UPDATE OF s",
    )
    .bind(&pm)
    .bind(&ps)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(m, sku, on_hand, reserved)| ((m, sku), (on_hand - reserved) as i64))
    .collect();

    let mut decided: HashSet<i64> = HashSet::new();
    let mut outcomes = Vec::with_capacity(subs.len());
    let mut taken: BTreeMap<(String, String), i64> = BTreeMap::new();
    let (mut r_sub, mut r_merchant, mut r_sku, mut r_qty) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut u_id, mut u_status, mut u_reason) = (Vec::new(), Vec::new(), Vec::new());
    for &sub in subs {
        let (merchant, status) = &state[&sub];
        if status != "pending" || !decided.insert(sub) {
            outcomes.push(Reserve::NotPending);
            continue;
        }
        let want = lines.get(&sub).map(Vec::as_slice).unwrap_or_default();
        let short: Vec<(String, i64, i64)> = want
            .iter()
            .filter_map(|(sku, q)| {
                let a = available
                    .get(&(merchant.clone(), sku.clone()))
                    .copied()
                    .unwrap_or(0);
                (a < *q).then(|| (sku.clone(), *q, a))
            })
            .collect();
        let order_id = owners[&sub];
        if short.is_empty() {
            for (sku, q) in want {
                let key = (merchant.clone(), sku.clone());
                *available.entry(key.clone()).or_default() -= q;
                *taken.entry(key).or_default() += q;
                r_sub.push(sub);
                r_merchant.push(merchant.clone());
                r_sku.push(sku.clone());
                r_qty.push(*q as i32);
            }
            u_id.push(sub);
            u_status.push("reserved");
            u_reason.push(None);
            events.push(NewEvent {
                order_id: Some(order_id),
                sub_order_id: Some(sub),
                storefront_order_id: Some(sf[&order_id].clone()),
                kind: "sub_order.reserved",
                actor: "souk:stock",
                reason: None,
                data: json!({"merchant_id": merchant}),
            });
            outcomes.push(Reserve::Reserved);
        } else {
            let reason = short
                .iter()
                .map(|(s, w, a)| format!("{s}: wanted {w}, available {a}"))
                .collect::<Vec<_>>()
                .join("; ");
            u_id.push(sub);
            u_status.push("out_of_stock");
            u_reason.push(Some(reason.clone()));
            events.push(NewEvent {
                order_id: Some(order_id),
                sub_order_id: Some(sub),
                storefront_order_id: Some(sf[&order_id].clone()),
                kind: "sub_order.out_of_stock",
                actor: "souk:stock",
                reason: Some(reason),
                data: json!({"merchant_id": merchant}),
            });
            outcomes.push(Reserve::OutOfStock(short));
        }
    }
    if !taken.is_empty() {
        let (keys, qs): (Vec<(String, String)>, Vec<i64>) = taken.into_iter().unzip();
        let (tm, ts): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        sqlx::query(
            "UPDATE stock s SET reserved = s.reserved + l.q, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS l(m, sku, q) WHERE s.merchant_id = l.m AND s.sku = l.sku",
        )
        .bind(&tm)
        .bind(&ts)
        .bind(&qs)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO reservations (sub_order_id, merchant_id, sku, quantity, status, expires_at)
             SELECT s, m, sku, q, 'held', now() + make_interval(secs => $5)
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[]) AS l(s, m, sku, q)",
        )
        .bind(&r_sub)
        .bind(&r_merchant)
        .bind(&r_sku)
        .bind(&r_qty)
        .bind(ttl_s as f64)
        .execute(&mut **tx)
        .await?;
    }
    if !u_id.is_empty() {
        sqlx::query(
            "UPDATE sub_orders s SET status = u.st, status_reason = u.why, updated_at = now()
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, st, why) WHERE s.id = u.id",
        )
        .bind(&u_id)
        .bind(&u_status)
        .bind(&u_reason)
        .execute(&mut **tx)
        .await?;
    }
    add_events(tx, &events).await?;
    let undecided: HashSet<i64> = sqlx::query_scalar(
        "SELECT DISTINCT order_id FROM sub_orders WHERE order_id = ANY($1) AND status = 'pending'",
    )
    .bind(&order_ids)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    // Outcomes back to their requests, in the order `subs` was built.
    let mut outcomes = subs.iter().copied().zip(outcomes);
    Ok(reqs
        .iter()
        .map(|r| {
            let (order_id, n) = match r {
                ReserveReq::Sub(s) => (owners[s], 1),
                ReserveReq::Order { order_id, .. } => (*order_id, of_order.get(order_id).map_or(0, Vec::len)),
            };
            Reserved {
                order_id,
                outcomes: outcomes.by_ref().take(n).collect(),
                all_decided: !undecided.contains(&order_id),
            }
        })
        .collect())
}

/// What becomes of held reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// A sale: the units leave both reserved and on hand.
    Confirm,
    /// Not needed after all: the units are available again.
    Release,
}

/// Confirms or releases the held reservations of `subs` (sub-orders locked by the caller);
/// answers how many reservations it settled. Meant to run last in its transaction, just before
/// the commit: the stock rows are the ones other batches (reservations) wait for, so they are
/// held as briefly as possible, and locked in the same order as every other writer (sorted)
/// before they change.
///
/// The reservations are found by sub-order (a materialized CTE) and only then checked for
/// `held`: with a `status = 'held'` condition next to the sub-order one, the planner, without
/// fresh statistics (no autovacuum), picks the partial index of held reservations and walks
/// every reservation ever held (2 ms per call after a few thousand orders, growing with the
/// history).
pub async fn settle_held(tx: &mut Tx<'_>, subs: &[i64], how: Settle) -> Result<u64, sqlx::Error> {
    let (to, sold) = match how {
        Settle::Confirm => ("confirmed", true),
        Settle::Release => ("released", false),
    };
    // One statement: the sub-orders' reservations locked by id, the held ones settled, and
    // their stock rows locked in (merchant, SKU) order (the lock is taken on the sorted rows,
    // as they come out of the sort) and changed by the units settled.
    let settled: i64 = sqlx::query_scalar(
        "WITH r AS MATERIALIZED (SELECT id, status FROM reservations WHERE sub_order_id = ANY($1) ORDER BY id FOR UPDATE),
              h AS (UPDATE reservations x SET status = $2, settled_at = now() FROM r
                    WHERE x.id = r.id AND r.status = 'held'
                    RETURNING x.merchant_id, x.sku, x.quantity),
              t AS (SELECT merchant_id AS m, sku, sum(quantity)::bigint AS q FROM h GROUP BY merchant_id, sku),
              l AS (SELECT s.merchant_id, s.sku FROM stock s JOIN t ON s.merchant_id = t.m AND s.sku = t.sku
                    ORDER BY s.merchant_id, s.sku FOR UPDATE OF s),
              u AS (UPDATE stock s SET reserved = s.reserved - t.q,
                           on_hand = s.on_hand - CASE WHEN $3 THEN t.q ELSE 0 END, updated_at = now()
                    FROM l JOIN t ON l.merchant_id = t.m AND l.sku = t.sku
                    WHERE s.merchant_id = l.merchant_id AND s.sku = l.sku)
         SELECT count(*) FROM h",
    )
    .bind(subs)
    .bind(to)
    .bind(sold)
    .fetch_one(&mut **tx)
    .await?;
    Ok(settled as u64)
}
