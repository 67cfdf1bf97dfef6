//! The order pipeline end to end: intake, payment, stock, decisions, deadlines and reruns,
//! through real Redis, PostgreSQL, workers, and the sandbox's payment provider and merchant
//! endpoints over HTTP on 127.0.0.1.

use std::time::Duration;

use serde_json::{json, Value};
use souk::{
    admin,
    domain::ids::{OrderId, SubOrderId},
    jobs::{
        adjust_payment, confirm_payment, expire_acceptance, intake_storefront, notify_merchant, reserve_stock,
    },
    store::merchants,
};

use crate::support::pipeline::Pipeline;
use crate::support::{eventually, On};

#[tokio::test]
async fn an_order_flows_from_enqueue_to_every_merchant_notified_and_reported() {
    an_order_flows_from_enqueue_to_every_merchant_notified_and_reported_on(On::Redis).await
}

#[tokio::test]
async fn cluster_an_order_flows_from_enqueue_to_every_merchant_notified_and_reported() {
    an_order_flows_from_enqueue_to_every_merchant_notified_and_reported_on(On::Cluster).await
}

async fn an_order_flows_from_enqueue_to_every_merchant_notified_and_reported_on(on: On) {
    let vars = on.settings();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = Pipeline::start(&vars).await;
    p.merchant("m-auto", "auto", "accept", 3600).await;
    p.merchant("m-manual", "manual", "accept", 3600).await;
    p.stock("m-auto", "A", 10).await;
    p.stock("m-manual", "B", 10).await;
    let msg = p.order(
        "SF-100",
        &[("m-auto", "A", 2, 1000), ("m-manual", "B", 1, 500)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "both merchants notified", || {
        p.all_delivered("SF-100", 2)
    })
    .await;

    assert_eq!(p.order_status("SF-100").await.as_deref(), Some("captured"));
    assert_eq!(
        p.sb.counters().get("retrieve"),
        Some(&1),
        "the payment was read once: the capture went out on what confirm_payment saw"
    );
    let subs = p.sub_statuses("SF-100").await;
    assert_eq!(subs["m-auto"], "accepted");
    assert_eq!(subs["m-manual"], "awaiting_acceptance");
    assert_eq!(
        p.sb.intent_state(&pi),
        Some(("succeeded".into(), 2500, 0)),
        "captured exactly the total"
    );
    assert_eq!(
        merchants::stock(&p.env.app.pool, "m-auto", "A").await.unwrap(),
        Some((8, 0)),
        "auto-accepted: sold"
    );
    assert_eq!(
        merchants::stock(&p.env.app.pool, "m-manual", "B").await.unwrap(),
        Some((10, 1)),
        "awaiting: held"
    );
    let auto = p.sb.endpoint_report("m-auto");
    assert_eq!((auto.distinct, auto.bad_signatures), (1, 0));
    assert_eq!(auto.events[0].1, "sub_order.created");

    eventually(Duration::from_secs(10), "the outcome stream", || async {
        let t = p.outcome_types("SF-100").await;
        [
            "order.accepted",
            "order.paid",
            "sub_order.reserved",
            "order.captured",
            "order.processing",
            "sub_order.accepted",
            "merchant.notified",
        ]
        .iter()
        .all(|want| t.iter().any(|x| x == want))
    })
    .await;

    // The merchant accepts through the storefront channel.
    p.send(&json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-100", "merchant_id": "m-manual", "decision": "accept"})).await;
    eventually(Duration::from_secs(10), "the acceptance", || async {
        p.sub_statuses("SF-100").await["m-manual"] == "accepted"
    })
    .await;
    assert_eq!(
        merchants::stock(&p.env.app.pool, "m-manual", "B").await.unwrap(),
        Some((9, 0))
    );
    let story = admin::order_story(&p.env.app.pool, "SF-100").await.unwrap();
    assert_eq!(story["sub_orders"].as_array().unwrap().len(), 2);
    assert!(story["timeline"].as_array().unwrap().len() >= 8);
    // Each sub-order's own webhook, with its attempt, read through the order (migration 0011);
    // the capture among the order's provider calls (keyed by order since 0012).
    for sub in story["sub_orders"].as_array().unwrap() {
        let hooks = sub["webhooks"].as_array().unwrap();
        let created: Vec<_> = hooks
            .iter()
            .filter(|h| h["type"] == "sub_order.created")
            .collect();
        assert_eq!(created.len(), 1, "{sub}");
        let sub_id = sub["id"].as_i64().unwrap();
        assert_eq!(
            created[0]["webhook_id"],
            format!("msg_so{sub_id}_sub_order_created")
        );
        assert_eq!(created[0]["attempts"][0]["status_code"], 200, "{sub}");
    }
    let calls = story["payment_operations"].as_array().unwrap();
    assert!(calls.iter().any(|c| c["kind"] == "capture"), "{calls:?}");
    p.stop().await;
}

/// confirm_payment captures and hands over in its own job; when another run holds the order's
/// payment lock, it leaves that step to an adjust_payment job, which waits for the lock and
/// then captures once.
#[tokio::test]
async fn a_held_payment_lock_leaves_the_capture_to_the_adjust_payment_job() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    // A fresh database: the first order gets id 1. Hold its lock as another run would.
    let key = format!("{}:lock:payment:1", p.env.app.config.redis.key_prefix);
    let mut conn = p.env.redis();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("someone-else")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    p.send(&p.order("SF-LOCK", &[("m1", "A", 1, 700)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "the adjust job queued", || async {
        let mut conn = p.env.redis();
        let keys = p.env.app.producer.keys(adjust_payment::QUEUE);
        let s = souk::queue::stats::queue_stats(&mut conn, &keys).await.unwrap();
        p.order_status("SF-LOCK").await.as_deref() == Some("authorised") && s.length + s.delayed > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await; // a window for the held-off job to try (it snoozes)
    assert_eq!(
        p.order_status("SF-LOCK").await.as_deref(),
        Some("authorised"),
        "nothing captured while the lock is held"
    );
    assert_eq!(p.sb.counters().get("capture"), None);
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    eventually(Duration::from_secs(20), "captured and notified", || async {
        p.order_status("SF-LOCK").await.as_deref() == Some("captured") && p.all_delivered("SF-LOCK", 1).await
    })
    .await;
    assert_eq!(p.sb.counters().get("capture"), Some(&1), "one capture");
    p.stop().await;
}

#[tokio::test]
async fn every_step_run_again_leaves_the_same_state() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "manual", "accept", 3600).await;
    p.merchant("m2", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    p.stock("m2", "B", 5).await;
    let msg = p.order(
        "SF-200",
        &[("m1", "A", 1, 700), ("m2", "B", 2, 300)],
        "requires_capture",
    );
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "notified", || {
        p.all_delivered("SF-200", 2)
    })
    .await;

    let snapshot = |p: &Pipeline| {
        let pool = p.env.app.pool.clone();
        async move {
            let v: Value = sqlx::query_scalar(
                "SELECT json_build_object(
                    'orders', (SELECT json_agg(json_build_object('s', status, 'c', captured_minor, 'r', refunded_minor)) FROM orders),
                    'subs', (SELECT json_agg(json_build_object('id', id, 's', status) ORDER BY id) FROM sub_orders),
                    'reservations', (SELECT json_agg(json_build_object('sku', sku, 'q', quantity, 's', status) ORDER BY id) FROM reservations),
                    'stock', (SELECT json_agg(json_build_object('sku', sku, 'h', on_hand, 'r', reserved) ORDER BY sku) FROM stock),
                    'deliveries', (SELECT json_agg(json_build_object('id', id, 's', status) ORDER BY id) FROM webhook_deliveries),
                    'events', (SELECT json_agg(type ORDER BY id) FROM order_events))",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            v
        }
    };
    let before = snapshot(&p).await;
    let captures_before = p.sb.counters().get("capture").copied();
    let order_id: i64 = p
        .scalar("SELECT id FROM orders WHERE storefront_order_id = $1", "SF-200")
        .await;
    let subs: Vec<i64> = sqlx::query_scalar("SELECT id FROM sub_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_all(&p.env.app.pool)
        .await
        .unwrap();
    let deliveries: Vec<String> = p.deliveries("SF-200").await.into_iter().map(|d| d.0).collect();

    // Every job of this order delivered again (as after a crash), and the message sent twice more.
    let producer = &p.env.app.producer;
    producer
        .push(
            confirm_payment::QUEUE,
            &confirm_payment::Args {
                order_id: OrderId(order_id),
            },
        )
        .await
        .unwrap();
    producer
        .push(
            adjust_payment::QUEUE,
            &adjust_payment::Args::new(OrderId(order_id)),
        )
        .await
        .unwrap();
    for s in &subs {
        producer
            .push(reserve_stock::QUEUE, &reserve_stock::Args { sub_order_id: *s })
            .await
            .unwrap();
        producer
            .push(
                expire_acceptance::QUEUE,
                &expire_acceptance::Args {
                    sub_order_id: SubOrderId(*s),
                },
            )
            .await
            .unwrap();
    }
    for d in &deliveries {
        producer
            .push(
                notify_merchant::QUEUE,
                &notify_merchant::Args {
                    delivery_id: d.clone(),
                },
            )
            .await
            .unwrap();
    }
    p.send(&msg).await;
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "every queue drained", || async {
        let mut conn = p.env.redis();
        let mut idle = true;
        for q in [
            intake_storefront::QUEUE,
            confirm_payment::QUEUE,
            reserve_stock::QUEUE,
            adjust_payment::QUEUE,
            notify_merchant::QUEUE,
        ] {
            let s = souk::queue::stats::queue_stats(&mut conn, &p.env.app.producer.keys(q))
                .await
                .unwrap();
            idle &= s.length == 0 && s.pending == 0;
        }
        idle
    })
    .await;
    assert_eq!(snapshot(&p).await, before, "no state changed");
    assert_eq!(
        p.sb.counters().get("capture").copied(),
        captures_before,
        "one capture"
    );
    for m in ["m1", "m2"] {
        let r = p.sb.endpoint_report(m);
        assert_eq!(
            (r.received, r.distinct, r.duplicates),
            (1, 1, 0),
            "{m}: one webhook, never resent once delivered"
        );
    }
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id = $1",
            "SF-200"
        )
        .await,
        1
    );
    p.stop().await;
}

#[tokio::test]
async fn concurrent_orders_for_one_sku_never_oversell() {
    let p = Pipeline::start(&[("SOUK_QUEUE__CONCURRENCY", "32")]).await;
    p.merchant("hot", "auto", "accept", 3600).await;
    p.stock("hot", "DROP", 40).await;
    for i in 0..300 {
        p.send(&p.order(
            &format!("SF-F{i:03}"),
            &[("hot", "DROP", 1, 100)],
            "requires_capture",
        ))
        .await;
    }
    eventually(Duration::from_secs(60), "all 300 orders settled", || async {
        p.scalar("SELECT count(*) FROM orders WHERE storefront_order_id LIKE $1 AND status IN ('captured', 'cancelled')", "SF-F%").await == 300
    })
    .await;
    let sold = p.scalar("SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id LIKE $1 AND s.status = 'accepted'", "SF-F%").await;
    let out = p.scalar("SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id LIKE $1 AND s.status = 'out_of_stock'", "SF-F%").await;
    assert_eq!((sold, out), (40, 260));
    assert_eq!(
        merchants::stock(&p.env.app.pool, "hot", "DROP").await.unwrap(),
        Some((0, 0))
    );
    let c = p.sb.counters();
    assert_eq!(c.get("capture"), Some(&40));
    assert_eq!(
        c.get("cancel"),
        Some(&260),
        "authorisations of orders with nothing to ship are released"
    );
    p.stop().await;
}

#[tokio::test]
async fn bad_messages_are_recorded_with_a_reason_and_reported() {
    // An order naming an unknown SKU waits this long for it before it is refused.
    let p = Pipeline::start(&[("SOUK_MARKETPLACE__COMMAND_WAIT_S", "1")]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    let good = p.order("SF-OK", &[("m1", "A", 1, 100)], "requires_capture");
    let with = |path: &[&str], v: Value| {
        let mut m = good.clone();
        let mut cur = &mut m;
        for k in &path[..path.len() - 1] {
            cur = if let Ok(i) = k.parse::<usize>() {
                &mut cur[i]
            } else {
                &mut cur[*k]
            };
        }
        cur[path[path.len() - 1]] = v;
        m
    };
    let mut no_lines = good.clone();
    no_lines["order"].as_object_mut().unwrap().remove("lines");
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "{\"type\": \"order.placed\", ".to_owned(), "malformed_json"),
        ("missing field", no_lines.to_string(), "invalid_message"),
        ("negative qty", with(&["order", "lines", "0", "quantity"], json!(-1)).to_string(), "invalid_quantity"),
        ("zero qty", with(&["order", "lines", "0", "quantity"], json!(0)).to_string(), "invalid_quantity"),
        ("unknown merchant", with(&["order", "lines", "0", "merchant_id"], json!("nobody")).to_string(), "unknown_merchant"),
        ("unknown sku", with(&["order", "lines", "0", "sku"], json!("ZZZ")).to_string(), "unknown_sku"),
        ("wrong currency", with(&["order", "currency"], json!("USD")).to_string(), "wrong_currency"),
        ("huge", format!("{{\"type\": \"order.placed\", \"pad\": \"{}\"}}", "x".repeat(100_000)), "payload_too_large"),
        ("version 2", with(&["version"], json!(2)).to_string(), "unsupported_version"),
        ("unknown type", json!({"type": "order.teleported", "version": 1}).to_string(), "invalid_message"),
        ("unknown order decision", json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "nope", "merchant_id": "m1", "decision": "accept"}).to_string(), "unknown_sub_order"),
        ("negative stock", json!({"type": "inventory.adjust", "version": 1, "merchant_id": "m1", "sku": "A", "delta": -50}).to_string(), "below_reserved"),
    ];
    let mut entries = Vec::new();
    for (name, raw, code) in &cases {
        let id = p
            .env
            .app
            .producer
            .push_raw(intake_storefront::QUEUE, raw)
            .await
            .unwrap();
        entries.push((name, id, code));
    }
    p.send(&good).await;
    eventually(Duration::from_secs(20), "every bad message recorded", || async {
        p.scalar("SELECT count(*) FROM rejected_messages WHERE $1 <> ''", "x")
            .await
            == cases.len() as i64
    })
    .await;
    for (name, entry, code) in entries {
        let (got, reason): (String, String) =
            sqlx::query_as("SELECT code, reason FROM rejected_messages WHERE entry_id = $1")
                .bind(&entry)
                .fetch_one(&p.env.app.pool)
                .await
                .unwrap();
        assert_eq!(&got, *code, "{name}: {reason}");
        assert!(!reason.is_empty());
    }
    eventually(
        Duration::from_secs(10),
        "the good order to go through",
        || async { p.order_status("SF-OK").await.as_deref() == Some("captured") },
    )
    .await;
    let dead = souk::queue::dead::list(
        &mut p.env.redis(),
        &p.env.app.producer.keys(intake_storefront::QUEUE),
        10,
    )
    .await
    .unwrap();
    assert!(
        dead.is_empty(),
        "bad input is recorded, not dead-lettered: {dead:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_rejection_releases_stock_and_refunds_that_share_only() {
    let p = Pipeline::start(&[]).await;
    p.merchant("keeps", "auto", "accept", 3600).await;
    p.merchant("refuses", "manual", "accept", 3600).await;
    p.stock("keeps", "A", 3).await;
    p.stock("refuses", "B", 3).await;
    let msg = p.order(
        "SF-R",
        &[("keeps", "A", 1, 1200), ("refuses", "B", 2, 400)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "notified", || p.all_delivered("SF-R", 2)).await;
    p.send(&json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-R", "merchant_id": "refuses", "decision": "reject", "reason": "damaged"})).await;
    eventually(Duration::from_secs(20), "the refund", || async {
        p.sb.intent_state(&pi).map(|s| s.2) == Some(800)
    })
    .await;
    assert_eq!(p.sub_statuses("SF-R").await["refuses"], "rejected");
    assert_eq!(
        merchants::stock(&p.env.app.pool, "refuses", "B").await.unwrap(),
        Some((3, 0)),
        "stock released"
    );
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 2000, 800)));
    eventually(Duration::from_secs(10), "the refund reported", || async {
        p.outcome_types("SF-R")
            .await
            .iter()
            .any(|t| t == "order.refunded")
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn silence_until_the_deadline_applies_the_merchant_default() {
    let p = Pipeline::start(&[]).await;
    p.merchant("slowpoke", "manual", "reject", 1).await;
    p.merchant("lazy", "manual", "accept", 1).await;
    p.stock("slowpoke", "A", 2).await;
    p.stock("lazy", "B", 2).await;
    let msg = p.order(
        "SF-D",
        &[("slowpoke", "A", 1, 500), ("lazy", "B", 1, 300)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "both deadlines applied", || async {
        let s = p.sub_statuses("SF-D").await;
        s.get("slowpoke").map(String::as_str) == Some("rejected")
            && s.get("lazy").map(String::as_str) == Some("accepted")
    })
    .await;
    eventually(Duration::from_secs(10), "the rejected share refunded", || async {
        p.sb.intent_state(&pi).map(|s| s.2) == Some(500)
    })
    .await;
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM order_events WHERE type = 'sub_order.rejected' AND storefront_order_id = 'SF-D'",
    )
    .fetch_one(&p.env.app.pool)
    .await
    .unwrap();
    assert_eq!(actor, "souk:deadline");
    p.stop().await;
}

#[tokio::test]
async fn unpaid_and_declined_orders_end_with_their_reason_and_out_of_stock_shares_are_not_captured() {
    let p = Pipeline::start(&[("SOUK_MARKETPLACE__UNPAID_TIMEOUT_S", "1")]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.merchant("m2", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    p.stock("m2", "EMPTY", 0).await;
    p.send(&p.order("SF-UNPAID", &[("m1", "A", 1, 100)], "processing"))
        .await;
    p.send(&p.order("SF-DECLINED", &[("m1", "A", 1, 100)], "requires_payment_method"))
        .await;
    let partial = p.order(
        "SF-PART",
        &[("m1", "A", 2, 250), ("m2", "EMPTY", 1, 999)],
        "requires_capture",
    );
    let pi = partial["order"]["payment"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.send(&partial).await;
    eventually(Duration::from_secs(20), "all three settled", || async {
        p.order_status("SF-UNPAID").await.as_deref() == Some("cancelled")
            && p.order_status("SF-DECLINED").await.as_deref() == Some("cancelled")
            && p.order_status("SF-PART").await.as_deref() == Some("captured")
    })
    .await;
    let reason = |sf: &'static str| {
        let pool = p.env.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status_reason FROM orders WHERE storefront_order_id = $1")
                .bind(sf)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(
        reason("SF-UNPAID").await.starts_with("unpaid after"),
        "{}",
        reason("SF-UNPAID").await
    );
    assert_eq!(reason("SF-DECLINED").await, "payment requires_payment_method");
    assert_eq!(p.sub_statuses("SF-PART").await["m2"], "out_of_stock");
    assert_eq!(
        p.sb.intent_state(&pi),
        Some(("succeeded".into(), 500, 0)),
        "only the shipping share captured"
    );
    assert_eq!(
        merchants::stock(&p.env.app.pool, "m1", "A").await.unwrap(),
        Some((3, 0)),
        "unpaid and declined orders reserved nothing"
    );
    p.stop().await;
}

/// A capture the provider made but souk never recorded (the worker died between the call and
/// its commit) is recorded by the next run, without a second capture, however that run starts:
/// reading the provider's state (recorded as `sync`, the event marked recovered), repeating
/// the capture on the amount confirm_payment saw (the same idempotency key: the provider
/// answers it again), or on an amount that no longer holds (refused, then the provider's state
/// decides). Each order ends with one `order.captured` and one `order.processing`.
#[tokio::test]
async fn a_capture_made_but_not_recorded_is_recorded_once_by_the_next_run() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    let cases = [
        ("SF-SYNC", None, "sync", None),
        ("SF-SAME", Some(900), "capture", Some(900)),
        ("SF-STALE", Some(800), "sync", None),
    ];
    for (sf, ..) in cases {
        p.send(&p.order(sf, &[("m1", "A", 2, 450)], "requires_capture"))
            .await;
        eventually(Duration::from_secs(20), "notified", || p.all_delivered(sf, 1)).await;
    }
    let pool = &p.env.app.pool;
    let captures_before = p.sb.counters().get("capture").copied();
    for (sf, seen, ..) in cases {
        let order_id = p
            .scalar("SELECT id FROM orders WHERE storefront_order_id = $1", sf)
            .await;
        // The state a crash between the capture call and its record leaves behind.
        for sql in [
            "UPDATE orders SET status = 'authorised', captured_minor = 0, payment_status = 'requires_capture' WHERE id = $1",
            "DELETE FROM payment_operations WHERE order_id = $1",
            "DELETE FROM order_events WHERE order_id = $1 AND type IN ('order.captured', 'order.processing')",
        ] {
            sqlx::query(sql).bind(order_id).execute(pool).await.unwrap();
        }
        let args = adjust_payment::Args {
            order_id: OrderId(order_id),
            authorised_minor: seen,
        };
        p.env
            .app
            .producer
            .push(adjust_payment::QUEUE, &args)
            .await
            .unwrap();
    }
    for (sf, ..) in cases {
        eventually(Duration::from_secs(20), "the capture recorded", || async {
            p.order_status(sf).await.as_deref() == Some("captured")
                && p.scalar(
                    "SELECT captured_minor FROM orders WHERE storefront_order_id = $1",
                    sf,
                )
                .await
                    == 900
        })
        .await;
    }
    assert_eq!(
        p.sb.counters().get("capture").copied(),
        captures_before,
        "no second capture"
    );
    for (sf, _, kind, amount) in cases {
        let ops: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT kind, amount_minor FROM payment_operations p JOIN orders o ON o.id = p.order_id
             WHERE o.storefront_order_id = $1",
        )
        .bind(sf)
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(ops, [(kind.to_owned(), amount)], "{sf}");
        let events: Vec<(String, Value)> = sqlx::query_as(
            "SELECT type, data FROM order_events
             WHERE storefront_order_id = $1 AND type IN ('order.captured', 'order.processing') ORDER BY id",
        )
        .bind(sf)
        .fetch_all(pool)
        .await
        .unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(kinds, ["order.captured", "order.processing"], "{sf}");
        assert_eq!(events[0].1["amount_minor"], 900, "{sf}");
        assert_eq!(
            events[0].1["recovered"].as_bool() == Some(true),
            kind == "sync",
            "{sf}: only a record made from the provider's state is marked recovered"
        );
    }
    p.stop().await;
}
