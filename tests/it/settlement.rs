//! Settlement: a completed sub-order in a balanced ledger, paid out once.

use std::time::Duration;

use serde_json::json;

use crate::support::eventually;
use crate::support::pipeline::Pipeline;

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
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s completion delay
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
    let again = souk::jobs::pay_merchant::Args {
        sub_order_id: souk::domain::ids::SubOrderId(sub_order_id),
    };
    p.env
        .app
        .producer
        .push(souk::jobs::pay_merchant::QUEUE, &again)
        .await
        .unwrap();
    p.quiet().await;
    assert_eq!(p.sb.transfers().len(), 1);
    p.stop().await;
}
