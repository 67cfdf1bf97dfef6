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
