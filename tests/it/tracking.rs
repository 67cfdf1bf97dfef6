//! Shipping and tracking: parcels followed to their end through each provider, verified
//! pushes, the ship-by flag, and the fleet-wide rate limit shared by processes.

use std::time::Duration;

use serde_json::{json, Value};
use souk::admin;

use crate::support::eventually;
use crate::support::pipeline::{Pipeline, KEY};

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
    p.quiet().await;
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

    // Delivered a while ago (past the 1 s completion delay): the sweeper completes the sub-order.
    tokio::time::sleep(Duration::from_millis(1100)).await;
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
    tokio::time::sleep(Duration::from_millis(1500)).await; // a window of several 1 s poll intervals
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
    p.quiet().await;
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
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the 1 s ship-by deadline
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
    p.quiet().await;
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

#[tokio::test]
async fn replayed_pushes_leave_at_most_one_push_triggered_poll_waiting_per_shipment() {
    use souk::{domain::ids::ShipmentId, enqueue};
    let p = Pipeline::start_without_workers(&[]).await;
    let app = &p.env.app;
    let (a, b) = (ShipmentId(7), ShipmentId(8));
    let mut pushed = 0;
    for _ in 0..50 {
        pushed += usize::from(enqueue::poll_hint(app, a).await.unwrap());
    }
    assert_eq!(pushed, 1, "50 replays, one poll waiting");
    assert!(
        enqueue::poll_hint(app, b).await.unwrap(),
        "another shipment has its own"
    );
    let keys = app.producer.keys(enqueue::TRACK_SHIPMENT);
    let waiting = souk::queue::stats::queue_stats(&mut p.env.redis(), &keys)
        .await
        .unwrap()
        .waiting;
    assert_eq!(waiting, 2);
    // Once that poll starts, news after it gets a poll of its own.
    enqueue::hint_started(app, a).await.unwrap();
    assert!(enqueue::poll_hint(app, a).await.unwrap());
    assert!(!enqueue::poll_hint(app, a).await.unwrap());
    p.stop().await;
}
