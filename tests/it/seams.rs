//! Crash seams: a `souk` process is made to die (a real abort, `SOUK_CRASH_AT`) right after a
//! commit whose follow-up matters and before that follow-up is pushed; a fresh process then
//! runs the rest, and each test checks the follow-up happened exactly once — at the sandbox's
//! merchant endpoints (webhooks) and its payment provider (captures, cancels, refunds).

use std::{
    process::Child,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::support::{eventually, pipeline::Pipeline, Reaper};

/// Fast sweeps' view of "outstanding for too long".
const GRACE: (&str, &str) = ("SOUK_MARKETPLACE__FOLLOW_UP_GRACE_S", "1");

/// Waits until `child` has died at its crash point (abort), and says so.
async fn wait_for_crash(child: &mut Child, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            assert!(
                !status.success(),
                "the worker exited cleanly instead of dying at {point}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "the worker never reached {point}");
        // Not a blocking sleep: the sandbox serving the child runs on this test's runtime.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How often `merchant`'s endpoint received an event of `kind` (distinct ids), and whether any
/// webhook reached it twice.
fn received(p: &Pipeline, merchant: &str, kind: &str) -> (usize, u64) {
    let r = p.sb.endpoint_report(merchant);
    (r.events.iter().filter(|e| e.1 == kind).count(), r.duplicates)
}

fn counter(p: &Pipeline, what: &str) -> u64 {
    p.sb.counters().get(what).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_crash_right_after_the_hand_over_still_tells_every_merchant_once_and_keeps_the_deadline() {
    let p = Pipeline::start_without_workers(&[GRACE]).await;
    p.merchant("auto", "auto", "accept", 3600).await;
    p.merchant("slow", "manual", "reject", 2).await;
    p.stock("auto", "A", 5).await;
    p.stock("slow", "B", 5).await;
    let msg = p.order(
        "SF-HO",
        &[("auto", "A", 1, 700), ("slow", "B", 1, 300)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // Reaped from the start: a test that fails must not leave a worker running.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "hand_over.committed")])]);
    p.send(&msg).await;
    wait_for_crash(&mut workers.0[0], "hand_over.committed").await;
    assert_eq!(
        p.order_status("SF-HO").await.as_deref(),
        Some("captured"),
        "committed"
    );
    assert!(
        p.deliveries("SF-HO")
            .await
            .iter()
            .all(|d| d.2 == "pending" && d.3 == 0),
        "nobody told yet"
    );
    workers.0.push(p.spawn_worker(&[]));
    eventually(Duration::from_secs(30), "both merchants told", || {
        p.all_delivered("SF-HO", 2)
    })
    .await;
    // The deadline job was never pushed by the crashed run: the rerun found it in the state.
    eventually(
        Duration::from_secs(30),
        "the deadline default applied",
        || async { p.sub_statuses("SF-HO").await.get("slow").map(String::as_str) == Some("rejected") },
    )
    .await;
    eventually(Duration::from_secs(20), "the rejected share refunded", || async {
        p.sb.intent_state(&pi).map(|s| s.2) == Some(300)
    })
    .await;
    assert_eq!(received(&p, "auto", "sub_order.created"), (1, 0));
    assert_eq!(received(&p, "slow", "sub_order.created"), (1, 0));
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 1000, 300)));
    assert_eq!((counter(&p, "capture"), counter(&p, "refund")), (1, 1));
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_a_default_rejection_still_refunds_that_share_once() {
    let p = Pipeline::start_without_workers(&[GRACE]).await;
    p.merchant("keeps", "auto", "accept", 3600).await;
    p.merchant("silent", "manual", "reject", 1).await;
    p.stock("keeps", "A", 5).await;
    p.stock("silent", "B", 5).await;
    let msg = p.order(
        "SF-DR",
        &[("keeps", "A", 2, 250), ("silent", "B", 1, 400)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // Reaped from the start: a test that fails must not leave a worker running.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "decide.committed")])]);
    p.send(&msg).await;
    wait_for_crash(&mut workers.0[0], "decide.committed").await;
    assert_eq!(p.sub_statuses("SF-DR").await["silent"], "rejected", "committed");
    assert_eq!(counter(&p, "refund"), 0, "not refunded yet");
    workers.0.push(p.spawn_worker(&[]));
    eventually(Duration::from_secs(30), "the rejected share refunded", || async {
        p.sb.intent_state(&pi).map(|s| s.2) == Some(400)
    })
    .await;
    eventually(Duration::from_secs(10), "the adjustment mark cleared", || async {
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id = $1 AND adjust_due_at IS NULL",
            "SF-DR",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 900, 400)));
    assert_eq!(counter(&p, "refund"), 1);
    // The merchant hears of the rejection made for it: its webhook was written with the
    // decision, so the crash after the commit did not lose it; delivered once.
    eventually(Duration::from_secs(20), "the silent merchant told", || async {
        p.sb.endpoint_report("silent")
            .events
            .iter()
            .any(|e| e.1 == "sub_order.rejected")
    })
    .await;
    let told = p.sb.endpoint_report("silent");
    assert_eq!(
        told.events.iter().filter(|e| e.1 == "sub_order.rejected").count(),
        1
    );
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_a_cancellation_still_tells_the_merchant_and_refunds_once() {
    let p = Pipeline::start_without_workers(&[GRACE]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    let msg = p.order("SF-CX", &[("m1", "A", 1, 900)], "requires_capture");
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // Reaped from the start: a test that fails must not leave a worker running.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "cancel.committed")])]);
    p.send(&msg).await;
    eventually(Duration::from_secs(30), "captured and told", || {
        p.all_delivered("SF-CX", 1)
    })
    .await;
    p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-CX", "reason": "changed my mind"}))
        .await;
    wait_for_crash(&mut workers.0[0], "cancel.committed").await;
    assert_eq!(
        p.order_status("SF-CX").await.as_deref(),
        Some("cancelled"),
        "committed"
    );
    workers.0.push(p.spawn_worker(&[]));
    eventually(
        Duration::from_secs(30),
        "the merchant told of the cancellation",
        || async { received(&p, "m1", "sub_order.cancelled").0 == 1 },
    )
    .await;
    eventually(Duration::from_secs(30), "the charge refunded", || async {
        p.sb.intent_state(&pi).map(|s| s.2) == Some(900)
    })
    .await;
    assert_eq!(received(&p, "m1", "sub_order.cancelled"), (1, 0));
    assert_eq!((counter(&p, "capture"), counter(&p, "refund")), (1, 1));
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 900, 900)));
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_the_late_flag_still_tells_the_merchant_once() {
    let p = Pipeline::start_without_workers(&[GRACE, ("SOUK_TRACKING__SHIP_BY_S", "1")]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    // Reaped from the start: a test that fails must not leave a worker running.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "sweep.committed")])]);
    p.send(&p.order("SF-LATE", &[("m1", "A", 1, 500)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(30), "captured and told", || {
        p.all_delivered("SF-LATE", 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s ship-by
    p.sweep().await;
    wait_for_crash(&mut workers.0[0], "sweep.committed").await;
    assert_eq!(
        p.scalar("SELECT count(*) FROM sub_orders WHERE late_at IS NOT NULL", "")
            .await,
        1,
        "flagged"
    );
    workers.0.push(p.spawn_worker(&[]));
    // The flag is not raised again; the webhook written with it is found by the next sweep.
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the grace
    p.sweep().await;
    eventually(
        Duration::from_secs(30),
        "the merchant told it is late",
        || async { received(&p, "m1", "sub_order.late").0 == 1 },
    )
    .await;
    p.sweep().await;
    eventually(Duration::from_secs(10), "that sweep done", || async {
        p.scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'",
            "",
        )
        .await
            == 0
    })
    .await;
    assert_eq!(received(&p, "m1", "sub_order.late"), (1, 0));
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_an_expired_reservation_still_refunds_that_share_once() {
    let p = Pipeline::start_without_workers(&[GRACE, ("SOUK_MARKETPLACE__RESERVATION_TTL_S", "1")]).await;
    p.merchant("keeps", "auto", "accept", 3600).await;
    p.merchant("ponders", "manual", "accept", 3600).await;
    p.stock("keeps", "A", 5).await;
    p.stock("ponders", "B", 5).await;
    let msg = p.order(
        "SF-EX",
        &[("keeps", "A", 1, 600), ("ponders", "B", 1, 350)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // Reaped from the start: a test that fails must not leave a worker running.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "sweep.committed")])]);
    p.send(&msg).await;
    eventually(Duration::from_secs(30), "both told", || {
        p.all_delivered("SF-EX", 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the reservation's 1 s
    p.sweep().await;
    wait_for_crash(&mut workers.0[0], "sweep.committed").await;
    assert_eq!(p.sub_statuses("SF-EX").await["ponders"], "rejected", "committed");
    assert_eq!(counter(&p, "refund"), 0, "not refunded yet");
    workers.0.push(p.spawn_worker(&[]));
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the grace
    p.sweep().await;
    eventually(Duration::from_secs(30), "the expired share refunded", || async {
        p.sb.intent_state(&pi).map(|s| s.2) == Some(350)
    })
    .await;
    p.sweep().await;
    eventually(Duration::from_secs(10), "the adjustment mark cleared", || async {
        p.scalar("SELECT count(*) FROM orders WHERE adjust_due_at IS NOT NULL", "")
            .await
            == 0
    })
    .await;
    assert_eq!(counter(&p, "refund"), 1);
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 950, 350)));
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn a_worker_killed_holding_a_payment_lock_frees_it_within_the_reclaim_bound() {
    let p = Pipeline::start_without_workers(&[GRACE]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    let msg = p.order("SF-LK", &[("m1", "A", 1, 800)], "requires_capture");
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // Reaped from the start: a test that fails must not leave a worker running.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_CRASH_AT", "adjust.locked")])]);
    p.send(&msg).await;
    wait_for_crash(&mut workers.0[0], "adjust.locked").await;
    let died = Instant::now();
    let order_id = p
        .scalar("SELECT id FROM orders WHERE storefront_order_id = $1", "SF-LK")
        .await;
    let key = souk::orders::payment::lock_key(&p.env.prefix, order_id);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut p.env.redis())
        .await
        .unwrap();
    let claim_idle = p
        .env
        .app
        .config
        .queue(souk::enqueue::ADJUST_PAYMENT)
        .claim_idle_ms as i64;
    assert!(
        pttl > 0 && pttl <= claim_idle,
        "the dead holder's lock has {pttl} ms left (bound {claim_idle})"
    );
    workers.0.push(p.spawn_worker(&[]));
    eventually(Duration::from_secs(30), "captured and told", || {
        p.all_delivered("SF-LK", 1)
    })
    .await;
    let took = died.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "captured {took:?} after the crash"
    );
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 800, 0)));
    assert_eq!(counter(&p, "capture"), 1);
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_while_its_payment_is_processing_has_its_authorisation_released() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    let mut msg = p.order("SF-PROC", &[("m1", "A", 1, 400)], "requires_capture");
    let pi =
        p.sb.create_intent(400, "eur", "requires_capture", Some(Duration::from_secs(2)));
    msg["order"]["payment"]["payment_id"] = json!(pi);
    p.send(&msg).await;
    eventually(Duration::from_secs(10), "the payment seen processing", || async {
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id = $1 AND payment_status = 'processing'",
            "SF-PROC",
        )
        .await
            == 1
    })
    .await;
    p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-PROC"}))
        .await;
    eventually(
        Duration::from_secs(20),
        "the authorisation released at the provider",
        || async { p.sb.intent_state(&pi).map(|s| s.0) == Some("canceled".into()) },
    )
    .await;
    assert_eq!(p.order_status("SF-PROC").await.as_deref(), Some("cancelled"));
    assert_eq!(counter(&p, "capture"), 0);
    eventually(Duration::from_secs(10), "the release recorded", || async {
        p.scalar(
            "SELECT count(*) FROM orders WHERE storefront_order_id = $1 AND payment_status = 'canceled' AND adjust_due_at IS NULL",
            "SF-PROC",
        )
        .await
            == 1
    })
    .await;
    p.stop().await;
}

/// The state letter of a process (`T` when stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test]
async fn a_worker_paused_past_its_payment_lease_cannot_record_stale_amounts_when_it_wakes() {
    let p = Pipeline::start_without_workers(&[GRACE]).await;
    p.merchant("keeps", "auto", "accept", 3600).await;
    p.merchant("refuses", "manual", "accept", 3600).await;
    p.stock("keeps", "A", 5).await;
    p.stock("refuses", "B", 5).await;
    let msg = p.order(
        "SF-PAUSE",
        &[("keeps", "A", 1, 600), ("refuses", "B", 1, 400)],
        "requires_capture",
    );
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    // Worker A freezes right after its refund call, before recording it.
    let mut workers = Reaper(vec![p.spawn_worker(&[("SOUK_STALL_AT", "adjust.refunded")])]);
    let a_pid = workers.0[0].id();
    p.send(&msg).await;
    eventually(Duration::from_secs(30), "captured and both told", || {
        p.all_delivered("SF-PAUSE", 2)
    })
    .await;
    p.send(
        &json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-PAUSE",
                   "merchant_id": "refuses", "decision": "reject"}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "worker A frozen after its refund call",
        || async { process_state(a_pid) == Some('T') },
    )
    .await;
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 1000, 400)));
    // Worker B takes over once A's entry and lock leases run out, records the refund it finds
    // at the provider, then a cancellation refunds the rest: newer amounts than A saw.
    workers.0.push(p.spawn_worker(&[]));
    let refunded = || async {
        p.scalar(
            "SELECT refunded_minor FROM orders WHERE storefront_order_id = $1",
            "SF-PAUSE",
        )
        .await
    };
    eventually(
        Duration::from_secs(30),
        "B recorded the refund A made",
        || async { refunded().await == 400 },
    )
    .await;
    p.send(&json!({"type": "order.cancel", "version": 1, "storefront_order_id": "SF-PAUSE"}))
        .await;
    eventually(Duration::from_secs(30), "B refunded the rest", || async {
        refunded().await == 1000
    })
    .await;
    // A wakes up and is asked to stop: it finishes the run it was in (graceful shutdown) and
    // exits. Its record of "refunded 400" carries an older fence than B's and is refused.
    signal(a_pid, "CONT");
    signal(a_pid, "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while workers.0[0].try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "worker A did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        refunded().await,
        1000,
        "the stale run wrote older amounts over newer ones"
    );
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 1000, 1000)));
    let refunds = p
        .scalar(
            "SELECT count(*) FROM payment_operations op JOIN orders o ON o.id = op.order_id
             WHERE o.storefront_order_id = $1 AND op.kind = 'refund'",
            "SF-PAUSE",
        )
        .await;
    assert_eq!(
        refunds, 1,
        "only B's refund of the rest is recorded as a refund call"
    );
    drop(workers);
    p.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_a_return_is_received_still_refunds_it_once() {
    let p = Pipeline::start_without_workers(&[
        GRACE,
        ("SOUK_TRACKING__POLL_IMMINENT_S", "1"),
        ("SOUK_TRACKING__POLL_MOVING_S", "1"),
        ("SOUK_TRACKING__POLL_UNSCANNED_S", "1"),
    ])
    .await;
    *p.sb.couriers.step.lock().unwrap() = Duration::from_millis(200);
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 5).await;
    let msg = p.order("SF-RR", &[("m1", "A", 2, 800)], "requires_capture");
    let pi = msg["order"]["payment"]["payment_id"].as_str().unwrap().to_owned();
    let mut workers = Reaper(vec![p.spawn_worker(&[])]);
    p.send(&msg).await;
    eventually(Duration::from_secs(30), "accepted", || async {
        p.sub_statuses("SF-RR").await.get("m1").map(String::as_str) == Some("accepted")
    })
    .await;
    let number = (0..100)
        .map(|i| format!("SFRR{i:04}"))
        .find(|n| souk::sandbox::tracking::script(n).last().map(|s| s.0) == Some("Delivered"))
        .unwrap();
    p.send(
        &json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-RR",
                   "merchant_id": "m1", "tracking_number": number, "carrier": "ups"}),
    )
    .await;
    let return_status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM returns WHERE storefront_return_id = 'RMA-RR'")
            .fetch_optional(&p.env.app.pool)
            .await
            .unwrap()
    };
    eventually(Duration::from_secs(30), "delivered", || async {
        p.scalar(
            "SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id = $1 AND s.delivery_status = 'delivered'",
            "SF-RR",
        )
        .await
            == 1
    })
    .await;
    p.send(&json!({"type": "return.requested", "version": 1, "return_id": "RMA-RR", "storefront_order_id": "SF-RR",
                   "merchant_id": "m1", "lines": [{"sku": "A", "quantity": 1}]}))
        .await;
    p.send(&json!({"type": "return.decision", "version": 1, "return_id": "RMA-RR", "decision": "approve"}))
        .await;
    eventually(Duration::from_secs(20), "approved", || async {
        return_status().await.as_deref() == Some("approved")
    })
    .await;
    // The decision's entry acknowledged too: else the crash-armed worker reruns it first (its
    // group holds the receipt behind it) and dies there, before the receipt.
    p.quiet().await;
    let mut healthy = workers.0.remove(0);
    let _ = healthy.kill();
    let _ = healthy.wait();
    workers
        .0
        .push(p.spawn_worker(&[("SOUK_CRASH_AT", "after_sales.committed")]));
    p.send(&json!({"type": "return.received", "version": 1, "return_id": "RMA-RR", "sellable": false}))
        .await;
    wait_for_crash(&mut workers.0[0], "after_sales.committed").await;
    assert_ne!(
        return_status().await.as_deref(),
        Some("approved"),
        "the receipt committed"
    );
    assert_eq!(counter(&p, "refund"), 0, "died before the refund was pushed");
    workers.0.push(p.spawn_worker(&[]));
    eventually(Duration::from_secs(30), "refunded", || async {
        return_status().await.as_deref() == Some("refunded")
    })
    .await;
    assert_eq!(counter(&p, "refund"), 1);
    assert_eq!(p.sb.intent_state(&pi), Some(("succeeded".into(), 1600, 800)));
    drop(workers);
    p.stop().await;
}
