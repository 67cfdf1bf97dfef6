//! Money integrity at intake and payment: the intent must cover the order in its currency and
//! back no other order, a changed resend is a conflict, and an order in which nothing ships
//! says why (docs/storefront.md, "Payment" and "Why an order was cancelled").

use std::time::Duration;

use serde_json::{json, Value};
use souk::store::merchants;

use crate::support::eventually;
use crate::support::pipeline::Pipeline;

/// `p.order(...)` paid with `pi` instead of the intent it made.
fn paid_with(p: &Pipeline, id: &str, lines: &[(&str, &str, i64, i64)], pi: &str) -> Value {
    let mut msg = p.order(id, lines, "requires_capture");
    msg["order"]["payment"]["payment_id"] = json!(pi);
    msg
}

/// The code on the order's `order.cancelled` event, once it has one.
async fn cancel_code(p: &Pipeline, sf: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT data->>'code' FROM order_events WHERE storefront_order_id = $1 AND type = 'order.cancelled'",
    )
    .bind(sf)
    .fetch_optional(&p.env.app.pool)
    .await
    .unwrap()
}

async fn rejections(p: &Pipeline, sf: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT code FROM rejected_messages WHERE storefront_order_id = $1 ORDER BY id")
        .bind(sf)
        .fetch_all(&p.env.app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_payment_that_does_not_cover_its_order_is_refused_and_released() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    let short = p.sb.create_intent(500, "eur", "requires_capture", None);
    let usd = p.sb.create_intent(1000, "usd", "requires_capture", None);
    let paid_short = p.sb.create_intent(500, "eur", "succeeded", None);
    let huge = p.sb.create_intent(1000, "eur", "requires_capture", None);
    let over = p.sb.create_intent(1500, "eur", "requires_capture", None);
    p.send(&paid_with(&p, "SF-SHORT", &[("m1", "A", 1, 1000)], &short))
        .await;
    p.send(&paid_with(&p, "SF-USD", &[("m1", "A", 1, 1000)], &usd))
        .await;
    p.send(&paid_with(
        &p,
        "SF-PAID-SHORT",
        &[("m1", "A", 1, 1000)],
        &paid_short,
    ))
    .await;
    p.send(&paid_with(&p, "SF-HUGE", &[("m1", "A", 1, (1 << 53) + 1)], &huge))
        .await;
    p.send(&paid_with(&p, "SF-OVER", &[("m1", "A", 1, 1000)], &over))
        .await;

    let want = [
        (
            "SF-SHORT",
            "payment_amount_mismatch",
            short.as_str(),
            ("canceled", 0, 0),
        ),
        (
            "SF-USD",
            "payment_currency_mismatch",
            usd.as_str(),
            ("canceled", 0, 0),
        ),
        (
            "SF-PAID-SHORT",
            "payment_amount_mismatch",
            paid_short.as_str(),
            ("succeeded", 500, 500),
        ),
        (
            "SF-HUGE",
            "payment_amount_mismatch",
            huge.as_str(),
            ("canceled", 0, 0),
        ),
    ];
    for (sf, code, pi, (status, received, refunded)) in want {
        eventually(
            Duration::from_secs(20),
            &format!("{sf} refused and its money released"),
            || async {
                cancel_code(&p, sf).await.as_deref() == Some(code)
                    && p.sb.intent_state(pi) == Some((status.into(), received, refunded))
            },
        )
        .await;
        assert_eq!(p.order_status(sf).await.as_deref(), Some("cancelled"), "{sf}");
        assert_eq!(
            p.scalar(
                "SELECT count(*) FROM reservations r JOIN sub_orders s ON s.id = r.sub_order_id
                 JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id = $1",
                sf
            )
            .await,
            0,
            "{sf}: nothing reserved"
        );
        eventually(
            Duration::from_secs(10),
            &format!("{sf}: the storefront told"),
            || async { p.outcome_types(sf).await.iter().any(|t| t == "order.cancelled") },
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "the over-authorised order captured",
        || async { p.order_status("SF-OVER").await.as_deref() == Some("captured") },
    )
    .await;
    assert_eq!(
        p.sb.intent_state(&over),
        Some(("succeeded".into(), 1000, 0)),
        "only what ships is captured from an over-authorisation"
    );
    assert_eq!(
        merchants::stock(&p.env.app.pool, "m1", "A").await.unwrap(),
        Some((9, 0)),
        "only the covered order took stock"
    );
    p.stop().await;
}

#[tokio::test]
async fn one_payment_backs_one_order_and_a_changed_resend_is_a_conflict() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    p.stock("m1", "B", 10).await;
    let first = p.order(
        "SF-A",
        &[("m1", "A", 1, 1000), ("m1", "B", 1, 500)],
        "requires_capture",
    );
    let pi = first["order"]["payment"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.send(&first).await;
    // Another order on the same intent.
    p.send(&paid_with(&p, "SF-B", &[("m1", "A", 1, 1000)], &pi)).await;
    eventually(Duration::from_secs(20), "the second order refused", || async {
        rejections(&p, "SF-B").await == ["payment_already_used"]
    })
    .await;
    eventually(Duration::from_secs(20), "the first order captured", || async {
        p.order_status("SF-A").await.as_deref() == Some("captured")
    })
    .await;
    assert_eq!(p.order_status("SF-B").await, None, "not stored");
    assert_eq!(
        p.sb.intent_state(&pi),
        Some(("succeeded".into(), 1500, 0)),
        "the intent left to the first order"
    );
    eventually(
        Duration::from_secs(10),
        "the storefront told of the refusal",
        || async {
            p.outcome_types("SF-B")
                .await
                .iter()
                .any(|t| t == "message.rejected")
        },
    )
    .await;

    // The same id resent with other content and its own intent: a conflict, that intent released.
    let changed = p.order(
        "SF-A",
        &[("m1", "A", 2, 1000), ("m1", "B", 1, 500)],
        "requires_capture",
    );
    let pi2 = changed["order"]["payment"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.send(&changed).await;
    eventually(Duration::from_secs(20), "the changed resend refused", || async {
        rejections(&p, "SF-A").await == ["order_conflict"]
    })
    .await;
    assert_eq!(p.sb.intent_state(&pi2), Some(("canceled".into(), 0, 0)));
    assert_eq!(
        p.sb.intent_state(&pi),
        Some(("succeeded".into(), 1500, 0)),
        "the first untouched"
    );

    // The same content written differently (key order, whitespace, line order) is a resend.
    let o = &first["order"];
    let raw = format!(
        "{{ \"version\" : 1,\n \"order\": {{\"placed_at\": {}, \"payment\": {{\"payment_id\": {}, \"provider\": \"stripe\"}},
          \"lines\": [{}, {}], \"currency\": \"EUR\", \"customer\": {{\"email\": \"c@example.org\", \"id\": \"c-1\"}},
          \"shipping_address\": {}, \"id\": \"SF-A\"}}, \"type\": \"order.placed\" }}",
        o["placed_at"], o["payment"]["payment_id"], o["lines"][1], o["lines"][0], o["shipping_address"]
    );
    p.env
        .app
        .producer
        .push_raw(souk::jobs::intake_storefront::QUEUE, &raw)
        .await
        .unwrap();
    // A cancel sent after it runs after it (one message group per order).
    p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-A"}))
        .await;
    eventually(Duration::from_secs(20), "the cancel applied", || async {
        p.order_status("SF-A").await.as_deref() == Some("cancelled")
    })
    .await;
    assert_eq!(
        rejections(&p, "SF-A").await,
        ["order_conflict"],
        "the rewritten resend is a duplicate"
    );
    assert_eq!(
        cancel_code(&p, "SF-A").await.as_deref(),
        Some("cancelled_by_storefront")
    );
    p.stop().await;
}

#[tokio::test]
async fn an_order_in_which_nothing_ships_says_why_and_a_free_order_ships() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m-auto", "auto", "accept", 3600).await;
    p.merchant("m-manual", "manual", "accept", 3600).await;
    p.merchant("m-late", "manual", "reject", 1).await;
    p.stock("m-auto", "A", 5).await;
    p.stock("m-manual", "B", 5).await;
    p.stock("m-late", "C", 5).await;

    let free = p.sb.create_intent(0, "eur", "requires_capture", None);
    p.send(&paid_with(&p, "SF-FREE", &[("m-auto", "A", 1, 0)], &free))
        .await;
    p.send(&p.order("SF-REJ", &[("m-manual", "B", 1, 700)], "requires_capture"))
        .await;
    p.send(&p.order("SF-LATE", &[("m-late", "C", 1, 900)], "requires_capture"))
        .await;
    p.send(&p.order("SF-NONE", &[("m-auto", "A", 9, 100)], "requires_capture"))
        .await;
    p.send(
        &json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-REJ",
                   "merchant_id": "m-manual", "decision": "reject", "reason": "discontinued"}),
    )
    .await;

    eventually(
        Duration::from_secs(20),
        "the free order handed to its merchant",
        || p.all_delivered("SF-FREE", 1),
    )
    .await;
    assert_eq!(p.sub_statuses("SF-FREE").await["m-auto"], "accepted");
    assert_eq!(
        cancel_code(&p, "SF-FREE").await,
        None,
        "a free order is not cancelled"
    );

    for (sf, code) in [
        ("SF-REJ", "rejected_by_merchants"),
        ("SF-LATE", "rejected_by_deadline"),
        ("SF-NONE", "out_of_stock"),
    ] {
        eventually(
            Duration::from_secs(20),
            &format!("{sf} cancelled as {code}"),
            || async { cancel_code(&p, sf).await.as_deref() == Some(code) },
        )
        .await;
    }
    // The merchant hears of the rejection souk made for it at the deadline, and the webhook
    // that started the wait named the deadline.
    eventually(
        Duration::from_secs(20),
        "the deadline's rejection delivered",
        || p.all_delivered("SF-LATE", 2),
    )
    .await;
    let late = p.sb.endpoint_report("m-late");
    let types: Vec<&str> = late.events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, ["sub_order.created", "sub_order.rejected"]);
    // New merchants get webhook version 2: one flat `data`, the version in the body.
    let rejected: Value =
        p.sb.received_bodies()
            .iter()
            .filter(|(m, _)| m == "m-late")
            .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap())
            .find(|b| b["type"] == "sub_order.rejected")
            .unwrap();
    assert_eq!(rejected["version"], 2);
    assert_eq!(rejected["data"]["decided_by"], "souk:deadline");
    assert!(rejected["data"].get("details").is_none());
    let created: Option<Value> = sqlx::query_scalar(
        "SELECT d.payload FROM webhook_deliveries d JOIN orders o ON o.id = d.order_id
         WHERE o.storefront_order_id = 'SF-LATE' AND d.event_type = 'sub_order.created'",
    )
    .fetch_optional(&p.env.app.pool)
    .await
    .unwrap();
    assert!(
        created.unwrap()["accept_by"].is_string(),
        "sub_order.created carries accept_by"
    );
    p.stop().await;
}
