//! Merchant webhooks under trouble: endpoints down, slow, rate limiting or gone never hold up
//! the others; deliveries over a merchant's limit wait in line.

use std::{collections::BTreeMap, time::Duration};

use souk::{jobs::notify_merchant, sandbox::EndpointSettings, store::merchants};

use crate::support::eventually;
use crate::support::pipeline::Pipeline;

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
    tokio::time::sleep(Duration::from_millis(300)).await; // the endpoint stays rate limiting for a while
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
async fn a_merchant_urls_token_is_never_stored_or_shown_in_clear() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m-tok", "auto", "accept", 3600).await;
    p.stock("m-tok", "A", 5).await;
    // Nothing listens there: the attempt fails with an error that names the URL.
    let port = crate::support::free_port();
    let url = format!("http://hook-user:pw@127.0.0.1:{port}/hook?token=s3cr3t-value");
    sqlx::query("UPDATE merchants SET webhook_url = $1 WHERE id = 'm-tok'")
        .bind(&url)
        .execute(&p.env.app.pool)
        .await
        .unwrap();
    p.send(&p.order("SF-TOK", &[("m-tok", "A", 1, 100)], "requires_capture"))
        .await;
    let pool = &p.env.app.pool;
    eventually(Duration::from_secs(20), "a failed attempt recorded", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_attempts WHERE error IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap()
            > 0
    })
    .await;
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM webhook_attempts WHERE error IS NOT NULL")
            .fetch_all(pool)
            .await
            .unwrap();
    for e in &errors {
        assert!(
            !e.contains("s3cr3t") && !e.contains(":pw@"),
            "stored in clear: {e}"
        );
    }
    let shown = serde_json::to_string(&merchants::list(pool).await.unwrap()).unwrap();
    assert!(!shown.contains("s3cr3t") && !shown.contains(":pw@"), "{shown}");
    assert!(shown.contains("token=***"), "{shown}");
    p.stop().await;
}

/// Each published schema's example validates against it, every event type souk sends has a
/// schema, and the validator really refuses a body off its schema.
#[test]
fn every_webhook_type_has_a_schema_whose_example_validates() {
    use crate::support::schema::{check_webhook, webhook_schemas};
    let schemas = webhook_schemas();
    for (t, schema) in &schemas {
        let examples = schema["examples"]
            .as_array()
            .unwrap_or_else(|| panic!("{t}: no example"));
        assert!(!examples.is_empty(), "{t}");
        for e in examples {
            check_webhook(&schemas, e).unwrap();
        }
    }
    let sent = [
        "sub_order.created",
        "sub_order.accepted",
        "sub_order.rejected",
        "sub_order.cancelled",
        "sub_order.late",
        "shipment.status_changed",
        "return.requested",
        "return.approved",
        "return.refused",
        "return.received",
        "return.refunded",
        "complaint.opened",
        "complaint.message",
        "complaint.escalated",
        "complaint.closed",
        "forecast.stock_risk",
    ];
    assert_eq!(schemas.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut s = sent.to_vec();
        s.sort();
        s
    });
    let mut off = schemas["sub_order.cancelled"]["examples"][0].clone();
    off["data"]["details"] = serde_json::json!({"code": "x"});
    assert!(check_webhook(&schemas, &off)
        .unwrap_err()
        .contains("unexpected field details"));
    off["data"].as_object_mut().unwrap().remove("details");
    off["data"].as_object_mut().unwrap().remove("code");
    assert!(check_webhook(&schemas, &off)
        .unwrap_err()
        .contains("missing code"));
}

/// A merchant on version 1 keeps the first shape until it is moved; then it gets version 2.
#[tokio::test]
async fn a_merchant_moves_from_webhook_version_1_to_2() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m-old", "manual", "accept", 3600).await;
    p.stock("m-old", "A", 5).await;
    let set = |v: i16| merchants::MerchantInput {
        webhook_version: Some(v),
        ..Default::default()
    };
    souk::admin::update_merchant(&p.env.app, "m-old", &set(1))
        .await
        .unwrap();
    let bodies = || -> Vec<serde_json::Value> {
        p.sb.received_bodies()
            .iter()
            .map(|(_, b)| serde_json::from_str(b).unwrap())
            .collect()
    };
    p.send(&p.order("SF-V1", &[("m-old", "A", 1, 100)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "the v1 webhook", || async {
        bodies().len() == 1
    })
    .await;
    p.send(&serde_json::json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-V1"}))
        .await;
    eventually(Duration::from_secs(20), "the v1 cancellation", || async {
        bodies().len() == 2
    })
    .await;
    let v1 = bodies();
    assert!(v1.iter().all(|b| b.get("version").is_none()), "{v1:?}");
    let cancelled = v1.iter().find(|b| b["type"] == "sub_order.cancelled").unwrap();
    assert_eq!(
        cancelled["data"]["details"]["code"], "cancelled_by_storefront",
        "v1 nests details"
    );

    souk::admin::update_merchant(&p.env.app, "m-old", &set(2))
        .await
        .unwrap();
    assert!(souk::admin::update_merchant(&p.env.app, "m-old", &set(3))
        .await
        .is_err());
    p.send(&p.order("SF-V2", &[("m-old", "A", 1, 100)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "the v2 webhook", || async {
        bodies().len() == 3
    })
    .await;
    let v2 = bodies()
        .into_iter()
        .find(|b| b["data"]["storefront_order_id"] == "SF-V2")
        .unwrap();
    assert_eq!(v2["version"], 2);
    crate::support::schema::check_webhook(&crate::support::schema::webhook_schemas(), &v2).unwrap();
    p.stop().await;
}

#[test]
fn the_outcome_schemas_examples_validate() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/schema/outcome-event.v1.json")).unwrap();
    for e in schema["examples"].as_array().unwrap() {
        assert_eq!(crate::support::schema::errors(&schema, e), Vec::<String>::new());
    }
}
