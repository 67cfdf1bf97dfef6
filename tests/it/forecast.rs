//! Demand forecasting end to end: generated history loaded into the real Postgres, runs in this
//! process, in killed and restarted `souk` processes, and over the queue with worker processes;
//! the digest webhook delivered to the sandbox's merchant receiver over HTTP.

use std::{process::Command, sync::Arc, time::Duration};

use chrono::NaiveDate;
use souk::{
    admin,
    domain::forecast::generator::PanelSpec,
    forecast::{self, generate},
    jobs::{notify_merchant, plan_forecasts},
    sandbox::{self, EndpointSettings, Sandbox},
    store::merchants::MerchantInput,
};
use tokio::sync::watch;

use crate::support::{eventually, Reaper, TestEnv};

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Merchants whose webhooks go to the sandbox's verifying receivers.
async fn sandbox_merchants(env: &TestEnv, sb: &Arc<Sandbox>, base: &str, ids: &[&str]) -> Vec<String> {
    for id in ids {
        let input = MerchantInput {
            name: Some(id.to_string()),
            webhook_url: Some(format!("{base}/merchants/{id}/webhook")),
            ..Default::default()
        };
        let secret = admin::add_merchant(&env.app, id, &input).await.unwrap();
        sb.configure_endpoint(
            id,
            &EndpointSettings {
                secrets: Some(vec![secret]),
                ..Default::default()
            },
        );
    }
    ids.iter().map(|s| s.to_string()).collect()
}

async fn scalar_i64(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&env.app.pool)
        .await
        .unwrap()
}

/// An order placed on `day` with one sub-order of `merchant` in `status` for `qty` of `sku`.
async fn order_line(env: &TestEnv, n: u32, merchant: &str, sku: &str, qty: i32, status: &str, day: &str) {
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (storefront_order_id, customer, currency, total_minor, status, payment_provider, payment_id,
                             shipping_address, placed_at, enqueued_at)
         VALUES ($1, '{}', 'EUR', $2, 'captured', 'stripe', $1, '{}', ($3::date + time '12:00') AT TIME ZONE 'UTC', now())
         RETURNING id",
    )
    .bind(format!("fc-{n}"))
    .bind(qty as i64 * 500)
    .bind(day)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    let sub: i64 = sqlx::query_scalar(
        "INSERT INTO sub_orders (order_id, merchant_id, status, subtotal_minor, commission_minor)
         VALUES ($1, $2, $3, $4, 0) RETURNING id",
    )
    .bind(order_id)
    .bind(merchant)
    .bind(status)
    .bind(qty as i64 * 500)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO order_lines (sub_order_id, sku, quantity, unit_price_minor) VALUES ($1, $2, $3, 500)",
    )
    .bind(sub)
    .bind(sku)
    .bind(qty)
    .execute(&env.app.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_run_stores_coherent_forecasts_advice_accuracy_and_one_verified_digest() {
    let sb = Sandbox::new("sk_test_forecast");
    let (addr, _h) = sandbox::start("127.0.0.1:0".parse().unwrap(), sb.clone())
        .await
        .unwrap();
    let base = format!("http://{addr}");
    let env = TestEnv::with(&[
        ("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("SOUK_WEBHOOKS__SCHEDULE_S", "[0, 1, 1]"),
    ])
    .await;
    let app = env.app.clone();
    let ids = sandbox_merchants(&env, &sb, &base, &["fa", "fb"]).await;
    let spec = PanelSpec {
        merchants: 2,
        skus: 60,
        days: 400,
        seed: 7,
    };
    let end = day("2026-06-30");
    let loaded = generate::load(&app, &spec, &ids, end, "unused", &[])
        .await
        .unwrap();
    assert_eq!((loaded.skus, loaded.merchants_created), (60, 0));

    // Demand that comes from souk's own orders: accepted lines count, and so do out-of-stock
    // ones (demand the merchant could not serve, their day marked out of stock); cancelled
    // ones do not.
    order_line(&env, 1, "fa", "ORD-1", 2, "accepted", "2026-06-20").await;
    order_line(&env, 2, "fa", "ORD-1", 3, "awaiting_acceptance", "2026-06-25").await;
    order_line(&env, 3, "fa", "ORD-1", 50, "cancelled", "2026-06-26").await;
    order_line(&env, 4, "fa", "ORD-1", 40, "out_of_stock", "2026-06-27").await;

    let (stop, mut rx) = watch::channel(false);
    let workers = {
        let app = app.clone();
        tokio::spawn(async move {
            app.run_workers(&[notify_merchant::QUEUE.to_owned()], false, async move {
                let _ = rx.changed().await;
            })
            .await
        })
    };

    // A first run 28 days before the end of the history, then one at the end: the second
    // scores the first's forecasts against what sold.
    let early = end - chrono::Duration::days(28);
    let run1 = forecast::open_run(&app, "t:early", early, None).await.unwrap();
    let (ok, failed) = forecast::run_in_process(&app, &run1, |_, _| {}).await.unwrap();
    assert_eq!((ok, failed), (2, 0));
    // Lead times: merchant fb restocks in 14 days, one SKU of fa in 3; the rest use the default 7.
    use souk::store::forecasts::set_lead_time;
    assert!(set_lead_time(&app.pool, "fb", None, Some(14)).await.unwrap());
    let fast_sku: String =
        sqlx::query_scalar("SELECT sku FROM stock WHERE merchant_id = 'fa' ORDER BY sku LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(set_lead_time(&app.pool, "fa", Some(&fast_sku), Some(3))
        .await
        .unwrap());
    assert!(!set_lead_time(&app.pool, "fa", Some("NO-SUCH-SKU"), Some(3))
        .await
        .unwrap());
    let run2 = forecast::open_run(&app, "t:end", end, None).await.unwrap();
    forecast::run_in_process(&app, &run2, |_, r| assert!(r.is_ok(), "{r:?}"))
        .await
        .unwrap();

    let status: String = sqlx::query_scalar("SELECT status FROM forecast_runs WHERE id = $1")
        .bind(run2.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "finished");
    let orders_units = scalar_i64(
        &env,
        "SELECT COALESCE(sum(units), 0)::bigint FROM sku_daily_demand WHERE sku = 'ORD-1' AND source = 'orders'",
    )
    .await;
    assert_eq!(
        orders_units, 45,
        "accepted (2) + awaiting acceptance (3) + out of stock (40); cancelled left out"
    );
    let out_days = scalar_i64(
        &env,
        "SELECT count(*) FROM sku_daily_demand WHERE sku = 'ORD-1' AND source = 'orders' AND NOT in_stock",
    )
    .await;
    assert_eq!(out_days, 1, "06-27, when a sub-order found ORD-1 sold out");

    let run2_forecasts = format!("SELECT count(*) FROM sku_forecasts WHERE run_id = {}", run2.id);
    assert_eq!(
        scalar_i64(&env, &run2_forecasts).await,
        61,
        "60 generated SKUs + ORD-1"
    );
    let incoherent = scalar_i64(
        &env,
        "SELECT count(*) FROM sku_forecasts f, LATERAL generate_subscripts(f.mean, 1) i
         WHERE cardinality(f.mean) <> 28 OR cardinality(f.p95) <> 28
            OR NOT (f.mean[i] >= 0 AND f.p50[i] >= 0 AND f.p50[i] <= f.p90[i] AND f.p90[i] <= f.p95[i])",
    )
    .await;
    assert_eq!(incoherent, 0);
    // The new SKU has 11 days of history: a fallback that says so.
    let (model, fallback): (String, Option<String>) =
        sqlx::query_as("SELECT model, fallback FROM sku_forecasts WHERE sku = 'ORD-1' AND run_id = $1")
            .bind(run2.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(model, "recent_mean");
    assert!(fallback.unwrap().contains("fewer than 56"));
    // Every SKU with a stock row has advice (ORD-1, sold through orders only, has none: its
    // stock is unknown); the generator leaves some with almost no cover.
    let advice = format!("SELECT count(*) FROM stock_advice WHERE run_id = {}", run2.id);
    assert_eq!(scalar_i64(&env, &advice).await, 60);
    let at_risk_fa = scalar_i64(
        &env,
        &format!(
            "SELECT count(*) FROM stock_advice WHERE run_id = {} AND merchant_id = 'fa' AND at_risk",
            run2.id
        ),
    )
    .await;
    assert!(at_risk_fa > 0);
    let bad_advice = scalar_i64(
        &env,
        "SELECT count(*) FROM stock_advice WHERE stockout_probability NOT BETWEEN 0 AND 1
            OR reorder_point > order_up_to OR suggested_order < 0
            OR (at_risk AND stockout_probability < 0.2)",
    )
    .await;
    assert_eq!(bad_advice, 0);
    let lead_times: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT merchant_id, sku, lead_time_days FROM stock_advice WHERE run_id = $1")
            .bind(run2.id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for (m, sku, lt) in &lead_times {
        let want = if m == "fb" {
            14
        } else if sku == &fast_sku {
            3
        } else {
            7
        };
        assert_eq!(*lt, want, "{m} {sku}");
    }
    // Accuracy: every forecast of the first run was scored by the second.
    let scored = scalar_i64(
        &env,
        &format!(
            "SELECT count(*) FROM forecast_accuracy a JOIN sku_forecasts f ON f.id = a.forecast_id WHERE f.run_id = {}",
            run1.id
        ),
    )
    .await;
    let run1_forecasts = scalar_i64(
        &env,
        &format!("SELECT count(*) FROM sku_forecasts WHERE run_id = {}", run1.id),
    )
    .await;
    assert_eq!(scored, run1_forecasts);
    let coverage: f64 = sqlx::query_scalar("SELECT avg(coverage_p90) FROM forecast_accuracy")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!((0.6..=1.0).contains(&coverage), "p90 coverage {coverage}");

    // The digest: one per merchant and run, ranked, delivered with a valid signature.
    let digest = forecast::digest_id(run2.id, "fa");
    eventually(Duration::from_secs(20), "digest delivered", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM webhook_deliveries WHERE id = $1")
            .bind(&digest)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
            .as_deref()
            == Some("delivered")
    })
    .await;
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM webhook_deliveries WHERE id = $1")
            .bind(&digest)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payload["at_risk_total"].as_i64(), Some(at_risk_fa));
    let skus = payload["skus"].as_array().unwrap();
    let rank = |v: &serde_json::Value| {
        v["stockout_probability"].as_f64().unwrap() * (v["value_at_risk_minor"].as_f64().unwrap() + 1.0)
    };
    assert!(
        skus.windows(2).all(|w| rank(&w[0]) >= rank(&w[1]) - 1e-6),
        "{skus:?}"
    );
    let report = sb.endpoint_report("fa");
    assert_eq!(report.bad_signatures, 0);
    assert!(report
        .events
        .iter()
        .any(|(id, t)| id == &digest && t == "forecast.stock_risk"));

    // Running the same run again changes nothing and sends nothing more.
    let before = scalar_i64(&env, "SELECT count(*) FROM sku_forecasts").await;
    let again = forecast::process_merchant(&app, &run2, "fa").await.unwrap();
    assert!(again.skipped);
    let (ok, _) = forecast::run_in_process(&app, &run2, |_, _| {}).await.unwrap();
    assert_eq!(ok, 0);
    assert_eq!(
        scalar_i64(&env, "SELECT count(*) FROM sku_forecasts").await,
        before
    );
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'forecast.stock_risk'"
        )
        .await,
        scalar_i64(
            &env,
            "SELECT count(*) FROM forecast_run_merchants WHERE at_risk > 0"
        )
        .await
    );

    let _ = stop.send(true);
    workers.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_forecast_run_resumes_without_redoing_finished_merchants() {
    let env = TestEnv::new().await;
    let app = env.app.clone();
    let spec = PanelSpec {
        merchants: 6,
        skus: 1_500,
        days: 400,
        seed: 11,
    };
    let ids: Vec<String> = (0..6).map(|m| format!("k{m}")).collect();
    let end = day("2026-06-30");
    generate::load(
        &app,
        &spec,
        &ids,
        end,
        "https://{id}.merchant.invalid/webhook",
        &[],
    )
    .await
    .unwrap();

    let mut child = Reaper(vec![
        env.spawn_souk(&["forecast", "run", "--as-of", "2026-06-30"], &[])
    ]);
    let done_count = "SELECT count(*) FROM forecast_run_merchants WHERE status = 'done'";
    eventually(Duration::from_secs(60), "a first merchant done", || async {
        sqlx::query_scalar::<_, i64>(done_count)
            .fetch_one(&app.pool)
            .await
            .unwrap_or(0)
            >= 1
    })
    .await;
    let pid = child.0[0].id().to_string();
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    let _ = child.0[0].wait();

    let done_before: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT merchant_id, finished_at FROM forecast_run_merchants WHERE status = 'done' ORDER BY merchant_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        !done_before.is_empty() && done_before.len() < 6,
        "the kill must land mid-run: {} done",
        done_before.len()
    );

    let run = forecast::open_run(&app, &forecast::daily_key(end), end, None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let (ok, failed) = forecast::run_in_process(&app, &run, |m, r| {
        assert!(!r.as_ref().unwrap().skipped);
        seen.push(m.to_owned());
    })
    .await
    .unwrap();
    assert_eq!(failed, 0);
    assert_eq!(ok, 6 - done_before.len());
    for (m, _) in &done_before {
        assert!(!seen.contains(m), "{m} was done again");
    }
    let done_after: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT merchant_id, finished_at FROM forecast_run_merchants WHERE merchant_id = ANY($1) ORDER BY merchant_id",
    )
    .bind(done_before.iter().map(|d| d.0.clone()).collect::<Vec<_>>())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(done_before, done_after);
    assert_eq!(
        scalar_i64(&env, "SELECT count(*) FROM sku_forecasts").await,
        1_500
    );
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM forecast_runs WHERE status = 'finished'"
        )
        .await,
        1
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planned_run_spreads_over_workers_and_one_failing_merchant_holds_up_no_other() {
    let env = TestEnv::new().await;
    let app = env.app.clone();
    let spec = PanelSpec {
        merchants: 4,
        skus: 200,
        days: 200,
        seed: 3,
    };
    let ids: Vec<String> = ["p0", "p1", "bad", "p3"].iter().map(|s| s.to_string()).collect();
    let end = day("2026-03-31");
    generate::load(
        &app,
        &spec,
        &ids,
        end,
        "https://{id}.merchant.invalid/webhook",
        &[],
    )
    .await
    .unwrap();
    // A real database failure for one merchant only: its forecasts cannot be stored.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.merchant_id = 'bad' THEN RAISE EXCEPTION 'disk full for merchant bad'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_bad BEFORE INSERT ON sku_forecasts FOR EACH ROW EXECUTE FUNCTION refuse_bad();",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let queues = format!(
        "{},{}",
        plan_forecasts::QUEUE,
        souk::jobs::forecast_merchant::QUEUE
    );
    // Retries a few seconds apart, so the failure is seen before the fix and the fix before
    // the merchant's five attempts run out.
    let slow_retry = [
        ("SOUK_QUEUE__RETRY_BASE_MS", "2000"),
        ("SOUK_QUEUE__RETRY_CAP_MS", "5000"),
    ];
    let workers = Reaper(vec![
        env.spawn_souk(&["run", "--queues", &queues, "--no-cron"], &slow_retry),
        env.spawn_souk(&["run", "--queues", &queues, "--no-cron"], &slow_retry),
    ]);
    env.app
        .producer
        .push(
            plan_forecasts::QUEUE,
            &plan_forecasts::Args {
                as_of: Some(end),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    eventually(
        Duration::from_secs(90),
        "the three good merchants done",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM forecast_run_merchants WHERE status = 'done' AND merchant_id <> 'bad'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap_or(0)
                == 3
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the bad merchant's failure recorded",
        || async {
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT status, error FROM forecast_run_merchants WHERE merchant_id = 'bad'")
                    .fetch_optional(&app.pool)
                    .await
                    .unwrap();
            matches!(row, Some((s, Some(e))) if s == "failed" && e.contains("disk full for merchant bad"))
        },
    )
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM forecast_runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "running");

    // The cause goes away; the queue's retry finishes the run.
    sqlx::raw_sql("DROP TRIGGER refuse_bad ON sku_forecasts")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "the run finished by a retry", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM forecast_runs")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == "finished"
    })
    .await;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM forecast_run_merchants WHERE merchant_id = 'bad'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(scalar_i64(&env, "SELECT count(*) FROM sku_forecasts").await, 200);
    // The workers go before the keys: a running one would write its queues back.
    drop(workers);
    env.cleanup().await;
}

/// A merchant whose stock souk does not know (no `stock` rows) gets forecasts but no stock
/// advice and no at-risk digest: unknown stock is not zero stock.
#[tokio::test]
async fn unknown_stock_gets_forecasts_but_no_advice_and_no_digest() {
    let env = TestEnv::new().await;
    let input = MerchantInput {
        webhook_url: Some("https://merchant.example/hooks".into()),
        ..Default::default()
    };
    admin::add_merchant(&env.app, "fz", &input).await.unwrap();
    for (n, d) in (1..=20).zip(
        [
            "2026-06-01",
            "2026-06-05",
            "2026-06-10",
            "2026-06-15",
            "2026-06-20",
        ]
        .iter()
        .cycle(),
    ) {
        order_line(&env, n, "fz", "NO-STOCK-ROW", 5, "accepted", d).await;
    }
    let run = forecast::open_run(&env.app, "t:unknown", day("2026-06-30"), None)
        .await
        .unwrap();
    let (ok, failed) = forecast::run_in_process(&env.app, &run, |_, _| {}).await.unwrap();
    assert_eq!((ok, failed), (1, 0));
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM sku_forecasts WHERE merchant_id = 'fz'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(&env, "SELECT count(*) FROM stock_advice WHERE merchant_id = 'fz'").await,
        0
    );
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'forecast.stock_risk'"
        )
        .await,
        0,
        "no digest"
    );
    // Once its stock is known (and short), the same history makes it at risk.
    let mut tx = env.app.pool.begin().await.unwrap();
    souk::store::merchants::set_stock(&mut tx, "fz", "NO-STOCK-ROW", 0)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let run = forecast::open_run(&env.app, "t:known", day("2026-06-30"), None)
        .await
        .unwrap();
    forecast::run_in_process(&env.app, &run, |_, _| {}).await.unwrap();
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM stock_advice WHERE merchant_id = 'fz' AND at_risk"
        )
        .await,
        1
    );
    // The merchant's own threshold decides what is at risk: stock for about the lead time's
    // demand makes a middling stock-out probability p; above p it is not at risk, below it is.
    let latest = "SELECT stockout_probability, lead_time_demand, at_risk FROM stock_advice
                  WHERE merchant_id = 'fz' ORDER BY run_id DESC LIMIT 1";
    let (_, ltd, _): (f64, f64, bool) = sqlx::query_as(latest).fetch_one(&env.app.pool).await.unwrap();
    let mut tx = env.app.pool.begin().await.unwrap();
    souk::store::merchants::set_stock(&mut tx, "fz", "NO-STOCK-ROW", ltd.round() as i64)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let app = &env.app;
    let rerun = |name: &'static str| async move {
        let run = forecast::open_run(app, name, day("2026-06-30"), None)
            .await
            .unwrap();
        forecast::run_in_process(app, &run, |_, _| {}).await.unwrap();
        sqlx::query_as::<_, (f64, f64, bool)>(latest)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let (p, _, _) = rerun("t:covered").await;
    assert!(p > 0.01 && p < 0.99, "a middling probability, got {p}");
    use souk::store::forecasts::set_warn_probability;
    assert!(set_warn_probability(&env.app.pool, "fz", Some((p + 1.0) / 2.0))
        .await
        .unwrap());
    assert!(
        !rerun("t:strict").await.2,
        "under the merchant's threshold: not at risk"
    );
    assert!(set_warn_probability(&env.app.pool, "fz", Some(p / 2.0))
        .await
        .unwrap());
    assert!(rerun("t:lenient").await.2, "over it: at risk");
    env.cleanup().await;
}

/// Three weeks with nothing sold at the end of four months of 4 a day: where the merchant's
/// history says the shelf was empty, that is lost demand and the forecast is that of a SKU that
/// sold 4 every day; where it says the SKU was in stock, demand really fell and the forecast
/// goes down with it.
#[tokio::test]
async fn a_stock_out_is_lost_demand_not_a_fall_in_demand() {
    let env = TestEnv::new().await;
    let input = MerchantInput {
        webhook_url: Some("https://merchant.example/hooks".into()),
        ..Default::default()
    };
    admin::add_merchant(&env.app, "fs", &input).await.unwrap();
    sqlx::query(
        "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor, in_stock)
         SELECT 'fs', s.sku, d::date, 'imported', CASE WHEN d >= '2026-06-10' THEN 0 ELSE 4 END, NULL::bigint,
                CASE WHEN d >= '2026-06-10' THEN s.stocked END
         FROM generate_series('2026-03-01'::date, '2026-06-30', '1 day') d,
              (VALUES ('EMPTY-SHELF', false), ('FELL', true)) s(sku, stocked)
         UNION ALL
         SELECT 'fs', 'STEADY', d::date, 'imported', 4, NULL, true
         FROM generate_series('2026-03-01'::date, '2026-06-30', '1 day') d",
    )
    .execute(&env.app.pool)
    .await
    .unwrap();
    let run = forecast::open_run(&env.app, "t:censored", day("2026-06-30"), None)
        .await
        .unwrap();
    let (ok, failed) = forecast::run_in_process(&env.app, &run, |_, _| {}).await.unwrap();
    assert_eq!((ok, failed), (1, 0));
    let daily = |sku: &'static str| {
        let pool = env.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>(
                "SELECT (SELECT avg(x) FROM unnest(mean) x) FROM sku_forecasts WHERE merchant_id = 'fs' AND sku = $1",
            )
            .bind(sku)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (steady, empty, fell) = (
        daily("STEADY").await,
        daily("EMPTY-SHELF").await,
        daily("FELL").await,
    );
    eprintln!("steady {steady:.3}, empty shelf {empty:.3}, fell {fell:.3}");
    assert!(
        (empty - steady).abs() <= 0.05 * steady,
        "the stock-out is not read as demand falling: {empty:.2} a day against {steady:.2}"
    );
    assert!(
        fell < 0.9 * empty,
        "a real fall in stock is followed down: {fell:.2} a day against {empty:.2}"
    );
    env.cleanup().await;
}

/// Four months of 4 a day with three 3-day promotions at 12 a day and two holidays with nothing
/// sold, and a calendar that names them and one of each ahead: the past ones do not move the
/// usual level, and the days ahead get their kind's effect.
#[tokio::test]
async fn holidays_and_promotions_are_set_aside_and_move_the_forecast_on_their_dates() {
    let env = TestEnv::new().await;
    let input = MerchantInput {
        webhook_url: Some("https://merchant.example/hooks".into()),
        ..Default::default()
    };
    admin::add_merchant(&env.app, "fh", &input).await.unwrap();
    sqlx::query(
        "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor)
         SELECT 'fh', 'LAMP', d::date, 'imported',
                CASE WHEN d::date IN ('2026-04-20', '2026-05-25') THEN 0
                     WHEN d::date BETWEEN '2026-04-03' AND '2026-04-05' OR d::date BETWEEN '2026-05-08' AND '2026-05-10'
                       OR d::date BETWEEN '2026-06-05' AND '2026-06-07' THEN 12
                     ELSE 4 END, NULL::bigint
         FROM generate_series('2026-03-01'::date, '2026-06-30', '1 day') d",
    )
    .execute(&env.app.pool)
    .await
    .unwrap();
    let file = std::env::temp_dir().join(format!("souk-calendar-{}.csv", env.prefix));
    std::fs::write(
        &file,
        "kind,from,to,sku,name\npromotion,2026-04-03,2026-04-05,,Spring sale\npromotion,2026-05-08,2026-05-10,,May sale\n\
         promotion,2026-06-05,2026-06-07,,June sale\npromotion,2026-07-10,2026-07-12,,July sale\n\
         holiday,2026-04-20,,,Holiday\nholiday,2026-05-25,,,Holiday\nholiday,2026-07-04,,,Holiday\n",
    )
    .unwrap();
    let (ok, text) = env.run_souk(&[
        "forecast",
        "calendar",
        "--merchant",
        "fh",
        &file.to_string_lossy(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("7 periods, 15 days"), "{text}");
    let _ = std::fs::remove_file(&file);

    let run = forecast::open_run(&env.app, "t:calendar", day("2026-06-30"), None)
        .await
        .unwrap();
    let (ok, failed) = forecast::run_in_process(&env.app, &run, |_, _| {}).await.unwrap();
    assert_eq!((ok, failed), (1, 0));
    let mean: Vec<f64> =
        sqlx::query_scalar("SELECT mean FROM sku_forecasts WHERE merchant_id = 'fh' AND sku = 'LAMP'")
            .fetch_one(&env.app.pool)
            .await
            .unwrap();
    // Index 0 is 07-01: the holiday is 07-04 (3), the promotion 07-10..07-12 (9..=11).
    let usual: Vec<f64> = (0..28)
        .filter(|d| *d != 3 && !(9..=11).contains(d))
        .map(|d| mean[d])
        .collect();
    let level = usual.iter().sum::<f64>() / usual.len() as f64;
    eprintln!(
        "usual {level:.3}, holiday {:.3}, promotion {:?}",
        mean[3],
        &mean[9..12]
    );
    assert!(
        (level - 4.0).abs() < 0.2,
        "past promotions and holidays leave the level at 4: {level:.3}"
    );
    assert!(
        mean[9..12].iter().all(|m| *m > 1.8 * level),
        "the promotion ahead: {mean:?}"
    );
    assert!(mean[3] < 0.8 * level, "the holiday ahead: {mean:?}");
    env.cleanup().await;
}

/// A country's holidays, loaded once by an operator, move the forecasts of that country's
/// merchants on their dates, and only theirs; a country file naming a SKU is refused by line.
#[tokio::test]
async fn a_countrys_holidays_move_the_forecasts_of_its_merchants_only() {
    let env = TestEnv::new().await;
    let input = MerchantInput {
        webhook_url: Some("https://merchant.example/hooks".into()),
        ..Default::default()
    };
    for m in ["cn-shop", "other-shop"] {
        admin::add_merchant(&env.app, m, &input).await.unwrap();
    }
    // Both sell 6 a day; both were closed on the three past holidays of the country file.
    sqlx::query(
        "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor)
         SELECT m, 'KETTLE', d::date, 'imported',
                CASE WHEN d::date IN ('2026-04-04', '2026-05-01', '2026-06-19') THEN 0 ELSE 6 END,
                NULL::bigint
         FROM generate_series('2026-03-01'::date, '2026-06-30', '1 day') d,
              unnest(ARRAY['cn-shop', 'other-shop']) m",
    )
    .execute(&env.app.pool)
    .await
    .unwrap();
    let file = std::env::temp_dir().join(format!("souk-country-{}.csv", env.prefix));
    let path = file.to_string_lossy().to_string();
    std::fs::write(
        &file,
        "kind,from,to,sku,name\nholiday,2026-04-04,,KETTLE,Qingming\n",
    )
    .unwrap();
    let (ok, text) = env.run_souk(&["forecast", "calendar", "--country", "CN", &path]);
    assert!(!ok && text.contains(":2: sku \"KETTLE\""), "{text}");
    std::fs::write(
        &file,
        "kind,from,to,sku,name\nholiday,2026-04-04,,,Qingming\nholiday,2026-05-01,,,Labour Day\n\
         holiday,2026-06-19,,,Dragon Boat\nholiday,2026-07-06,,,A holiday ahead\n",
    )
    .unwrap();
    let (ok, text) = env.run_souk(&["forecast", "calendar", "--country", "cn", &path]);
    assert!(ok && text.contains("CN: 4 periods, 4 days"), "{text}");
    let _ = std::fs::remove_file(&file);
    let (ok, text) = env.run_souk(&["forecast", "country", "--merchant", "cn-shop", "CHN"]);
    assert!(!ok && text.contains("ISO 3166-1 alpha-2"), "{text}");
    let (ok, text) = env.run_souk(&["forecast", "country", "--merchant", "cn-shop", "CN"]);
    assert!(ok, "{text}");

    let run = forecast::open_run(&env.app, "t:country", day("2026-06-30"), None)
        .await
        .unwrap();
    let (ok, failed) = forecast::run_in_process(&env.app, &run, |_, _| {}).await.unwrap();
    assert_eq!((ok, failed), (2, 0));
    let mean = |m: &'static str| {
        let pool = env.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Vec<f64>>(
                "SELECT mean FROM sku_forecasts WHERE merchant_id = $1 AND sku = 'KETTLE'",
            )
            .bind(m)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Index 0 is 07-01; the holiday ahead is 07-06 (5).
    let (cn, other) = (mean("cn-shop").await, mean("other-shop").await);
    eprintln!("cn {:?}\nother {:?}", &cn[..8], &other[..8]);
    assert!((cn[4] - 6.0).abs() < 0.3 && (cn[6] - 6.0).abs() < 0.3, "{cn:?}");
    assert!(cn[5] < 0.7 * cn[4], "the country's holiday ahead: {cn:?}");
    // Without the country, the past holidays were three unexplained zero days: no dip ahead.
    assert!(other[5] > 0.8 * other[4], "{other:?}");
    env.cleanup().await;
}

/// A merchant in Shanghai: an order placed at 20:00 UTC on 06-20 is a sale of its 06-21, and
/// setting the zone re-buckets the order history already counted in UTC.
#[tokio::test]
async fn a_merchants_sales_days_are_counted_in_its_time_zone() {
    let env = TestEnv::new().await;
    let input = MerchantInput {
        webhook_url: Some("https://merchant.example/hooks".into()),
        ..Default::default()
    };
    admin::add_merchant(&env.app, "ft", &input).await.unwrap();
    order_line(&env, 1, "ft", "TEA", 3, "accepted", "2026-06-20").await;
    sqlx::query("UPDATE orders SET placed_at = '2026-06-20 20:00:00+00' WHERE storefront_order_id = 'fc-1'")
        .execute(&env.app.pool)
        .await
        .unwrap();
    let pool = &env.app.pool;
    let counted_on = || async {
        souk::store::forecasts::refresh_demand_from_orders(pool, "ft", day("2026-06-01"), day("2026-06-30"))
            .await
            .unwrap();
        sqlx::query_scalar::<_, NaiveDate>(
            "SELECT day FROM sku_daily_demand WHERE merchant_id = 'ft' AND sku = 'TEA'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(counted_on().await, day("2026-06-20"), "UTC by default");
    let set = |zone: &'static str| env.run_souk(&["forecast", "time-zone", "--merchant", "ft", zone]);
    let (ok, text) = set("Nowhere/Atlantis");
    assert!(!ok && text.contains("unknown time zone"), "{text}");
    let (ok, text) = set("Asia/Shanghai");
    assert!(ok, "{text}");
    assert_eq!(counted_on().await, day("2026-06-21"), "04:00 in Shanghai");
    env.cleanup().await;
}
