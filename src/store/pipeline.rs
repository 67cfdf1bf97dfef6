//! The order pipeline's hot writes in set-based form: each function takes the requests of many
//! jobs and runs them as one transaction of a few statements over arrays (see [`super::batch`]).
//!
//! Each keeps the guarantees of the per-job code it replaced: compare-and-set on status, `ON
//! CONFLICT DO NOTHING` on fixed ids, so running it again with any request changes nothing
//! more; and the same lock order as every other writer (orders by id, then sub-orders by id,
//! then stock by merchant and SKU), so batches never deadlock each other. Requests are
//! answered in the order given, duplicates included.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};
use sqlx::PgPool;

use super::orders::{Reserve, Stored, Tx};
use crate::domain::order::{commission, OrderMessage, OrderPlan};

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
/// storefront id is already stored (or appears earlier in the batch) answers `created: false`.
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
    let inserted: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO orders (storefront_order_id, customer, currency, total_minor, status, payment_provider,
                             payment_id, shipping_address, metadata, placed_at, enqueued_at)
         SELECT sf, c, cur, t, 'received', p, pid, sh, m, pl, to_timestamp(e / 1000)
         FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::jsonb[],
                     $8::jsonb[], $9::timestamptz[], $10::float8[]) WITH ORDINALITY AS x(sf, c, cur, t, p, pid, sh, m, pl, e, n)
         ORDER BY n
         ON CONFLICT (storefront_order_id) DO NOTHING RETURNING id, storefront_order_id",
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
    .fetch_all(&mut *tx)
    .await?;
    let created: HashMap<String, i64> = inserted.into_iter().map(|(id, s)| (s, id)).collect();
    let missing: Vec<&str> = sf.iter().copied().filter(|s| !created.contains_key(*s)).collect();
    let existing: HashMap<String, i64> = if missing.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT id, storefront_order_id FROM orders WHERE storefront_order_id = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, s)| (s, id))
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
            match created.get(id) {
                Some(&order_id) if first[id] == i => Ok(Stored {
                    order_id,
                    created: true,
                }),
                Some(&order_id) => Ok(Stored {
                    order_id,
                    created: false,
                }),
                None => existing
                    .get(id)
                    .map(|&order_id| Stored {
                        order_id,
                        created: false,
                    })
                    .ok_or(sqlx::Error::RowNotFound),
            }
        })
        .collect()
}

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

/// An order whose charge matches what will ship, to hand to its merchants.
#[derive(Debug, Clone)]
pub struct HandOver {
    pub order_id: i64,
    /// What the order is charged (for the `order.processing` event).
    pub charged_minor: i64,
    /// The capture that made the charge match, to record with the hand-over.
    pub capture: Option<Capture>,
}

/// A capture made at the payment provider, recorded as [`super::orders::record_payment`]
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
    sqlx::query(
        "UPDATE sub_orders s SET status = u.st,
                accept_by = CASE WHEN u.st = 'accepted' THEN NULL ELSE now() + make_interval(secs => u.secs) END,
                accepted_at = CASE WHEN u.st = 'accepted' THEN now() END,
                updated_at = now()
         FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS u(id, st, secs) WHERE s.id = u.id",
    )
    .bind(&ids)
    .bind(&to)
    .bind(&secs)
    .execute(&mut **tx)
    .await?;
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

/// Webhook deliveries with their merchants' endpoints, by id: one read for the whole batch.
pub async fn load_deliveries(
    pool: &PgPool,
    ids: &[String],
) -> Result<Vec<Option<super::deliveries::DeliveryRow>>, sqlx::Error> {
    let rows: Vec<super::deliveries::DeliveryRow> = sqlx::query_as(
        "SELECT d.id, d.merchant_id, d.order_id, d.sub_order_id, d.event_type, d.payload::text AS payload, d.status, d.created_at,
                m.webhook_url, m.signing_secrets, m.endpoint_disabled_at, m.failing_since
         FROM webhook_deliveries d JOIN merchants m ON m.id = d.merchant_id WHERE d.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let by_id: HashMap<&str, &super::deliveries::DeliveryRow> =
        rows.iter().map(|r| (r.id.as_str(), r)).collect();
    Ok(ids
        .iter()
        .map(|id| by_id.get(id.as_str()).map(|r| (*r).clone()))
        .collect())
}
