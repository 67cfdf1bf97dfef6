//! The order pipeline end to end: real Redis, PostgreSQL, workers, and the sandbox's payment
//! provider and merchant endpoints over HTTP on 127.0.0.1.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{json, Value};
use souk::{
    admin,
    jobs::{
        adjust_payment, confirm_payment, expire_acceptance, intake_storefront, notify_merchant, reserve_stock,
    },
    sandbox::EndpointSettings,
    store::merchants,
};

use crate::support::pipeline::{Pipeline, KEY};
use crate::support::{eventually, TestEnv};

#[tokio::test]
async fn an_order_flows_from_enqueue_to_every_merchant_notified_and_reported() {
    let p = Pipeline::start(&[]).await;
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
    tokio::time::sleep(Duration::from_millis(800)).await;
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
        .push(confirm_payment::QUEUE, &confirm_payment::Args { order_id })
        .await
        .unwrap();
    producer
        .push(adjust_payment::QUEUE, &adjust_payment::Args::new(order_id))
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
                &expire_acceptance::Args { sub_order_id: *s },
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
        ("negative stock", json!({"type": "inventory.adjust", "version": 1, "merchant_id": "m1", "sku": "A", "delta": -50}).to_string(), "inventory_refused"),
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
async fn a_merchant_endpoint_down_slow_rate_limiting_or_gone_never_holds_up_the_others() {
    let p = Pipeline::start(&[]).await;
    for m in ["fast", "down", "slow", "limited", "gone"] {
        p.merchant(m, "auto", "accept", 3600).await;
        p.stock(m, "A", 10).await;
    }
    p.sb.configure_endpoint(
        "down",
        &EndpointSettings {
            down_for_ms: Some(1_500),
            ..Default::default()
        },
    );
    p.sb.configure_endpoint(
        "slow",
        &EndpointSettings {
            latency_ms: Some(2_000),
            ..Default::default()
        },
    );
    p.sb.configure_endpoint(
        "limited",
        &EndpointSettings {
            status: Some(429),
            retry_after_s: Some(2),
            ..Default::default()
        },
    );
    p.sb.configure_endpoint(
        "gone",
        &EndpointSettings {
            status: Some(410),
            ..Default::default()
        },
    );
    let lines: Vec<(&str, &str, i64, i64)> = ["fast", "down", "slow", "limited", "gone"]
        .iter()
        .map(|m| (*m, "A", 1, 100))
        .collect();
    p.send(&p.order("SF-W", &lines, "requires_capture")).await;
    eventually(Duration::from_secs(10), "the fast merchant notified", || async {
        p.deliveries("SF-W")
            .await
            .iter()
            .any(|d| d.1 == "fast" && d.2 == "delivered")
    })
    .await;
    let slow_done = p
        .deliveries("SF-W")
        .await
        .iter()
        .any(|d| d.1 == "slow" && d.2 == "delivered");
    assert!(!slow_done, "the fast merchant did not wait for the slow one");
    // The rate-limited endpoint recovers after its first refusal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.sb.configure_endpoint(
        "limited",
        &EndpointSettings {
            status: Some(0),
            ..Default::default()
        },
    );
    eventually(
        Duration::from_secs(20),
        "everyone but the gone endpoint notified",
        || async {
            let d = p.deliveries("SF-W").await;
            d.iter().filter(|x| x.2 == "delivered").count() == 4
                && d.iter().any(|x| x.1 == "gone" && x.2 == "endpoint_disabled")
        },
    )
    .await;
    let by: BTreeMap<String, i32> = p
        .deliveries("SF-W")
        .await
        .into_iter()
        .map(|d| (d.1, d.3))
        .collect();
    assert_eq!(by["fast"], 1);
    assert!(by["down"] >= 2, "the down endpoint was retried: {by:?}");
    assert_eq!(by["gone"], 1, "410 is not retried");
    let times: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT a.attempted_at FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.merchant_id = 'limited' ORDER BY a.id",
    )
    .fetch_all(&p.env.app.pool)
    .await
    .unwrap();
    assert!(times.len() >= 2);
    assert!(
        times[1] - times[0] >= chrono::Duration::milliseconds(1_900),
        "Retry-After: 2 was honoured: {:?}",
        times[1] - times[0]
    );
    let gone = merchants::get(&p.env.app.pool, "gone").await.unwrap().unwrap();
    assert!(gone.endpoint_disabled_at.is_some());
    assert_eq!(gone.endpoint_disabled_reason.as_deref(), Some("410 Gone"));
    p.stop().await;
}

/// Jobs of `queue` snoozed in the last few minutes (the queue's per-minute counters).
async fn snoozed(p: &Pipeline, queue: &str) -> i64 {
    let keys = p.env.app.producer.keys(queue);
    let mut conn = p.env.redis();
    let minute = chrono::Utc::now().timestamp() / 60;
    let mut n = 0;
    for m in minute - 3..=minute {
        let v: Option<i64> = redis::cmd("HGET")
            .arg(keys.stats_minute(m))
            .arg("snoozed")
            .query_async(&mut conn)
            .await
            .unwrap();
        n += v.unwrap_or(0);
    }
    n
}

#[tokio::test]
async fn deliveries_over_a_merchants_limit_wait_in_line_for_a_slot_instead_of_snoozing() {
    // Two slots for the merchant and four workers: two deliveries in flight, two waiting.
    let p = Pipeline::start(&[
        ("SOUK_WEBHOOKS__MAX_IN_FLIGHT_PER_MERCHANT", "2"),
        ("SOUK_QUEUES__souk.notify_merchant.v1__CONCURRENCY", "4"),
    ])
    .await;
    p.merchant("busy", "auto", "accept", 3600).await;
    p.stock("busy", "A", 100).await;
    p.sb.configure_endpoint(
        "busy",
        &EndpointSettings {
            latency_ms: Some(100),
            ..Default::default()
        },
    );
    for i in 0..16 {
        p.send(&p.order(
            &format!("SF-Q{i:02}"),
            &[("busy", "A", 1, 100)],
            "requires_capture",
        ))
        .await;
    }
    eventually(Duration::from_secs(30), "16 deliveries made", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE merchant_id = 'busy' AND status = 'delivered'",
        )
        .fetch_one(&p.env.app.pool)
        .await
        .unwrap();
        n == 16
    })
    .await;
    let report = p.sb.endpoint_report("busy");
    assert_eq!(report.duplicates, 0);
    assert_eq!(
        report.max_in_flight, 2,
        "the merchant's limit was reached and never exceeded"
    );
    assert_eq!(
        snoozed(&p, notify_merchant::QUEUE).await,
        0,
        "deliveries waited for a slot in their worker"
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

#[tokio::test]
async fn the_admin_api_needs_its_token_manages_merchants_and_never_shows_secrets() {
    let token = "admin-token-for-tests-0123456789";
    let p = Pipeline::start(&[
        ("SOUK_ADMIN__TOKEN", token),
        ("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "false"),
    ])
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = souk::http::router(p.env.app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let r = http.get(url("/admin/merchants")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url("/admin/merchants"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(url("/admin/merchants"))
        .bearer_auth(token)
        .json(&json!({"id": "shop-1", "name": "Shop", "webhook_url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a loopback webhook URL is refused (SSRF guard)");
    let r = http
        .post(url("/admin/merchants"))
        .bearer_auth(token)
        .json(&json!({"id": "shop-1", "name": "Shop", "webhook_url": "https://shop.example/hook", "acceptance_mode": "auto"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let secret = body["signing_secret"].as_str().unwrap().to_owned();
    assert!(souk::domain::webhook::secret_is_valid(&secret));
    let r = http
        .post(url("/admin/merchants/shop-1/rotate-secret"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let rotated: Value = r.json().await.unwrap();
    assert_ne!(rotated["signing_secret"], body["signing_secret"]);
    let list = http
        .get(url("/admin/merchants"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("shop-1") && list.contains("\"secrets\":2"),
        "{list}"
    );
    assert!(!list.contains("whsec_"), "secrets never listed");
    // Any storefront command through the admin API: checked first, then enqueued.
    let bad = http
        .post(url("/admin/commands"))
        .bearer_auth(token)
        .body(r#"{"type": "shipment.created", "version": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("invalid_message"));
    let unauthorised = http
        .post(url("/admin/commands"))
        .body(r#"{"type": "inventory.set", "version": 1, "merchant_id": "shop-1", "sku": "S", "on_hand": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    let good = http
        .post(url("/admin/commands"))
        .bearer_auth(token)
        .body(r#"{"type": "inventory.set", "version": 1, "merchant_id": "shop-1", "sku": "S", "on_hand": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 202);
    eventually(Duration::from_secs(10), "the command applied", || async {
        sqlx::query_scalar::<_, i32>("SELECT on_hand FROM stock WHERE merchant_id = 'shop-1' AND sku = 'S'")
            .fetch_optional(&p.env.app.pool)
            .await
            .unwrap()
            == Some(7)
    })
    .await;
    let r = http
        .get(url("/admin/orders/none"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    p.stop().await;
}

#[tokio::test]
async fn a_shipped_parcel_is_tracked_to_delivery_and_every_status_change_reaches_the_merchant() {
    // The tracking provider is the sandbox's AfterShip stand-in; polls every second at most.
    let p = Pipeline::start(&[
        ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
        ("SOUK_TRACKING__POLL_MOVING_S", "1"),
        ("SOUK_TRACKING__POLL_QUIET_S", "1"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
        ("SOUK_TRACKING__NO_INFO_EXPIRE_S", "3"),
        ("SOUK_TRACKING__COMPLETE_AFTER_DELIVERY_S", "1"),
    ])
    .await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(300);
    p.merchant("m-ship", "auto", "accept", 3600).await;
    p.merchant("m-other", "manual", "accept", 3600).await;
    p.stock("m-ship", "A", 5).await;
    p.stock("m-other", "B", 5).await;
    p.send(&p.order(
        "SF-SHIP",
        &[("m-ship", "A", 1, 1000), ("m-other", "B", 1, 500)],
        "requires_capture",
    ))
    .await;
    eventually(Duration::from_secs(20), "accepted and notified", || async {
        p.sub_statuses("SF-SHIP").await.get("m-ship").map(String::as_str) == Some("accepted")
    })
    .await;

    // Shipping a sub-order that is not accepted yet is refused with a reason.
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-SHIP",
                   "merchant_id": "m-other", "tracking_number": "1Z999AA10123456784"}),
    )
    .await;
    eventually(Duration::from_secs(10), "the refusal recorded", || async {
        p.scalar(
            "SELECT count(*) FROM rejected_messages WHERE storefront_order_id = $1 AND code = 'not_shippable'",
            "SF-SHIP",
        )
        .await
            == 1
    })
    .await;

    // A tracking number that is not one is refused with its reason.
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-SHIP",
                   "merchant_id": "m-ship", "tracking_number": "no/such;number"}),
    )
    .await;
    eventually(Duration::from_secs(10), "the bad number recorded", || async {
        p.scalar(
            "SELECT count(*) FROM rejected_messages WHERE storefront_order_id = $1 AND code = 'invalid_tracking_number'",
            "SF-SHIP",
        )
        .await
            == 1
    })
    .await;

    // A UPS number without a carrier: detected from its check digit. Sent twice: one shipment.
    let ship = json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-SHIP",
                      "merchant_id": "m-ship", "tracking_number": "1Z 999AA1 0123456784"});
    p.send(&ship).await;
    p.send(&ship).await;
    let script = souk::sandbox::tracking::script("1Z999AA10123456784");
    let end = script.last().unwrap().0;
    assert_eq!(end, "Delivered", "this number's scripted life ends delivered");
    eventually(Duration::from_secs(30), "the parcel delivered", || async {
        p.scalar(
            "SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id = $1 AND s.delivery_status = 'delivered'",
            "SF-SHIP",
        )
        .await
            == 1
    })
    .await;
    let pool = &p.env.app.pool;
    let (count, carrier, status, polls): (i64, Option<String>, String, i32) =
        sqlx::query_as("SELECT count(*) OVER (), carrier, status, polls FROM shipments")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (count, carrier.as_deref(), status.as_str()),
        (1, Some("ups"), "delivered")
    );
    // Every scripted checkpoint stored once, in carrier order, whatever the number of polls.
    let events: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT status, raw_status FROM tracking_events ORDER BY occurred_at, id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(events.len(), script.len(), "{events:?} after {polls} polls");
    assert!(events.iter().zip(&script).all(|(e, s)| e.1 == s.0));
    // The merchant heard each distinct status change, signed, once.
    eventually(Duration::from_secs(10), "status webhooks delivered", || async {
        let r = p.sb.endpoint_report("m-ship");
        r.events.iter().any(|(_, t)| t == "shipment.status_changed")
            && sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'shipment.status_changed' AND status <> 'delivered'",
            )
            .fetch_one(pool)
            .await
            .unwrap()
                == 0
    })
    .await;
    let changes: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'status' FROM webhook_deliveries WHERE event_type = 'shipment.status_changed' ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        changes.last().map(String::as_str),
        Some("delivered"),
        "{changes:?}"
    );
    let report = p.sb.endpoint_report("m-ship");
    assert_eq!((report.bad_signatures, report.duplicates), (0, 0));
    // Polling stopped at the end: no more polls after delivery.
    let polls_then: i32 = sqlx::query_scalar("SELECT polls FROM shipments")
        .fetch_one(pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let polls_now: i32 = sqlx::query_scalar("SELECT polls FROM shipments")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(polls_then, polls_now);
    // The storefront heard it too, and the story shows it.
    eventually(Duration::from_secs(10), "outcome events", || async {
        let t = p.outcome_types("SF-SHIP").await;
        t.iter().any(|x| x == "shipment.created") && t.iter().any(|x| x == "shipment.delivered")
    })
    .await;
    let story = admin::order_story(pool, "SF-SHIP").await.unwrap();
    assert_eq!(
        story["shipments"][0]["events"].as_array().unwrap().len(),
        script.len()
    );
    // m-other is still awaiting its decision, so only m-ship's sub-order ships: the order is
    // delivered.
    let order_delivery = "SELECT count(*) FROM orders WHERE storefront_order_id = $1 AND delivery_status = ";
    assert_eq!(
        p.scalar(&format!("{order_delivery}'delivered'"), "SF-SHIP").await,
        1
    );

    // Delivered a while ago: the sweeper completes the sub-order.
    p.sweep().await;
    eventually(Duration::from_secs(10), "the sub-order completed", || async {
        p.sub_statuses("SF-SHIP").await["m-ship"] == "completed"
    })
    .await;

    // A parcel the carrier never scans expires (here after 3 s) and is no longer polled.
    p.send(
        &json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-SHIP",
                   "merchant_id": "m-other", "decision": "accept"}),
    )
    .await;
    eventually(Duration::from_secs(10), "m-other accepted", || async {
        p.sub_statuses("SF-SHIP").await["m-other"] == "accepted"
    })
    .await;
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-SHIP",
                   "merchant_id": "m-other", "tracking_number": "SILENT0001", "carrier": "DHL"}),
    )
    .await;
    eventually(Duration::from_secs(20), "the silent parcel expired", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM shipments WHERE tracking_number = 'SILENT0001'")
            .fetch_optional(pool)
            .await
            .unwrap()
            .as_deref()
            == Some("expired")
    })
    .await;
    let (carrier, raw): (Option<String>, String) = sqlx::query_as(
        "SELECT s.carrier, e.raw_status FROM shipments s JOIN tracking_events e ON e.shipment_id = s.id
         WHERE s.tracking_number = 'SILENT0001'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((carrier.as_deref(), raw.as_str()), (Some("dhl"), "souk:no_info"));
    // One parcel delivered, one expired: the order shows the problem.
    assert_eq!(
        p.scalar(&format!("{order_delivery}'expired'"), "SF-SHIP").await,
        1
    );
    eventually(
        Duration::from_secs(10),
        "the merchant told of the expiry",
        || async {
            p.sb.endpoint_report("m-other")
                .events
                .iter()
                .any(|(id, t)| t == "shipment.status_changed" && id.ends_with("_expired"))
        },
    )
    .await;
    let expired_polls: i32 =
        sqlx::query_scalar("SELECT polls FROM shipments WHERE tracking_number = 'SILENT0001'")
            .fetch_one(pool)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later: i32 = sqlx::query_scalar("SELECT polls FROM shipments WHERE tracking_number = 'SILENT0001'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(expired_polls, later, "an expired parcel is not polled again");
    p.stop().await;
}

#[tokio::test]
async fn a_verified_provider_push_makes_souk_poll_at_once_and_a_forged_one_is_refused() {
    use base64::Engine;
    use hmac::Mac;
    let secret = "aftership-webhook-secret";
    // Polls an hour apart: anything that moves sooner came from a push.
    let p = Pipeline::start(&[
        ("SOUK_TRACKING__WEBHOOK_SECRET", secret),
        ("SOUK_TRACKING__POLL_IMMINENT_S", "3600"),
        ("SOUK_TRACKING__POLL_MOVING_S", "3600"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "3600"),
    ])
    .await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(200);
    p.merchant("m-push", "auto", "accept", 3600).await;
    p.stock("m-push", "A", 5).await;
    p.send(&p.order("SF-PUSH", &[("m-push", "A", 1, 1000)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "accepted", || async {
        p.sub_statuses("SF-PUSH").await.get("m-push").map(String::as_str) == Some("accepted")
    })
    .await;
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-PUSH",
                   "merchant_id": "m-push", "tracking_number": "1Z999AA10123456784"}),
    )
    .await;
    let pool = &p.env.app.pool;
    let polls = || async {
        sqlx::query_scalar::<_, i32>("SELECT polls FROM shipments")
            .fetch_optional(pool)
            .await
            .unwrap()
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(10), "the first poll", || async {
        polls().await == 1
    })
    .await;
    // By now the scripted parcel has been delivered at the carrier; souk does not know yet.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_ne!(
        sqlx::query_scalar::<_, String>("SELECT status FROM shipments")
            .fetch_one(pool)
            .await
            .unwrap(),
        "delivered"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = souk::http::router(p.env.app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let body = json!({"event": "tracking_update", "msg": {"tracking_number": "1Z999AA10123456784", "slug": "ups", "tag": "Delivered"}})
        .to_string();
    let sign = |key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/webhooks/tracking/aftership");
    let forged = http
        .post(&url)
        .header("aftership-hmac-sha256", sign("not-the-secret"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(polls().await, 1, "a forged push polls nothing");
    let real = http
        .post(&url)
        .header("aftership-hmac-sha256", sign(secret))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200);
    assert_eq!(real.json::<Value>().await.unwrap()["shipments"], 1);
    eventually(Duration::from_secs(10), "delivered after the push", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM shipments")
            .fetch_one(pool)
            .await
            .unwrap()
            == "delivered"
    })
    .await;
    assert_eq!(polls().await, 2, "one poll for the push, none of the schedule's");
    p.stop().await;
}

#[tokio::test]
async fn a_sub_order_not_shipped_by_its_merchants_deadline_is_flagged_late_once() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m-late", "auto", "accept", 3600).await;
    p.merchant("m-calm", "auto", "accept", 3600).await;
    p.stock("m-late", "A", 5).await;
    p.stock("m-calm", "B", 5).await;
    let pool = &p.env.app.pool;
    assert!(souk::store::shipments::set_ship_by(pool, "m-late", Some(1))
        .await
        .unwrap());
    assert!(!souk::store::shipments::set_ship_by(pool, "nobody", Some(1))
        .await
        .unwrap());
    p.send(&p.order(
        "SF-LATE",
        &[("m-late", "A", 1, 1000), ("m-calm", "B", 1, 500)],
        "requires_capture",
    ))
    .await;
    eventually(Duration::from_secs(20), "both accepted", || async {
        p.sub_statuses("SF-LATE")
            .await
            .values()
            .filter(|s| *s == "accepted")
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    p.sweep().await;
    p.sweep().await;
    eventually(Duration::from_secs(10), "the late webhook delivered", || async {
        p.sb.endpoint_report("m-late")
            .events
            .iter()
            .any(|(_, t)| t == "sub_order.late")
    })
    .await;
    let late: Vec<String> = sqlx::query_scalar(
        "SELECT s.merchant_id FROM sub_orders s JOIN orders o ON o.id = s.order_id
         WHERE o.storefront_order_id = 'SF-LATE' AND s.late_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(late, vec!["m-late".to_owned()], "m-calm has the default two days");
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM order_events e JOIN orders o ON o.id = e.order_id
             WHERE o.storefront_order_id = $1 AND e.type = 'sub_order.late'",
            "SF-LATE"
        )
        .await,
        1,
        "two sweeps, one flag"
    );
    assert_eq!(p.sb.endpoint_report("m-late").duplicates, 0);

    // KPIs of the day: both accepted, only m-late late; computing twice writes the same rows.
    let today = chrono::Utc::now().date_naive();
    for _ in 0..2 {
        souk::store::kpis::compute(pool, today, today).await.unwrap();
    }
    let late_kpi = souk::store::kpis::summary(pool, "m-late", today, today)
        .await
        .unwrap();
    let calm_kpi = souk::store::kpis::summary(pool, "m-calm", today, today)
        .await
        .unwrap();
    assert_eq!(late_kpi.sub_orders, 1);
    assert_eq!(late_kpi.acceptance_rate, Some(1.0));
    assert_eq!(late_kpi.auto_rejected_rate, Some(0.0));
    assert_eq!(late_kpi.late_shipment_rate, Some(1.0));
    assert_eq!(calm_kpi.late_shipment_rate, Some(0.0));
    assert_eq!(calm_kpi.avg_time_to_ship_s, None, "nothing shipped yet");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM merchant_kpis")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    p.stop().await;
}

#[tokio::test]
async fn a_parcels_whole_life_is_followed_through_each_tracking_provider() {
    let number = "1Z999AA10123456784";
    let script = souk::sandbox::tracking::script(number);
    for (provider, path) in [
        ("aftership", "/aftership"),
        ("17track", "/17track"),
        ("kuaidi100", "/kuaidi100"),
    ] {
        let p = Pipeline::start_tracking(
            path,
            &[
                ("SOUK_TRACKING__PROVIDER", provider),
                ("SOUK_TRACKING__CUSTOMER", "SOUKTEST"),
                ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
                ("SOUK_TRACKING__POLL_MOVING_S", "1"),
                ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
            ],
        )
        .await;
        // Whole seconds: Kuaidi100 reports times to the second.
        *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(1000);
        p.merchant("m-p", "auto", "accept", 3600).await;
        p.stock("m-p", "A", 5).await;
        let sf = format!("SF-{provider}");
        p.send(&p.order(&sf, &[("m-p", "A", 1, 1000)], "requires_capture"))
            .await;
        eventually(Duration::from_secs(20), "accepted", || async {
            p.sub_statuses(&sf).await.get("m-p").map(String::as_str) == Some("accepted")
        })
        .await;
        p.send(
            &json!({"type": "shipment.created", "version": 1, "storefront_order_id": sf,
                       "merchant_id": "m-p", "tracking_number": number}),
        )
        .await;
        let pool = &p.env.app.pool;
        eventually(
            Duration::from_secs(40),
            &format!("{provider}: delivered"),
            || async {
                sqlx::query_scalar::<_, String>("SELECT status FROM shipments")
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .as_deref()
                    == Some("delivered")
            },
        )
        .await;
        let events: Vec<(Option<String>, String)> =
            sqlx::query_as("SELECT status, raw_status FROM tracking_events ORDER BY occurred_at, id")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(events.len(), script.len(), "{provider}: {events:?}");
        assert!(
            events.iter().all(|e| e.0.is_some()),
            "{provider}: every raw status mapped: {events:?}"
        );
        let stored_provider: String = sqlx::query_scalar("SELECT provider FROM shipments")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(stored_provider, provider);
        eventually(
            Duration::from_secs(10),
            "the merchant told of the delivery",
            || async {
                p.sb.endpoint_report("m-p")
                    .events
                    .iter()
                    .any(|(id, _)| id.ends_with("_delivered"))
            },
        )
        .await;
        p.stop().await;
    }
}

#[tokio::test]
async fn a_completed_sub_order_is_settled_in_a_balanced_ledger_and_paid_out_once() {
    let p = Pipeline::start(&[
        ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
        ("SOUK_TRACKING__POLL_MOVING_S", "1"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
        ("SOUK_TRACKING__COMPLETE_AFTER_DELIVERY_S", "1"),
    ])
    .await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(200);
    p.merchant("m-keep", "auto", "accept", 3600).await;
    p.merchant("m-rej", "manual", "accept", 3600).await;
    p.stock("m-keep", "A", 5).await;
    p.stock("m-rej", "B", 5).await;
    let pool = &p.env.app.pool;
    use souk::store::settlement::set_payout_account;
    assert!(set_payout_account(pool, "m-keep", Some("acct_keep"))
        .await
        .unwrap());
    assert!(set_payout_account(pool, "m-rej", Some("acct_rej")).await.unwrap());
    let msg = p.order(
        "SF-SETTLE",
        &[("m-keep", "A", 2, 1500), ("m-rej", "B", 1, 700)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "m-rej awaiting its decision", || async {
        p.sub_statuses("SF-SETTLE").await.get("m-rej").map(String::as_str) == Some("awaiting_acceptance")
    })
    .await;
    // One merchant rejects (its share refunded), the other ships and its parcel is delivered.
    p.send(
        &json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-SETTLE",
                   "merchant_id": "m-rej", "decision": "reject", "reason": "out of stock in the warehouse"}),
    )
    .await;
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-SETTLE",
                   "merchant_id": "m-keep", "tracking_number": "1Z999AA10123456784"}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "delivered and the rejected share refunded",
        || async {
            p.sub_statuses("SF-SETTLE").await.get("m-rej").map(String::as_str) == Some("rejected")
                && p.sb.intent_state(&pi).is_some_and(|s| s.2 == 700)
                && p.scalar(
                    "SELECT count(*) FROM shipments sh JOIN sub_orders s ON s.id = sh.sub_order_id
                     JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id = $1 AND sh.status = 'delivered'",
                    "SF-SETTLE",
                )
                .await
                    == 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    p.sweep().await;
    p.sweep().await;
    eventually(Duration::from_secs(20), "the payout paid", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM payouts")
            .fetch_optional(pool)
            .await
            .unwrap()
            .as_deref()
            == Some("paid")
    })
    .await;
    // The ledger balances per journal, matches the provider's net take, and pays once.
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT journal FROM ledger_entries GROUP BY journal HAVING sum(amount_minor) <> 0) j",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
    let clearing: i64 = sqlx::query_scalar(
        "SELECT -sum(amount_minor)::bigint FROM ledger_entries WHERE account = 'clearing'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let (status, received, refunded) = p.sb.intent_state(&pi).unwrap();
    assert_eq!(status, "succeeded");
    assert_eq!(
        clearing,
        received - refunded,
        "settled = captured − refunded at the provider"
    );
    let commission: i64 =
        sqlx::query_scalar("SELECT commission_minor FROM sub_orders WHERE merchant_id = 'm-keep'")
            .fetch_one(pool)
            .await
            .unwrap();
    let transfers = p.sb.transfers();
    assert_eq!(transfers.len(), 1, "{transfers:?}");
    assert_eq!(
        (transfers[0].1, transfers[0].2.as_str(), transfers[0].3.as_str()),
        (3000 - commission, "acct_keep", "SF-SETTLE")
    );
    let payable: i64 = sqlx::query_scalar(
        "SELECT sum(amount_minor)::bigint FROM ledger_entries WHERE account = 'merchant_payable:m-keep'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(payable, 0, "owed, then paid");
    let today = chrono::Utc::now().date_naive();
    souk::store::kpis::compute(pool, today, today).await.unwrap();
    let keep = souk::store::kpis::summary(pool, "m-keep", today, today)
        .await
        .unwrap();
    let rej = souk::store::kpis::summary(pool, "m-rej", today, today)
        .await
        .unwrap();
    assert_eq!((keep.acceptance_rate, keep.refund_rate), (Some(1.0), Some(0.0)));
    assert!(
        keep.avg_time_to_ship_s.is_some_and(|s| s >= 0.0)
            && keep.avg_delivery_time_s.is_some_and(|s| s > 0.0)
    );
    assert_eq!(
        (rej.acceptance_rate, rej.auto_rejected_rate, rej.refund_rate),
        (Some(0.0), Some(0.0), Some(1.0))
    );
    // Append-only: the database refuses to change history; a journal that does not balance
    // cannot be committed.
    assert!(sqlx::query("UPDATE ledger_entries SET amount_minor = 0")
        .execute(pool)
        .await
        .is_err());
    assert!(sqlx::query("DELETE FROM ledger_entries")
        .execute(pool)
        .await
        .is_err());
    let lone = sqlx::query(
        "INSERT INTO ledger_entries (journal, account, amount_minor, currency) VALUES ('bad', 'clearing', 5, 'EUR')",
    )
    .execute(pool)
    .await;
    assert!(lone.is_err(), "an unbalanced journal is refused at commit");
    // A second payout run sends nothing more.
    let sub_order_id: i64 = sqlx::query_scalar("SELECT sub_order_id FROM payouts")
        .fetch_one(pool)
        .await
        .unwrap();
    let again = souk::jobs::pay_merchant::Args { sub_order_id };
    p.env
        .app
        .producer
        .push(souk::jobs::pay_merchant::QUEUE, &again)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(p.sb.transfers().len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn kuaidi100_and_17track_pushes_are_verified_and_only_hint_a_poll() {
    let secret = "push-secret";
    let p = Pipeline::start(&[
        ("SOUK_TRACKING__WEBHOOK_SECRET", secret),
        ("SOUK_TRACKING__POLL_IMMINENT_S", "3600"),
        ("SOUK_TRACKING__POLL_MOVING_S", "3600"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "3600"),
    ])
    .await;
    p.merchant("m-hint", "auto", "accept", 3600).await;
    p.stock("m-hint", "A", 5).await;
    p.send(&p.order("SF-HINT", &[("m-hint", "A", 1, 1000)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "accepted", || async {
        p.sub_statuses("SF-HINT").await.get("m-hint").map(String::as_str) == Some("accepted")
    })
    .await;
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-HINT",
                   "merchant_id": "m-hint", "tracking_number": "1Z999AA10123456784"}),
    )
    .await;
    let pool = &p.env.app.pool;
    let polls = || async {
        sqlx::query_scalar::<_, i32>("SELECT polls FROM shipments")
            .fetch_optional(pool)
            .await
            .unwrap()
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(10), "the first poll", || async {
        polls().await == 1
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = souk::http::router(p.env.app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();

    // Kuaidi100: form fields param + sign = MD5(param + salt), upper-case hex.
    let param = json!({"status": "polling", "lastResult": {"nu": "1Z999AA10123456784", "com": "ups", "state": "0", "data": []}})
        .to_string();
    let k100 = format!("http://{addr}/webhooks/tracking/kuaidi100");
    let forged = http
        .post(&k100)
        .form(&[
            ("param", param.as_str()),
            (
                "sign",
                &souk::domain::tracking::signature::kuaidi100_sign(&param, "wrong salt"),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let real = http
        .post(&k100)
        .form(&[
            ("param", param.as_str()),
            (
                "sign",
                &souk::domain::tracking::signature::kuaidi100_sign(&param, secret),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200);
    assert_eq!(real.json::<Value>().await.unwrap()["result"], true);
    eventually(
        Duration::from_secs(10),
        "polled for the Kuaidi100 push",
        || async { polls().await == 2 },
    )
    .await;

    // 17TRACK: the account token in header 17token.
    let body =
        json!({"event": "TRACKING_UPDATED", "data": {"number": "1Z999AA10123456784", "carrier": 100002}})
            .to_string();
    let t17 = format!("http://{addr}/webhooks/tracking/17track");
    let forged = http
        .post(&t17)
        .header("17token", "guess")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let missing = http.post(&t17).body(body.clone()).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let real = http
        .post(&t17)
        .header("17token", secret)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200);
    assert_eq!(real.json::<Value>().await.unwrap()["shipments"], 1);
    eventually(Duration::from_secs(10), "polled for the 17TRACK push", || async {
        polls().await == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(polls().await, 3, "forged pushes polled nothing");
    p.stop().await;
}

#[tokio::test]
async fn worker_processes_share_the_tracking_providers_rate_limit() {
    // souk may call 5 times a second across the fleet; the provider refuses a 7th call in a
    // second. Two more `souk run` processes track alongside this one: a limit kept per process
    // would allow 15 a second and be refused.
    let polls: [(&str, &str); 4] = [
        ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
        ("SOUK_TRACKING__POLL_MOVING_S", "1"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
        ("SOUK_TRACKING__RATE_PER_S", "5"),
    ];
    let p = Pipeline::start(&polls).await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(300);
    *p.sb.couriers.rate_per_s.lock().unwrap() = 6;
    let tracking = format!("{}/aftership", p.base);
    let mut child: Vec<(&str, &str)> = polls.to_vec();
    child.extend_from_slice(&[
        ("SOUK_TRACKING__BASE_URL", tracking.as_str()),
        ("SOUK_TRACKING__API_KEY", KEY),
        ("SOUK_PAYMENT__BASE_URL", p.base.as_str()),
        ("SOUK_PAYMENT__API_KEY", KEY),
        ("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
    ]);
    let args = ["run", "--queues", souk::jobs::track_shipment::QUEUE, "--no-cron"];
    let others = crate::support::Reaper(vec![
        p.env.spawn_souk(&args, &child),
        p.env.spawn_souk(&args, &child),
    ]);
    p.merchant("m-fleet", "auto", "accept", 3600).await;
    p.stock("m-fleet", "A", 100).await;
    let n = 24;
    for i in 0..n {
        p.send(&p.order(
            &format!("SF-FLEET-{i}"),
            &[("m-fleet", "A", 1, 100)],
            "requires_capture",
        ))
        .await;
    }
    eventually(Duration::from_secs(30), "all accepted", || async {
        p.scalar(
            "SELECT count(*) FROM sub_orders WHERE merchant_id = $1 AND status = 'accepted'",
            "m-fleet",
        )
        .await
            == n
    })
    .await;
    let mut numbers = (0..10_000)
        .map(|i| format!("FLEET{i:05}"))
        .filter(|x| souk::sandbox::tracking::script(x).last().map(|s| s.0) == Some("Delivered"));
    for i in 0..n {
        p.send(&json!({"type": "shipment.created", "version": 1, "storefront_order_id": format!("SF-FLEET-{i}"),
                       "merchant_id": "m-fleet", "tracking_number": numbers.next().unwrap(), "carrier": "ups"}))
            .await;
    }
    eventually(Duration::from_secs(120), "every parcel delivered", || async {
        p.scalar(
            "SELECT count(*) FROM shipments WHERE merchant_id = $1 AND status = 'delivered'",
            "m-fleet",
        )
        .await
            == n
    })
    .await;
    let c = p.sb.counters();
    let calls =
        c.get("tracking_get").copied().unwrap_or(0) + c.get("tracking_register").copied().unwrap_or(0);
    assert!(calls >= 2 * n as u64, "{c:?}");
    assert_eq!(c.get("tracking_rate_limited").copied().unwrap_or(0), 0, "{c:?}");
    // The other processes go before the keys: a running one would write its queues back.
    drop(others);
    p.stop().await;
}

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
    assert_eq!(good.iter().filter(|s| s.created).count(), 20);
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
    use souk::{
        domain::order::{parse_command, OrderPlan, StorefrontCommand, SubOrderPlan},
        store::{
            orders::Reserve,
            pipeline::{begin_keyed, hand_over_in, reserve_in, Capture, HandOver, NewOrder, ReserveReq},
        },
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
    let new_order = |i: usize| {
        let msg = json!({"type": "order.placed", "version": 1, "order": {
            "id": format!("SF-IX{i:05}"), "customer": {"id": "c-1"}, "currency": "EUR",
            "lines": [{"merchant_id": "m1", "sku": "A", "quantity": 1, "unit_price_minor": 100}],
            "shipping_address": {"country": "FR", "city": "Lyon"},
            "payment": {"provider": "stripe", "payment_id": format!("pi_ix{i}")},
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
        NewOrder {
            order,
            plan,
            enqueued_at_ms: 0,
        }
    };
    let all: Vec<NewOrder> = (0..3000).map(new_order).collect();
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
            order_id,
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
