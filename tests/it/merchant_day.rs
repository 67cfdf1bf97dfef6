//! A merchant's whole day through its API alone (a new order accepted, shipped in two parcels
//! tracked to delivery, a return approved and received, a complaint answered), then every route
//! of the API tried with another merchant's key against the first merchant's resources.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{json, Value};
use souk::merchant_api::keys::{self, Scope};

use crate::support::{
    eventually,
    pipeline::{delivered_number, Pipeline},
    serve_merchant_api,
};

/// One merchant's client of the API.
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", format!("k-{}", fastrand::u64(..)))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A request whose body is a file (CSV), not JSON.
    async fn upload(&self, path: &str, kind: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", format!("k-{}", fastrand::u64(..)))
            .header("content-type", kind)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A POST that must be applied: 200 with the operation applied (or 202, then polled).
    async fn applied(&self, path: &str, body: Value) {
        let (status, v) = self.send("POST", path, &body).await;
        let op = match status {
            200 => return assert_eq!(v["operation"]["status"], "applied", "{path}: {v}"),
            202 => v["operation"]["id"].as_str().unwrap().to_owned(),
            _ => panic!("{path}: {status} {v}"),
        };
        eventually(Duration::from_secs(20), "the operation applied", || async {
            self.get(&format!("/merchant/v1/operations/{op}")).await.1["status"] == "applied"
        })
        .await;
    }
}

#[tokio::test]
async fn a_merchants_day_through_its_api_and_no_route_opens_another_merchants_data() {
    let p = Pipeline::start(&[
        ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
        ("SOUK_TRACKING__POLL_MOVING_S", "1"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
        // This test polls the API as fast as it likes; the limit is tested in merchant_api.rs.
        ("SOUK_MERCHANT_API__REQUESTS_PER_MINUTE", "100000"),
    ])
    .await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(200);
    p.merchant("m-day", "manual", "reject", 3600).await;
    p.merchant("m-other", "manual", "reject", 3600).await;
    p.stock("m-day", "A", 10).await;
    p.stock("m-day", "B", 10).await;
    p.stock("m-other", "O", 10).await;
    let base = serve_merchant_api(&p.env.app).await;
    let pool = &p.env.app.pool;
    let api = |key: String| Api {
        base: base.clone(),
        key,
        http: reqwest::Client::new(),
    };
    let me = api(keys::create(pool, "m-day", Scope::Act, None).await.unwrap().key);
    let other = api(keys::create(pool, "m-other", Scope::Act, None).await.unwrap().key);

    // Morning: a paid order waits for the merchant.
    p.send(&p.order(
        "SF-DAY",
        &[
            ("m-day", "A", 2, 1200),
            ("m-day", "B", 1, 800),
            ("m-other", "O", 1, 500),
        ],
        "requires_capture",
    ))
    .await;
    let waiting = || async {
        me.get("/merchant/v1/sub-orders?state=awaiting_acceptance")
            .await
            .1["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(20), "the order waits for m-day", || async {
        waiting().await.len() == 1
    })
    .await;
    let sub = waiting().await[0]["id"].as_i64().unwrap();
    me.applied(&format!("/merchant/v1/sub-orders/{sub}/accept"), json!({}))
        .await;
    let (_, one) = me.get(&format!("/merchant/v1/sub-orders/{sub}")).await;
    assert_eq!(one["state"], "to_ship", "{one}");
    assert!(one["ship_by"].is_string(), "{one}");
    assert_eq!(one["shipping_address"]["city"], "Lyon");

    // Two parcels, one per line, each tracked to delivery.
    let parcels = [delivered_number("DAYA"), delivered_number("DAYB")];
    me.applied(
        &format!("/merchant/v1/sub-orders/{sub}/shipments"),
        json!({"tracking_number": parcels[0], "carrier": "ups", "lines": [{"sku": "A", "quantity": 2}]}),
    )
    .await;
    let (_, one) = me.get(&format!("/merchant/v1/sub-orders/{sub}")).await;
    assert_eq!(one["state"], "to_ship", "one line still to ship: {one}");
    me.applied(
        &format!("/merchant/v1/sub-orders/{sub}/shipments"),
        json!({"tracking_number": parcels[1], "carrier": "ups"}),
    )
    .await;
    let mut last = Value::Null;
    for _ in 0..400 {
        last = me.get(&format!("/merchant/v1/sub-orders/{sub}")).await.1;
        if last["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut shipments: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT tracking_number, status, concat(polls, ' polls, last ', last_polled_at) FROM shipments ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    shipments.truncate(4);
    assert_eq!(
        last["state"], "delivered",
        "both parcels delivered within 40 s: {last} {shipments:?}"
    );
    let (_, one) = me.get(&format!("/merchant/v1/sub-orders/{sub}")).await;
    let tracked: Vec<&Value> = one["shipments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["tracking_number"])
        .collect();
    assert_eq!(tracked, [&json!(parcels[0]), &json!(parcels[1])], "{one}");

    // Afternoon: a return of one A, approved and received sellable.
    p.send(&json!({"type": "return.requested", "version": 1, "return_id": "RMA-DAY", "storefront_order_id": "SF-DAY",
                   "merchant_id": "m-day", "lines": [{"sku": "A", "quantity": 1}], "reason": "too small"}))
        .await;
    eventually(Duration::from_secs(10), "the return listed", || async {
        me.get("/merchant/v1/returns?status=requested").await.1["data"][0]["id"] == "RMA-DAY"
    })
    .await;
    me.applied(
        "/merchant/v1/returns/RMA-DAY/decision",
        json!({"decision": "approve"}),
    )
    .await;
    me.applied(
        "/merchant/v1/returns/RMA-DAY/receipt",
        json!({"sellable": true, "note": "as new"}),
    )
    .await;
    assert_eq!(me.get("/merchant/v1/stock/A").await.1["on_hand"], 9, "10 − 2 + 1");

    // A complaint, answered.
    p.send(&json!({"type": "complaint.opened", "version": 1, "complaint_id": "CASE-DAY", "storefront_order_id": "SF-DAY",
                   "merchant_id": "m-day", "subject": "box", "message": "the box was dented"}))
        .await;
    eventually(Duration::from_secs(10), "the complaint listed", || async {
        me.get("/merchant/v1/complaints").await.1["data"][0]["id"] == "CASE-DAY"
    })
    .await;
    me.applied(
        "/merchant/v1/complaints/CASE-DAY/messages",
        json!({"message": "sorry, a voucher is on its way"}),
    )
    .await;
    let (_, case) = me.get("/merchant/v1/complaints/CASE-DAY").await;
    assert_eq!(case["status"], "answered", "{case}");

    // Every webhook of the day reached the merchant's endpoint and verified there.
    eventually(Duration::from_secs(20), "every webhook delivered", || async {
        let (_, d) = me.get("/merchant/v1/webhooks/deliveries?limit=200").await;
        let d = d["data"].as_array().cloned().unwrap_or_default();
        !d.is_empty() && d.iter().all(|x| x["status"] == "delivered")
    })
    .await;
    p.quiet().await;
    let report = p.sb.endpoint_report("m-day");
    assert_eq!(report.bad_signatures, 0);
    let kinds: Vec<&str> = report.events.iter().map(|e| e.1.as_str()).collect();
    for kind in ["sub_order.created", "return.requested", "complaint.opened"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            1,
            "{kind} in {kinds:?}"
        );
    }

    // The storefront's outcome stream shows each of the merchant's steps once.
    let mut steps: BTreeMap<String, usize> = BTreeMap::new();
    for t in p.outcome_types("SF-DAY").await {
        *steps.entry(t).or_default() += 1;
    }
    for (step, n) in [
        ("sub_order.accepted", 1),
        ("shipment.created", 2),
        ("shipment.delivered", 2),
        ("return.approved", 1),
        ("return.received", 1),
        ("return.refunded", 1),
        ("return.restocked", 1),
        ("order.refunded", 1),
        ("complaint.opened", 1),
        ("complaint.message", 1),
    ] {
        assert_eq!(steps.get(step).copied(), Some(n), "{step} in {steps:?}");
    }

    isolation(&p, &me, &other, sub).await;
    stream_commands_check_the_case_owner(&p, &me).await;
    p.stop().await;
}

/// On the storefront stream too, a merchant-side command must name its merchant, and that
/// merchant must own the case.
async fn stream_commands_check_the_case_owner(p: &Pipeline, me: &Api) {
    let refused = |code: &'static str| async move {
        p.scalar("SELECT count(*) FROM rejected_messages WHERE code = $1", code)
            .await
    };
    p.send(
        &json!({"type": "complaint.message", "version": 1, "complaint_id": "CASE-DAY", "author": "merchant",
                   "merchant_id": "m-other", "message": "I am not the seller"}),
    )
    .await;
    p.send(
        &json!({"type": "complaint.message", "version": 1, "complaint_id": "CASE-DAY", "author": "merchant",
                   "message": "who am I?"}),
    )
    .await;
    p.send(
        &json!({"type": "complaint.closed", "version": 1, "complaint_id": "CASE-DAY", "by": "merchant",
                   "resolution": "closed by the wrong seller", "merchant_id": "m-other"}),
    )
    .await;
    p.send(
        &json!({"type": "return.received", "version": 1, "return_id": "RMA-DAY", "sellable": true,
                   "merchant_id": "m-other"}),
    )
    .await;
    eventually(Duration::from_secs(10), "four commands refused", || async {
        refused("not_your_case").await == 3 && refused("merchant_required").await == 1
    })
    .await;
    p.quiet().await;
    let (_, case) = me.get("/merchant/v1/complaints/CASE-DAY").await;
    assert_eq!(case["messages"].as_array().unwrap().len(), 2, "{case}");
    assert_eq!(case["status"], "answered", "{case}");
    assert_eq!(
        me.get("/merchant/v1/stock/A").await.1["on_hand"],
        9,
        "restocked once"
    );
}

/// Every route of the API, called with `other`'s key on `me`'s resources: a 404 where it names
/// one, none of `me`'s data in a list, nothing of `me`'s changed by an action.
async fn isolation(p: &Pipeline, me: &Api, other: &Api, sub: i64) {
    let (_, d) = me.get("/merchant/v1/webhooks/deliveries?limit=1").await;
    let delivery = d["data"][0]["id"].as_str().unwrap().to_owned();
    let (_, ops) = me
        .send("POST", "/merchant/v1/stock/B/adjustments", &json!({"delta": 0}))
        .await;
    let op = ops["operation"]["id"].as_str().unwrap().to_owned();
    let (_, secret_before) = me.get("/merchant/v1/webhooks/secret").await;
    let stock_before = me.get("/merchant/v1/stock/A").await.1;
    let mut tried = 0;
    for (method, route) in souk::merchant_api::ROUTES {
        // The first merchant's resource of the route's kind.
        let id = [
            ("/sub-orders/", sub.to_string()),
            ("/returns/", "RMA-DAY".to_owned()),
            ("/complaints/", "CASE-DAY".to_owned()),
            ("/deliveries/", delivery.clone()),
            ("/operations/", op.clone()),
        ]
        .into_iter()
        .find(|(kind, _)| route.contains(kind))
        .map(|(_, id)| id)
        .unwrap_or_default();
        let path = route.replace("{id}", &id).replace("{sku}", "A");
        let (status, v) = match (*method, *route) {
            ("GET", _) => other.get(&path).await,
            // The caller's own forecast inputs: its files and settings, never another's.
            (_, "/merchant/v1/forecasts/history") => {
                other
                    .upload(&path, "text/csv", "sku,date,units\nOWN,2026-11-01,1\n")
                    .await
            }
            (_, "/merchant/v1/forecasts/calendar") => {
                other
                    .upload(&path, "text/csv", "kind,from\nholiday,2026-12-25\n")
                    .await
            }
            (_, "/merchant/v1/forecasts/time-zone") => {
                other
                    .send("PUT", &path, &json!({"time_zone": "Asia/Shanghai"}))
                    .await
            }
            (_, "/merchant/v1/forecasts/country") => {
                other.send("PUT", &path, &json!({"country": "CN"})).await
            }
            (_, "/merchant/v1/forecasts/period") => other.send("PUT", &path, &json!({"period": "day"})).await,
            ("PUT", _) => other.send("PUT", &path, &json!({"on_hand": 1})).await,
            (_, r) if r.ends_with("/reject") => other.send("POST", &path, &json!({"reason": "x"})).await,
            (_, r) if r.ends_with("/shipments") => {
                other
                    .send("POST", &path, &json!({"tracking_number": "1Z999AA10123456784"}))
                    .await
            }
            (_, r) if r.ends_with("/decision") => {
                other.send("POST", &path, &json!({"decision": "refuse"})).await
            }
            (_, r) if r.ends_with("/receipt") => other.send("POST", &path, &json!({"sellable": false})).await,
            (_, r) if r.ends_with("/messages") => {
                other.send("POST", &path, &json!({"message": "not mine"})).await
            }
            (_, r) if r.ends_with("/adjustments") => other.send("POST", &path, &json!({"delta": -5})).await,
            (_, r) if r.ends_with("/webhooks/replay") => {
                other
                    .send("POST", &path, &json!({"since": "2000-01-01T00:00:00Z"}))
                    .await
            }
            _ => other.send("POST", &path, &json!({})).await,
        };
        tried += 1;
        if let Some(rows) = v["data"].as_array() {
            assert!(rows.iter().all(|r| r["id"] != json!(sub)), "{path}: {v}");
        }
        let text = v.to_string();
        let names_a_resource = route.contains('{');
        match (*method, *route) {
            // SKUs are per merchant: the caller's own SKU "A" is made, never the first's read.
            ("GET", "/merchant/v1/stock/{sku}") => assert_eq!(status, 404, "{path}: {v}"),
            (_, "/merchant/v1/stock/{sku}" | "/merchant/v1/stock/{sku}/adjustments") => {
                assert!(status < 300 || status == 409, "{method} {path}: {status} {v}")
            }
            _ if names_a_resource => {
                assert_eq!(status, 404, "{method} {path} with another merchant's key: {v}")
            }
            // Collections and the caller's own settings: 2xx, none of me's data.
            _ => assert!(status < 300, "{method} {path}: {status} {v}"),
        }
        // (The order is shared: both merchants see SF-DAY, each its own sub-order of it.)
        for leak in ["m-day", "RMA-DAY", "CASE-DAY", "DAYA", "DAYB", &delivery, &op] {
            assert!(!text.contains(leak), "{method} {path} shows {leak}: {text}");
        }
    }
    assert_eq!(tried, souk::merchant_api::ROUTES.len());
    // Nothing of me's moved.
    p.quiet().await;
    assert_eq!(me.get("/merchant/v1/stock/A").await.1, stock_before);
    assert_eq!(me.get("/merchant/v1/webhooks/secret").await.1, secret_before);
    let (_, one) = me.get(&format!("/merchant/v1/sub-orders/{sub}")).await;
    assert_eq!(one["state"], "delivered");
    let (_, r) = me.get("/merchant/v1/returns").await;
    assert!(
        matches!(r["data"][0]["status"].as_str(), Some("received" | "refunded")),
        "{r}"
    );
    let (_, case) = me.get("/merchant/v1/complaints/CASE-DAY").await;
    assert_eq!(case["messages"].as_array().unwrap().len(), 2, "{case}");
}
