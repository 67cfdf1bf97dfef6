//! Commands about one order or one SKU take effect in the order sent (message groups on the
//! storefront queue, `src/queue/groups.rs`), across two `souk` processes running the storefront
//! queue with its default concurrency (200), and across a crash of the process holding an
//! order's first command.

use std::time::Duration;

use serde_json::json;

use crate::support::{eventually, pipeline::Pipeline, Reaper};

const N: usize = 50;

async fn rejected(p: &Pipeline) -> Vec<(String, String)> {
    sqlx::query_as("SELECT code, reason FROM rejected_messages ORDER BY id")
        .fetch_all(&p.env.app.pool)
        .await
        .unwrap()
}

/// Orders still on their way (not cancelled, or money still held at the provider).
async fn open_cancellations(p: &Pipeline, ids: &[(String, String)]) -> Vec<String> {
    let mut open = Vec::new();
    for (sf, pi) in ids {
        let status = p.order_status(sf).await;
        let (intent, received, refunded) = p.sb.intent_state(pi).expect("intent");
        let money_held = intent == "requires_capture" || received != refunded;
        if status.as_deref() != Some("cancelled") || money_held {
            open.push(format!(
                "{sf}: {status:?}, intent {intent} received {received} refunded {refunded}"
            ));
        }
    }
    open
}

#[tokio::test]
async fn a_cancel_sent_right_after_its_order_cancels_it_every_time_across_two_processes() {
    let p = Pipeline::start_without_workers(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 1_000).await;
    let _workers = Reaper(vec![p.spawn_worker(&[]), p.spawn_worker(&[])]);
    let mut ids = Vec::new();
    for i in 0..N {
        let sf = format!("SF-OC-{i}");
        let msg = p.order(&sf, &[("m1", "A", 1, 500)], "requires_capture");
        let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
        p.send(&msg).await;
        p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": sf}))
            .await;
        ids.push((sf, pi));
    }
    eventually(
        Duration::from_secs(90),
        "every order cancelled, its money released",
        || async { open_cancellations(&p, &ids).await.is_empty() },
    )
    .await;
    assert_eq!(rejected(&p).await, vec![], "no cancel refused");
    drop(_workers);
    p.stop().await;
}

#[tokio::test]
async fn a_decision_sent_right_after_its_order_applies_every_time_across_two_processes() {
    let p = Pipeline::start_without_workers(&[]).await;
    p.merchant("m1", "manual", "reject", 3600).await;
    p.stock("m1", "A", 1_000).await;
    let _workers = Reaper(vec![p.spawn_worker(&[]), p.spawn_worker(&[])]);
    for i in 0..N {
        let sf = format!("SF-OD-{i}");
        p.send(&p.order(&sf, &[("m1", "A", 1, 500)], "requires_capture"))
            .await;
        p.send(
            &json!({"type": "merchant.decision", "version": 1, "storefront_order_id": sf,
            "merchant_id": "m1", "decision": "accept"}),
        )
        .await;
    }
    eventually(Duration::from_secs(90), "every sub-order accepted", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sub_orders WHERE status = 'accepted'")
            .fetch_one(&p.env.app.pool)
            .await
            .unwrap();
        n as usize == N
    })
    .await;
    assert_eq!(rejected(&p).await, vec![], "no decision refused");
    let by_merchant: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_events WHERE type = 'sub_order.accepted' AND actor = 'merchant:m1'",
    )
    .fetch_one(&p.env.app.pool)
    .await
    .unwrap();
    assert_eq!(
        by_merchant as usize, N,
        "accepted by the merchant, not by a default"
    );
    drop(_workers);
    p.stop().await;
}

#[tokio::test]
async fn a_stock_adjust_sent_right_after_its_set_applies_every_time_across_two_processes() {
    let p = Pipeline::start_without_workers(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    let _workers = Reaper(vec![p.spawn_worker(&[]), p.spawn_worker(&[])]);
    for i in 0..2 * N {
        let sku = format!("SKU-{i}");
        p.send(
            &json!({"type": "inventory.set", "version": 1, "merchant_id": "m1", "sku": sku, "on_hand": 10}),
        )
        .await;
        p.send(
            &json!({"type": "inventory.adjust", "version": 1, "merchant_id": "m1", "sku": sku, "delta": -3}),
        )
        .await;
    }
    eventually(Duration::from_secs(60), "every SKU at 7", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM stock WHERE merchant_id = 'm1' AND on_hand = 7")
                .fetch_one(&p.env.app.pool)
                .await
                .unwrap();
        n as usize == 2 * N
    })
    .await;
    assert_eq!(rejected(&p).await, vec![], "no adjust refused");
    let tens: i64 = sqlx::query_scalar("SELECT count(*) FROM stock WHERE on_hand <> 7")
        .fetch_one(&p.env.app.pool)
        .await
        .unwrap();
    assert_eq!(tens, 0);
    drop(_workers);
    p.stop().await;
}

#[tokio::test]
async fn a_cancel_waits_while_its_order_is_stuck_with_a_dead_consumer() {
    let p = Pipeline::start_without_workers(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    let msg = p.order("SF-KILL", &[("m1", "A", 1, 500)], "requires_capture");
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // The first process takes the order and dies before storing it: the entry stays pending
    // with a dead consumer until the reclaim bound, and the order is unknown meanwhile.
    let mut first = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "intake.received")])]);
    p.send(&msg).await;
    eventually(
        Duration::from_secs(60),
        "the first worker died at intake.received",
        || {
            let dead = first.0[0].try_wait().ok().flatten().is_some();
            async move { dead }
        },
    )
    .await;
    p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-KILL"}))
        .await;
    let _second = Reaper(vec![p.spawn_worker(&[])]);
    eventually(
        Duration::from_secs(60),
        "the order cancelled and its money released",
        || async {
            open_cancellations(&p, &[("SF-KILL".to_owned(), pi.clone())])
                .await
                .is_empty()
        },
    )
    .await;
    assert_eq!(rejected(&p).await, vec![], "the cancel was not refused");
    let groups: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{souk.storefront.v1}}:g*", p.env.prefix))
        .query_async(&mut p.env.redis())
        .await
        .unwrap();
    assert_eq!(groups, Vec::<String>::new(), "every group released");
    drop(_second);
    p.stop().await;
}
