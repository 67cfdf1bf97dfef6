//! The store's batched writes and the outcome relay: a bad request isolated, duplicates stored
//! once, indexes used without statistics, no event skipped behind an open transaction.

use std::time::Duration;

use serde_json::json;
use souk::store::merchants;

use crate::support::pipeline::Pipeline;
use crate::support::TestEnv;

/// The group commit against the real database: one bad request in a crowd fails alone, a
/// duplicate in the same crowd is stored once, and two reservations of one sub-order reserve once.
#[tokio::test]
async fn batched_writes_isolate_a_bad_request_and_store_duplicates_once() {
    use souk::{
        domain::order::{parse_command, OrderPlan, StorefrontCommand, SubOrderPlan},
        store::{
            orders::Reserve,
            pipeline::{NewOrder, ReserveReq},
        },
    };
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 1).await;
    let app = &p.env.app;
    let new_order = |id: &str, merchant: &str| {
        let StorefrontCommand::OrderPlaced { order, .. } = parse_command(
            &p.order(id, &[("m1", "A", 1, 100)], "requires_capture")
                .to_string(),
        )
        .unwrap() else {
            unreachable!()
        };
        // The plan names `merchant` directly, as if it vanished after the catalogue check.
        let plan = OrderPlan {
            total_minor: 100,
            sub_orders: vec![SubOrderPlan {
                merchant_id: merchant.to_owned(),
                lines: vec![("A".to_owned(), 1, 100)],
                subtotal_minor: 100,
            }],
        };
        NewOrder {
            order,
            plan,
            enqueued_at_ms: 0,
        }
    };
    let mut reqs: Vec<NewOrder> = (0..20).map(|i| new_order(&format!("SF-B{i:02}"), "m1")).collect();
    reqs.push(new_order("SF-B00", "m1")); // a duplicate of the first
    reqs.push(new_order("SF-GHOST", "ghost")); // breaks any batch it is in
    let answers =
        futures::future::join_all(reqs.into_iter().map(|r| app.batches.insert_orders.call(r))).await;
    let (bad, good) = answers.split_last().unwrap();
    assert!(
        matches!(bad, Err(sqlx::Error::RowNotFound)),
        "{:?}",
        bad.as_ref().err()
    );
    let good: Vec<_> = good
        .iter()
        .map(|a| a.as_ref().expect("a good order is stored"))
        .collect();
    assert_eq!(
        good[0].order_id, good[20].order_id,
        "the duplicate names the same order"
    );
    assert_eq!(
        good.iter()
            .filter(|s| s.intake == souk::store::orders::Intake::Created)
            .count(),
        20
    );
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id LIKE $1",
            "SF-%"
        )
        .await,
        20
    );
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id = $1",
            "SF-GHOST"
        )
        .await,
        0
    );
    assert_eq!(
        p.scalar("SELECT count(*) FROM order_lines l JOIN sub_orders s ON s.id = l.sub_order_id JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id LIKE $1", "SF-B%").await,
        20
    );
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM order_events WHERE storefront_order_id = $1",
            "SF-B00"
        )
        .await,
        2,
        "order.accepted and sub_order.created, once each"
    );

    // The same sub-order reserved twice at once: one reservation, one unit held.
    let sub = p
        .scalar(
            "SELECT s.id FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id = $1",
            "SF-B05",
        )
        .await;
    let (a, b) = tokio::join!(
        app.batches.reserve.call(ReserveReq::Sub(sub)),
        app.batches.reserve.call(ReserveReq::Sub(sub))
    );
    let mut outcomes: Vec<(i64, Reserve)> = [a.unwrap(), b.unwrap()]
        .into_iter()
        .flat_map(|r| r.outcomes)
        .collect();
    outcomes.sort_by_key(|o| o.1 == Reserve::NotPending);
    assert_eq!(outcomes, [(sub, Reserve::Reserved), (sub, Reserve::NotPending)]);
    assert_eq!(
        merchants::stock(&app.pool, "m1", "A").await.unwrap(),
        Some((1, 1))
    );

    // One order paid and reserved twice at once (a redelivered job): authorised once, with
    // one `order.paid`, and its sub-order decided once (out of stock: the unit is held above).
    let order_id = p
        .scalar("SELECT id FROM orders WHERE storefront_order_id = $1", "SF-B06")
        .await;
    let paid = || ReserveReq::Order {
        order_id,
        authorised: Some(("requires_capture".to_owned(), json!({"amount": 100}))),
    };
    let (a, b) = tokio::join!(app.batches.reserve.call(paid()), app.batches.reserve.call(paid()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.all_decided && b.all_decided);
    let decided: Vec<&(i64, Reserve)> = a
        .outcomes
        .iter()
        .chain(&b.outcomes)
        .filter(|o| o.1 != Reserve::NotPending)
        .collect();
    assert_eq!(decided.len(), 1, "{a:?} {b:?}");
    assert!(matches!(decided[0].1, Reserve::OutOfStock(_)), "{decided:?}");
    assert_eq!(p.order_status("SF-B06").await.as_deref(), Some("authorised"));
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM order_events WHERE storefront_order_id = $1 AND type = 'order.paid'",
            "SF-B06"
        )
        .await,
        1
    );
    p.stop().await;
}

/// The outcome relay follows a cursor over (writing transaction, id): an event written by a
/// transaction still open holds back everything after it, and appears once it commits; none is
/// skipped, none published twice, and a failed publish leaves the events for the next round.
#[tokio::test]
async fn the_outcome_relay_waits_for_open_transactions_and_never_skips_an_event() {
    use souk::store::outbox;
    let env = TestEnv::with(&[]).await;
    let pool = &env.app.pool;
    let insert = "INSERT INTO order_events (storefront_order_id, type, actor) VALUES ($1, 'test.event', 'test') RETURNING id";
    let relay = |fail: bool| async move {
        let mut got = Vec::new();
        let res = outbox::relay(pool, "outcomes", 100, |events| {
            got = events
                .iter()
                .map(|e| e.storefront_order_id.clone().unwrap())
                .collect();
            async move {
                if fail {
                    anyhow::bail!("redis is down");
                }
                Ok(())
            }
        })
        .await;
        (res.map_err(|e| e.to_string()), got)
    };
    // Transactions of tests running beside this one (same server) also hold the stream back
    // for a moment, so a round may publish nothing, or part of what is final: rounds are
    // repeated until one publishes (or fails), and what they publish gathered until `last` comes.
    let next_round = |fail: bool| async move {
        for _ in 0..400 {
            let r = relay(fail).await;
            if r.0 != Ok(0) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no event became final in 10 s");
    };
    let until = |last: &'static str| async move {
        let mut all = Vec::new();
        while !all.iter().any(|x| x == last) {
            let (res, got) = next_round(false).await;
            assert_eq!(res, Ok(got.len()));
            all.extend(got);
        }
        all
    };

    // A long transaction writes its event first (it has the older transaction id) and stays open.
    let mut slow = pool.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar(insert)
        .bind("slow")
        .fetch_one(&mut *slow)
        .await
        .unwrap();
    let _: i64 = sqlx::query_scalar(insert)
        .bind("fast")
        .fetch_one(pool)
        .await
        .unwrap();
    for _ in 0..5 {
        let (res, got) = relay(false).await;
        assert_eq!(
            res,
            Ok(0),
            "nothing is final while the older transaction runs: {got:?}"
        );
    }

    slow.commit().await.unwrap();
    assert_eq!(
        until("fast").await,
        vec!["slow", "fast"],
        "in the order of the transactions that wrote them"
    );
    let _: i64 = sqlx::query_scalar(insert)
        .bind("mark")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(until("mark").await, vec!["mark"], "published once");

    // A publish that fails moves nothing; the next round publishes the same event.
    let _: i64 = sqlx::query_scalar(insert)
        .bind("retry")
        .fetch_one(pool)
        .await
        .unwrap();
    let (res, got) = next_round(true).await;
    assert!(res.is_err() && got == vec!["retry"], "{res:?} {got:?}");
    assert_eq!(until("retry").await, vec!["retry"]);

    // A rolled-back event never appears and does not hold the stream back.
    let mut gone = pool.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar(insert)
        .bind("gone")
        .fetch_one(&mut *gone)
        .await
        .unwrap();
    gone.rollback().await.unwrap();
    let _: i64 = sqlx::query_scalar(insert)
        .bind("after")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(until("after").await, vec!["after"]);
    env.cleanup().await;
}

/// The batch writes find their rows through indexes even where the planner has no statistics
/// (a new database, autovacuum off or not run yet): with thousands of sub-orders stored and
/// none analysed, reserving and handing over fifty of them scans no table whole. Without
/// `begin_keyed` the planner takes fifty ids to match a quarter of each table and scans it,
/// so every batch costs time in proportion to every order ever stored.
#[tokio::test]
async fn batch_writes_use_indexes_without_statistics() {
    use souk::store::{
        orders::Reserve,
        pipeline::{begin_keyed, hand_over_in, reserve_in, Capture, HandOver, NewOrder, ReserveReq},
    };
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 1_000_000).await;
    let pool = &p.env.app.pool;
    for t in ["orders", "sub_orders", "order_lines", "reservations"] {
        // No statistics for the whole test, whatever this server's autovacuum does.
        sqlx::query(&format!("ALTER TABLE {t} SET (autovacuum_enabled = false)"))
            .execute(pool)
            .await
            .unwrap();
    }
    let all: Vec<NewOrder> = (0..3000)
        .map(|i| one_line_order(&format!("SF-IX{i:05}"), &format!("pi_ix{i}")))
        .collect();
    for chunk in all.chunks(500) {
        souk::store::pipeline::insert_orders(pool, chunk).await.unwrap();
    }
    let subs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, order_id FROM sub_orders ORDER BY id DESC LIMIT 50")
            .fetch_all(pool)
            .await
            .unwrap();
    let (sub_ids, order_ids): (Vec<i64>, Vec<i64>) = subs.into_iter().unzip();

    let mut tx = begin_keyed(pool).await.unwrap();
    // Half re-driven by sub-order, half paid and reserved by order.
    let reqs: Vec<ReserveReq> = sub_ids[..25]
        .iter()
        .map(|&s| ReserveReq::Sub(s))
        .chain(order_ids[25..].iter().map(|&order_id| ReserveReq::Order {
            order_id,
            authorised: Some(("requires_capture".to_owned(), json!({}))),
        }))
        .collect();
    let reserved = reserve_in(&mut tx, &reqs, 600).await.unwrap();
    assert!(
        reserved
            .iter()
            .all(|r| r.all_decided && r.outcomes.len() == 1 && r.outcomes[0].1 == Reserve::Reserved),
        "{reserved:?}"
    );
    // The orders paid in this batch bring their capture to record.
    let reqs: Vec<HandOver> = order_ids
        .iter()
        .enumerate()
        .map(|(i, &order_id)| HandOver {
            order_id,
            charged_minor: 100,
            capture: (i >= 25).then(|| Capture {
                idempotency_key: format!("k{order_id}"),
                amount_minor: 100,
                captured_minor: 100,
                refunded_minor: 0,
                payment_status: "succeeded".to_owned(),
                data: json!({"amount_minor": 100}),
                fence: 1,
            }),
        })
        .collect();
    let handed = hand_over_in(&mut tx, &reqs, |sub, kind| format!("ix_{sub}_{kind}"))
        .await
        .unwrap();
    assert_eq!(handed.len(), 50);
    let captured: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'captured'")
            .bind(&order_ids)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(captured, 25, "the orders paid in the batch moved on");
    let recorded: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_operations WHERE order_id = ANY($1) AND kind = 'capture'),
                (SELECT coalesce(sum(captured_minor), 0)::bigint FROM orders WHERE id = ANY($1) AND payment_status = 'succeeded'),
                (SELECT count(*) FROM order_events WHERE order_id = ANY($1) AND type = 'order.captured')",
    )
    .bind(&order_ids)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(recorded, (25, 2500, 25), "each capture recorded once");
    let scans: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables
         WHERE relname IN ('orders', 'sub_orders', 'order_lines', 'reservations') ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(scans.len(), 4, "{scans:?}");
    assert!(
        scans.iter().all(|(_, n)| *n == 0),
        "tables scanned whole: {scans:?}"
    );
    tx.rollback().await.unwrap();
    p.stop().await;
}

/// One payment backs one order (migration 0026's claims): of two orders naming one payment in
/// the same batch the first is stored and the second is not, nor is a later one in another
/// batch; the claim names the stored order and no order is left without its claim.
#[tokio::test]
async fn a_payment_is_claimed_by_one_order_within_and_across_batches() {
    use souk::store::orders::Intake;
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    let pool = &p.env.app.pool;
    let batch = [
        one_line_order("SF-PC1", "pi_shared"),
        one_line_order("SF-PC2", "pi_shared"),
        one_line_order("SF-PC3", "pi_own"),
    ];
    let got = souk::store::pipeline::insert_orders(pool, &batch).await.unwrap();
    let kinds: Vec<Intake> = got.iter().map(|s| s.intake).collect();
    assert_eq!(kinds, [Intake::Created, Intake::PaymentUsed, Intake::Created]);
    assert_eq!(
        got[1].order_id, got[0].order_id,
        "the refusal names the order holding it"
    );
    let later = souk::store::pipeline::insert_orders(pool, &[one_line_order("SF-PC4", "pi_shared")])
        .await
        .unwrap();
    assert_eq!(later[0].intake, Intake::PaymentUsed);
    assert_eq!(later[0].order_id, got[0].order_id);
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id LIKE $1",
            "SF-PC%"
        )
        .await,
        2
    );
    assert_eq!(p.order_status("SF-PC2").await, None, "not stored");
    assert_eq!(p.order_status("SF-PC4").await, None, "not stored");
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM payment_claims c JOIN orders o ON o.id = c.order_id
             WHERE o.payment_id = c.payment_id AND o.storefront_order_id LIKE $1",
            "SF-PC%"
        )
        .await,
        2,
        "each stored order holds the claim on its own payment"
    );
    assert_eq!(
        p.scalar("SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id LIKE $1", "SF-PC%").await,
        2,
        "sub-orders only for the stored orders"
    );
    p.stop().await;
}

/// A validated order of one unit of m1's SKU A at 100, paid by `payment`, as intake stores it.
fn one_line_order(sf: &str, payment: &str) -> souk::store::pipeline::NewOrder {
    use souk::domain::order::{parse_command, OrderPlan, StorefrontCommand, SubOrderPlan};
    let msg = json!({"type": "order.placed", "version": 1, "order": {
        "id": sf, "customer": {"id": "c-1"}, "currency": "EUR",
        "lines": [{"merchant_id": "m1", "sku": "A", "quantity": 1, "unit_price_minor": 100}],
        "shipping_address": {"country": "FR", "city": "Lyon"},
        "payment": {"provider": "stripe", "payment_id": payment},
        "placed_at": "2026-11-24T10:00:00Z"
    }});
    let StorefrontCommand::OrderPlaced { order, .. } = parse_command(&msg.to_string()).unwrap() else {
        unreachable!()
    };
    let plan = OrderPlan {
        total_minor: 100,
        sub_orders: vec![SubOrderPlan {
            merchant_id: "m1".to_owned(),
            lines: vec![("A".to_owned(), 1, 100)],
            subtotal_minor: 100,
        }],
    };
    souk::store::pipeline::NewOrder {
        order,
        plan,
        enqueued_at_ms: 0,
    }
}
