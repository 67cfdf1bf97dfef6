//! A merchant whose history is weekly: its weeks imported, forecast by week (with a stock-out
//! week as lost demand), and stock advice still in days of lead time.

use chrono::NaiveDate;

use crate::support::TestEnv;

#[tokio::test]
async fn a_weekly_merchant_is_imported_forecast_and_advised_by_week() {
    let env = TestEnv::new().await;
    let input = souk::store::merchants::MerchantInput {
        webhook_url: Some("https://weekly.example/hook".into()),
        ..Default::default()
    };
    souk::admin::add_merchant(&env.app, "fw", &input).await.unwrap();
    let pool = &env.app.pool;
    let dir = std::env::temp_dir().join(format!("souk-weekly-{}", env.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    // 40 weeks of 70 from the week of 2026-01-05 (ISO 2026-W02); the last three weeks the
    // shelf was empty after 10 sold.
    let mut csv = String::from("sku,week,units,in_stock\n");
    for w in 0..40 {
        let monday = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap() + chrono::Duration::weeks(w);
        let (units, in_stock) = if w >= 37 { (10, "false") } else { (70, "true") };
        csv.push_str(&format!("TEA,{monday},{units},{in_stock}\n"));
    }
    let weekly = dir.join("weekly.csv");
    std::fs::write(&weekly, &csv).unwrap();
    let weekly = weekly.to_string_lossy().into_owned();

    // Weeks for a daily merchant are refused, and nothing is written.
    let (ok, text) = env.run_souk(&["forecast", "import", "--merchant", "fw", &weekly]);
    assert!(
        !ok && text.contains("forecast period --merchant fw week"),
        "{text}"
    );
    let (ok, text) = env.run_souk(&["forecast", "period", "--merchant", "fw", "week"]);
    assert!(ok, "{text}");
    let (ok, text) = env.run_souk(&["forecast", "import", "--merchant", "fw", &weekly]);
    assert!(ok, "{text}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sku_daily_demand WHERE merchant_id = 'fw'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 40, "one row per week, on its Monday");
    // And days for a weekly merchant.
    let daily = dir.join("daily.csv");
    std::fs::write(&daily, "sku,date,units\nTEA,2026-10-01,3\n").unwrap();
    let (ok, text) = env.run_souk(&["forecast", "import", "--merchant", "fw", &daily.to_string_lossy()]);
    assert!(!ok && text.contains("send one row per week"), "{text}");

    // 100 on hand, 14 days of lead time: two weeks at 70 a week are 140.
    sqlx::query(
        "INSERT INTO stock (merchant_id, sku, on_hand, lead_time_days) VALUES ('fw', 'TEA', 100, 14)",
    )
    .execute(pool)
    .await
    .unwrap();
    // A Wednesday: the week in progress is not fitted; the last whole week ended on Sunday.
    let as_of = NaiveDate::from_ymd_opt(2026, 10, 14).unwrap();
    let run = souk::forecast::open_run(&env.app, "t:weekly", as_of, None)
        .await
        .unwrap();
    let (ok, failed) = souk::forecast::run_in_process(&env.app, &run, |_, _| {})
        .await
        .unwrap();
    assert_eq!((ok, failed), (1, 0));
    let (series_end, period_days, mean, model): (NaiveDate, i16, Vec<f64>, String) = sqlx::query_as(
        "SELECT as_of, period_days, mean, model FROM sku_forecasts WHERE merchant_id = 'fw' AND sku = 'TEA'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(series_end, NaiveDate::from_ymd_opt(2026, 10, 11).unwrap());
    assert_eq!(period_days, 7);
    assert_eq!(mean.len(), 8, "forecast.horizon_weeks");
    eprintln!("weekly forecast {:.1} by {model}", mean[0]);
    assert!(
        (mean[0] - 70.0).abs() <= 3.5,
        "the empty shelf is lost demand: {:.1} a week, not the 10 sold",
        mean[0]
    );
    let (lead_demand, p_out): (f64, f64) = sqlx::query_as(
        "SELECT lead_time_demand, stockout_probability FROM stock_advice WHERE merchant_id = 'fw' AND sku = 'TEA'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        (lead_demand - 2.0 * mean[0]).abs() < 1e-6,
        "14 days of a weekly forecast are its first two weeks: {lead_demand:.2}"
    );
    assert!(
        p_out > 0.5,
        "100 on hand against ~140 over the lead time: {p_out:.3}"
    );
    let advice = souk::store::forecasts::latest_advice(pool, "fw", None)
        .await
        .unwrap();
    assert_eq!(advice[0].period_days, 7);

    // `souk forecast show` speaks in weeks.
    let (ok, text) = env.run_souk(&["forecast", "show", "--merchant", "fw", "--sku", "TEA"]);
    assert!(
        ok && text.contains("forecast by week from 2026-10-12") && text.contains("next week:"),
        "{text}"
    );
    env.cleanup().await;
}
