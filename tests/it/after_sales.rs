//! After-sales end to end: returns (request, decision or its default, the return parcel tracked
//! back, refund once, restock once, reversal of a payout already made) and complaints (reply
//! deadline, escalation, every message kept, completion held while a case is open), through the
//! real Redis, PostgreSQL, workers and the sandbox over HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    eventually,
    pipeline::{delivered_number, Pipeline},
};

/// Polls every second, parcels move a step every 200 ms.
async fn start(extra: &[(&str, &str)]) -> Pipeline {
    let mut vars = vec![
        ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
        ("SOUK_TRACKING__POLL_MOVING_S", "1"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
    ];
    vars.extend_from_slice(extra);
    let p = Pipeline::start(&vars).await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(200);
    p
}

async fn ship_and_deliver(p: &Pipeline, sf: &str, merchant: &str) {
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": sf, "merchant_id": merchant,
                   "tracking_number": delivered_number(sf), "carrier": "ups"}),
    )
    .await;
    eventually(Duration::from_secs(30), "the parcel delivered", || async {
        p.scalar(
            "SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id = $1 AND s.delivery_status = 'delivered'",
            sf,
        )
        .await
            == 1
    })
    .await;
}

/// Places an order with one merchant (auto-accepting) and waits until it is accepted.
async fn accepted_order(p: &Pipeline, sf: &str, merchant: &str, lines: &[(&str, i64, i64)]) -> String {
    let l: Vec<(&str, &str, i64, i64)> = lines.iter().map(|(s, q, u)| (merchant, *s, *q, *u)).collect();
    let msg = p.order(sf, &l, "requires_capture");
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    p.send(&msg).await;
    eventually(Duration::from_secs(20), "the sub-order accepted", || async {
        p.sub_statuses(sf).await.get(merchant).map(String::as_str) == Some("accepted")
    })
    .await;
    pi
}

async fn return_row(p: &Pipeline, id: &str) -> Option<(i64, String, i64)> {
    sqlx::query_as("SELECT id, status, refund_minor FROM returns WHERE storefront_return_id = $1")
        .bind(id)
        .fetch_optional(&p.env.app.pool)
        .await
        .unwrap()
}

async fn refusals(p: &Pipeline, code: &str) -> i64 {
    p.scalar("SELECT count(*) FROM rejected_messages WHERE code = $1", code)
        .await
}

async fn stock_on_hand(p: &Pipeline, merchant: &str, sku: &str) -> i32 {
    sqlx::query_scalar("SELECT on_hand FROM stock WHERE merchant_id = $1 AND sku = $2")
        .bind(merchant)
        .bind(sku)
        .fetch_one(&p.env.app.pool)
        .await
        .unwrap()
}

async fn delivered_webhook(p: &Pipeline, id: &str) -> bool {
    sqlx::query_scalar::<_, String>("SELECT status FROM webhook_deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(&p.env.app.pool)
        .await
        .unwrap()
        .as_deref()
        == Some("delivered")
}

/// Every journal balances, and the money settled out of clearing equals what the provider kept
/// over all these payments (captured − refunded); returns the last payment's (captured, refunded).
async fn ledger_checks(p: &Pipeline, pis: &[&str]) -> (i64, i64) {
    let pool = &p.env.app.pool;
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT journal FROM ledger_entries GROUP BY journal HAVING sum(amount_minor) <> 0) j",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0, "every journal balances");
    let settled: i64 = sqlx::query_scalar(
        "SELECT coalesce(-sum(amount_minor), 0)::bigint FROM ledger_entries WHERE account = 'clearing'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let kept: i64 = pis
        .iter()
        .map(|pi| {
            let (_, received, refunded) = p.sb.intent_state(pi).unwrap();
            received - refunded
        })
        .sum();
    assert_eq!(
        settled, kept,
        "settled out of clearing = captured − refunded at the provider"
    );
    let (_, received, refunded) = p.sb.intent_state(pis.last().unwrap()).unwrap();
    (received, refunded)
}

#[tokio::test]
async fn a_return_is_approved_tracked_back_refunded_once_restocked_once_and_settled_net() {
    let p = start(&[]).await;
    p.merchant("m-ret", "auto", "accept", 3600).await;
    p.stock("m-ret", "A", 5).await;
    p.stock("m-ret", "B", 5).await;
    let pool = &p.env.app.pool;
    assert!(
        souk::store::settlement::set_payout_account(pool, "m-ret", Some("acct_ret"))
            .await
            .unwrap()
    );
    // 3 × 1,500 + 700 = 5,200; commission 10 % = 520.
    let pi = accepted_order(&p, "SF-RET", "m-ret", &[("A", 3, 1500), ("B", 1, 700)]).await;
    // Nothing comes back before it ships.
    let early = json!({"type": "return.requested", "version": 1, "return_id": "RMA-EARLY", "storefront_order_id": "SF-RET",
                       "merchant_id": "m-ret", "lines": [{"sku": "A", "quantity": 1}]});
    p.send(&early).await;
    eventually(
        Duration::from_secs(10),
        "a return before shipping refused",
        || async { refusals(&p, "not_returnable").await == 1 },
    )
    .await;
    ship_and_deliver(&p, "SF-RET", "m-ret").await;

    let request = json!({"type": "return.requested", "version": 1, "return_id": "RMA-1", "storefront_order_id": "SF-RET",
                         "merchant_id": "m-ret", "lines": [{"sku": "A", "quantity": 2}], "reason": "too small"});
    p.send(&request).await;
    p.send(&request).await; // the same request again: one return
    eventually(Duration::from_secs(10), "the return recorded", || async {
        return_row(&p, "RMA-1").await.is_some()
    })
    .await;
    let (rid, status, refund) = return_row(&p, "RMA-1").await.unwrap();
    assert_eq!((status.as_str(), refund), ("requested", 3000));
    eventually(
        Duration::from_secs(10),
        "the merchant told of the request",
        || async { delivered_webhook(&p, &format!("msg_ret{rid}_requested")).await },
    )
    .await;
    // More than is left, something not bought, or nothing: each refused with its reason.
    for (id, lines) in [
        ("RMA-2", json!([{"sku": "A", "quantity": 2}])),
        ("RMA-3", json!([{"sku": "Z", "quantity": 1}])),
        ("RMA-4", json!([])),
    ] {
        p.send(&json!({"type": "return.requested", "version": 1, "return_id": id, "storefront_order_id": "SF-RET",
                       "merchant_id": "m-ret", "lines": lines}))
            .await;
    }
    eventually(Duration::from_secs(10), "three bad requests refused", || async {
        refusals(&p, "invalid_return_lines").await == 3
    })
    .await;
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM returns WHERE storefront_return_id LIKE $1",
            "RMA-%"
        )
        .await,
        1
    );
    // Shipped back before approval: refused.
    let parcel = delivered_number("RET");
    let shipped = json!({"type": "return.shipped", "version": 1, "return_id": "RMA-1", "tracking_number": parcel, "carrier": "ups"});
    p.send(&shipped).await;
    eventually(
        Duration::from_secs(10),
        "a parcel for an unapproved return refused",
        || async { refusals(&p, "return_not_approved").await == 1 },
    )
    .await;
    p.send(&json!({"type": "return.decision", "version": 1, "return_id": "RMA-1", "decision": "approve"}))
        .await;
    eventually(Duration::from_secs(10), "approved", || async {
        return_row(&p, "RMA-1").await.unwrap().1 == "approved"
    })
    .await;
    // The return parcel is tracked; its delivery to the merchant is the receipt: refund.
    p.send(&shipped).await;
    eventually(Duration::from_secs(40), "received back and refunded", || async {
        return_row(&p, "RMA-1").await.unwrap().1 == "refunded"
    })
    .await;
    let (status, received, refunded) = p.sb.intent_state(&pi).unwrap();
    assert_eq!((status.as_str(), received, refunded), ("succeeded", 5200, 3000));
    assert_eq!(
        p.scalar(
            "SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id = $1 AND s.delivery_status = 'delivered'",
            "SF-RET"
        )
        .await,
        1,
        "the return parcel does not change the sub-order's delivery"
    );
    // The merchant says the goods can be sold again: back in stock, once.
    let before = stock_on_hand(&p, "m-ret", "A").await;
    let received_msg = json!({"type": "return.received", "version": 1, "return_id": "RMA-1", "sellable": true, "note": "fine"});
    p.send(&received_msg).await;
    p.send(&received_msg).await;
    eventually(Duration::from_secs(10), "restocked", || async {
        stock_on_hand(&p, "m-ret", "A").await == before + 2
    })
    .await;
    // Every step again: no second refund, no second restock.
    p.env
        .app
        .producer
        .push(
            souk::jobs::adjust_payment::QUEUE,
            &souk::jobs::adjust_payment::Args::new(souk::domain::ids::OrderId(
                sqlx::query_scalar("SELECT order_id FROM returns WHERE id = $1")
                    .bind(rid)
                    .fetch_one(pool)
                    .await
                    .unwrap(),
            )),
        )
        .await
        .unwrap();
    p.quiet().await;
    assert_eq!(stock_on_hand(&p, "m-ret", "A").await, before + 2);
    assert_eq!(p.sb.intent_state(&pi).unwrap().2, 3000);
    assert_eq!(p.sb.counters().get("refund").copied().unwrap_or(0), 1);
    for event in ["requested", "received", "refunded"] {
        let id = format!("msg_ret{rid}_{event}");
        eventually(Duration::from_secs(10), "return webhooks delivered", || async {
            delivered_webhook(&p, &id).await
        })
        .await;
    }
    // Merchants see the storefront's return id in every return webhook.
    let ids: Vec<Value> = sqlx::query_scalar(
        "SELECT payload->'details'->'return_id' FROM webhook_deliveries WHERE id LIKE 'msg_ret%' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(ids, vec![json!("RMA-1"); 3]);
    let types = p.outcome_types("SF-RET").await;
    for t in [
        "return.requested",
        "return.approved",
        "return.shipped",
        "return_shipment.delivered",
        "return.received",
        "return.refunded",
        "return.restocked",
    ] {
        assert_eq!(
            types.iter().filter(|x| *x == t).count(),
            1,
            "{t} once in {types:?}"
        );
    }
    // Another order, captured then cancelled by the storefront before shipping: refunded in
    // full, nothing settled.
    let cancelled_pi = accepted_order(&p, "SF-RET-CANCEL", "m-ret", &[("B", 2, 700)]).await;
    p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-RET-CANCEL", "reason": "changed my mind"}))
        .await;
    eventually(Duration::from_secs(20), "cancelled and refunded", || async {
        p.sb.intent_state(&cancelled_pi)
            .is_some_and(|s| s.1 == 1400 && s.2 == 1400)
    })
    .await;
    // Completion settles what was kept: 2,200 less its commission (520 − 300 given back).
    sqlx::query(
        "UPDATE sub_orders SET delivered_at = now() - interval '31 days' WHERE merchant_id = 'm-ret'",
    )
    .execute(pool)
    .await
    .unwrap();
    p.sweep().await;
    eventually(Duration::from_secs(20), "completed and paid out", || async {
        p.sb.transfers().len() == 1
    })
    .await;
    assert_eq!(p.sb.transfers()[0].1, 2200 - 220);
    ledger_checks(&p, &[&pi, &cancelled_pi]).await;
    // Late for another return: the window closed 30 days after delivery.
    p.send(&json!({"type": "return.requested", "version": 1, "return_id": "RMA-LATE", "storefront_order_id": "SF-RET",
                   "merchant_id": "m-ret", "lines": [{"sku": "B", "quantity": 1}]}))
        .await;
    eventually(Duration::from_secs(10), "a late return refused", || async {
        refusals(&p, "return_window_closed").await == 1
    })
    .await;
    let today = chrono::Utc::now().date_naive();
    souk::store::kpis::compute(pool, today, today).await.unwrap();
    let k = souk::store::kpis::summary(pool, "m-ret", today, today)
        .await
        .unwrap();
    assert_eq!(
        (k.return_rate, k.refund_rate, k.complaint_rate),
        (Some(1.0), Some(1.0), Some(0.0))
    );
    p.stop().await;
}

#[tokio::test]
async fn a_refund_after_payout_takes_the_merchants_share_back_from_the_transfer_once() {
    let p = start(&[
        ("SOUK_TRACKING__COMPLETE_AFTER_DELIVERY_S", "1"),
        ("SOUK_AFTER_SALES__RETURN_RESPONSE_S", "1"),
    ])
    .await;
    p.merchant("m-paid", "auto", "accept", 3600).await;
    p.stock("m-paid", "A", 5).await;
    let pool = &p.env.app.pool;
    assert!(
        souk::store::settlement::set_payout_account(pool, "m-paid", Some("acct_paid"))
            .await
            .unwrap()
    );
    let pi = accepted_order(&p, "SF-PAID", "m-paid", &[("A", 2, 1000)]).await;
    ship_and_deliver(&p, "SF-PAID", "m-paid").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s completion delay
    p.sweep().await;
    eventually(Duration::from_secs(20), "completed and paid out", || async {
        p.sb.transfers().len() == 1
    })
    .await;
    let transfer = p.sb.transfers()[0].clone();
    assert_eq!(transfer.1, 1800);
    // The customer returns one unit; the merchant stays silent, so the default (approve)
    // applies at the deadline and the merchant is told.
    p.send(&json!({"type": "return.requested", "version": 1, "return_id": "RMA-P", "storefront_order_id": "SF-PAID",
                   "merchant_id": "m-paid", "lines": [{"sku": "A", "quantity": 1}]}))
        .await;
    eventually(Duration::from_secs(10), "requested", || async {
        return_row(&p, "RMA-P").await.is_some()
    })
    .await;
    let rid = return_row(&p, "RMA-P").await.unwrap().0;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s return response deadline
    p.sweep().await;
    eventually(
        Duration::from_secs(10),
        "approved by default, merchant told",
        || async {
            return_row(&p, "RMA-P").await.unwrap().1 == "approved"
                && delivered_webhook(&p, &format!("msg_ret{rid}_approved")).await
        },
    )
    .await;
    let decided_by: String = sqlx::query_scalar("SELECT decided_by FROM returns WHERE id = $1")
        .bind(rid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(decided_by, "souk:deadline");
    let before = stock_on_hand(&p, "m-paid", "A").await;
    // Received without a tracked parcel, and not sellable: refund, no restock.
    p.send(&json!({"type": "return.received", "version": 1, "return_id": "RMA-P", "sellable": false}))
        .await;
    eventually(
        Duration::from_secs(20),
        "refunded and the payout reversed",
        || async { return_row(&p, "RMA-P").await.unwrap().1 == "refunded" && !p.sb.reversals().is_empty() },
    )
    .await;
    let reversals = p.sb.reversals();
    assert_eq!(reversals.len(), 1);
    assert_eq!(
        (reversals[0].1.as_str(), reversals[0].2),
        (transfer.0.as_str(), 900)
    );
    assert_eq!(stock_on_hand(&p, "m-paid", "A").await, before);
    eventually(Duration::from_secs(10), "the reversal recorded", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM payout_reversals")
            .fetch_one(pool)
            .await
            .unwrap()
            == "done"
    })
    .await;
    let (_, refunded) = ledger_checks(&p, &[&pi]).await;
    assert_eq!(refunded, 1000);
    let account = |a: &'static str| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_entries WHERE account = $1",
        )
        .bind(a)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(
        account("merchant_payable:m-paid").await,
        0,
        "owed nothing, owing nothing"
    );
    assert_eq!(
        account("payouts").await,
        1800 - 900,
        "= transfers − reversals at the provider"
    );
    assert_eq!(account("platform_commission").await, 200 - 100);
    // Again: the job finds its reversal done, the sweeper queues nothing new.
    p.env
        .app
        .producer
        .push(
            souk::jobs::reverse_payout::QUEUE,
            &souk::jobs::reverse_payout::Args {
                return_id: souk::domain::ids::ReturnId(rid),
            },
        )
        .await
        .unwrap();
    p.sweep().await;
    p.quiet().await;
    assert_eq!(p.sb.reversals().len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn an_unanswered_complaint_escalates_an_answered_one_does_not_and_both_hold_completion() {
    let p = start(&[
        ("SOUK_TRACKING__COMPLETE_AFTER_DELIVERY_S", "1"),
        ("SOUK_AFTER_SALES__COMPLAINT_REPLY_S", "3"),
    ])
    .await;
    p.merchant("m-cp", "auto", "accept", 3600).await;
    p.stock("m-cp", "A", 5).await;
    accepted_order(&p, "SF-CP", "m-cp", &[("A", 1, 2500)]).await;
    let open = |id: &str, subject: &str| {
        json!({"type": "complaint.opened", "version": 1, "complaint_id": id, "storefront_order_id": "SF-CP",
               "merchant_id": "m-cp", "subject": subject, "message": "where is my parcel?"})
    };
    p.send(&open("CASE-1", "late")).await;
    p.send(&open("CASE-1", "late")).await; // once
    p.send(&open("CASE-2", "damaged box")).await;
    p.send(&open("CASE-3", "")).await; // no subject: refused
    p.send(&json!({"type": "complaint.message", "version": 1, "complaint_id": "CASE-404", "author": "customer", "message": "hello?"}))
        .await;
    eventually(
        Duration::from_secs(10),
        "two cases opened, two messages refused",
        || async {
            p.scalar(
                "SELECT count(*) FROM complaints WHERE storefront_complaint_id LIKE $1",
                "CASE-%",
            )
            .await
                == 2
                && refusals(&p, "invalid_text").await == 1
                && refusals(&p, "unknown_complaint").await == 1
        },
    )
    .await;
    let status = |id: &'static str| {
        let pool = p.env.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT status FROM complaints WHERE storefront_complaint_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // The merchant answers CASE-2 in time; CASE-1 stays unanswered.
    p.send(
        &json!({"type": "complaint.message", "version": 1, "complaint_id": "CASE-2", "author": "merchant",
                   "merchant_id": "m-cp", "message": "a new box is on its way"}),
    )
    .await;
    eventually(Duration::from_secs(10), "CASE-2 answered", || async {
        status("CASE-2").await == "answered"
    })
    .await;
    ship_and_deliver(&p, "SF-CP", "m-cp").await;
    tokio::time::sleep(Duration::from_millis(3100)).await; // past the 3 s complaint reply deadline
    p.sweep().await;
    eventually(Duration::from_secs(10), "CASE-1 escalated", || async {
        status("CASE-1").await == "escalated"
    })
    .await;
    p.sweep().await;
    p.quiet().await;
    assert_eq!(status("CASE-2").await, "answered");
    let cp1: i64 = p
        .scalar(
            "SELECT id FROM complaints WHERE storefront_complaint_id = $1",
            "CASE-1",
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "the merchant told of the opening and the escalation",
        || async {
            delivered_webhook(&p, &format!("msg_cp{cp1}_opened")).await
                && delivered_webhook(&p, &format!("msg_cp{cp1}_escalated")).await
        },
    )
    .await;
    assert_eq!(
        p.sub_statuses("SF-CP").await.get("m-cp").map(String::as_str),
        Some("accepted"),
        "open cases hold completion"
    );
    // The platform closes both; then the sub-order completes.
    for id in ["CASE-1", "CASE-2"] {
        p.send(
            &json!({"type": "complaint.closed", "version": 1, "complaint_id": id, "by": "platform",
                       "resolution": "parcel found, customer refunded the shipping by the storefront"}),
        )
        .await;
    }
    eventually(Duration::from_secs(10), "both closed", || async {
        status("CASE-1").await == "closed" && status("CASE-2").await == "closed"
    })
    .await;
    // A closed case takes no more messages.
    p.send(&json!({"type": "complaint.message", "version": 1, "complaint_id": "CASE-1", "author": "customer", "message": "thanks"}))
        .await;
    eventually(
        Duration::from_secs(10),
        "a message on a closed case refused",
        || async { refusals(&p, "complaint_closed").await == 1 },
    )
    .await;
    p.sweep().await;
    eventually(Duration::from_secs(10), "completed", || async {
        p.sub_statuses("SF-CP").await.get("m-cp").map(String::as_str) == Some("completed")
    })
    .await;
    // Every message and decision kept, in order.
    let story = souk::admin::order_story(&p.env.app.pool, "SF-CP").await.unwrap();
    let case = |id: &str| -> Value {
        story["complaints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    let trail = |c: &Value| -> Vec<(String, String)> {
        c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["author"].as_str().unwrap().to_owned(),
                    m["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |a: &str, k: &str| (a.to_owned(), k.to_owned());
    assert_eq!(
        trail(&case("CASE-1")),
        [
            pair("customer", "message"),
            pair("souk", "decision"),
            pair("platform", "decision")
        ]
    );
    assert_eq!(
        trail(&case("CASE-2")),
        [
            pair("customer", "message"),
            pair("merchant", "message"),
            pair("platform", "decision")
        ]
    );
    let today = chrono::Utc::now().date_naive();
    souk::store::kpis::compute(&p.env.app.pool, today, today)
        .await
        .unwrap();
    let k = souk::store::kpis::summary(&p.env.app.pool, "m-cp", today, today)
        .await
        .unwrap();
    assert_eq!((k.complaint_rate, k.return_rate), (Some(1.0), Some(0.0)));
    p.stop().await;
}

#[tokio::test]
async fn a_sub_order_shipped_in_two_parcels_is_delivered_and_completes_only_when_both_arrive() {
    let p = start(&[("SOUK_TRACKING__COMPLETE_AFTER_DELIVERY_S", "1")]).await;
    p.merchant("m-split", "auto", "accept", 3600).await;
    p.stock("m-split", "A", 5).await;
    p.stock("m-split", "B", 5).await;
    accepted_order(&p, "SF-SPLIT", "m-split", &[("A", 2, 1000), ("B", 1, 500)]).await;
    let parcel = |n: &str, lines: Option<Value>| {
        let mut m = json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-SPLIT",
                           "merchant_id": "m-split", "tracking_number": n, "carrier": "ups"});
        if let Some(l) = lines {
            m["lines"] = l;
        }
        m
    };
    let first = delivered_number("PA");
    p.send(&parcel(&first, Some(json!([{"sku": "A", "quantity": 2}]))))
        .await;
    let delivery = || async {
        sqlx::query_as::<_, (Option<String>, String)>(
            "SELECT s.delivery_status, s.status FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id = 'SF-SPLIT'",
        )
        .fetch_one(&p.env.app.pool)
        .await
        .unwrap()
    };
    eventually(Duration::from_secs(30), "the first parcel delivered", || async {
        p.scalar(
            "SELECT count(*) FROM shipments WHERE tracking_number = $1 AND status = 'delivered'",
            &first,
        )
        .await
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s completion delay
    p.sweep().await;
    p.quiet().await;
    assert_eq!(
        delivery().await,
        (Some("pending".to_owned()), "accepted".to_owned()),
        "B has not left: not delivered, not completed"
    );
    // More B than was bought; then the rest (no lines: everything left).
    p.send(&parcel(
        "PB0000000001",
        Some(json!([{"sku": "B", "quantity": 2}])),
    ))
    .await;
    eventually(Duration::from_secs(10), "too many units refused", || async {
        refusals(&p, "invalid_shipment_lines").await == 1
    })
    .await;
    let second = delivered_number("PB");
    p.send(&parcel(&second, None)).await;
    eventually(Duration::from_secs(30), "both parcels delivered", || async {
        delivery().await.0.as_deref() == Some("delivered")
    })
    .await;
    let carried: Vec<(String, i32)> = sqlx::query_as(
        "SELECT l.sku, l.quantity FROM shipment_lines l JOIN shipments s ON s.id = l.shipment_id
         WHERE s.tracking_number = $1",
    )
    .bind(&second)
    .fetch_all(&p.env.app.pool)
    .await
    .unwrap();
    assert_eq!(carried, [("B".to_owned(), 1)]);
    p.send(&parcel("PC0000000001", None)).await;
    eventually(
        Duration::from_secs(10),
        "a third parcel has nothing to carry",
        || async { refusals(&p, "nothing_left_to_ship").await == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s completion delay
    p.sweep().await;
    eventually(Duration::from_secs(10), "completed", || async {
        delivery().await.1 == "completed"
    })
    .await;
    p.stop().await;
}
