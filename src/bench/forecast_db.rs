//! `souk bench forecast --through-db`: the nightly forecast's real path on a generated panel in
//! a fresh database. The history is loaded first (timed and reported apart), then every merchant
//! of one run is read, fitted and written exactly as the `souk.forecast_merchant.v1` job does it,
//! `--threads` merchants at a time (as that many single-concurrency workers would).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::json;

use crate::{app::App, config::Config, domain::forecast::generator::PanelSpec, forecast};

pub struct ForecastDbOptions {
    pub skus: usize,
    pub merchants: usize,
    pub days: usize,
    pub seed: u64,
    pub threads: usize,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

pub async fn forecast_through_db(
    config: &Config,
    o: &ForecastDbOptions,
) -> anyhow::Result<serde_json::Value> {
    let app = App::connect(super::bench_config(config)?).await?;
    let calibration = super::Calibration::measure(&app.pool).await;
    let spec = PanelSpec {
        merchants: o.merchants.max(1),
        skus: o.skus,
        days: o.days,
        seed: o.seed,
    };
    let ids: Vec<String> = (0..spec.merchants).map(|m| format!("m{m:04}")).collect();
    let as_of = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let started = Instant::now();
    let loaded = forecast::generate::load(
        &app,
        &spec,
        &ids,
        as_of,
        "https://bench.merchant.invalid/{id}",
        &[],
    )
    .await
    .context("loading the generated history")?;
    // What a database that has been running holds: its statistics and visibility map current.
    sqlx::query("VACUUM (ANALYZE) sku_daily_demand")
        .execute(&app.pool)
        .await?;
    let load = started.elapsed();

    let busy0 = super::machine_busy_ms();
    let started = Instant::now();
    let run = forecast::open_run(&app, "bench:through-db", as_of, None).await?;
    let todo: VecDeque<String> = crate::store::forecasts::pending_merchants(&app.pool, run.id)
        .await?
        .into();
    let todo = Arc::new(Mutex::new(todo));
    let mut workers = Vec::new();
    for _ in 0..o.threads.max(1) {
        let (app, run, todo) = (app.clone(), run.clone(), todo.clone());
        workers.push(tokio::spawn(async move {
            let mut phases = forecast::Phases::default();
            loop {
                let Some(m) = todo.lock().expect("queue").pop_front() else {
                    return Ok::<_, anyhow::Error>(phases);
                };
                let out = forecast::process_merchant(&app, &run, &m).await?;
                phases.add(&out.phases);
            }
        }));
    }
    let mut phases = forecast::Phases::default();
    for w in workers {
        phases.add(&w.await.context("a forecast worker panicked")??);
    }
    let run_time = started.elapsed();
    let busy_ms = super::machine_busy_ms().zip(busy0).map(|(b, a)| b - a);
    let (forecasts, advice): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sku_forecasts WHERE run_id = $1),
                (SELECT count(*) FROM stock_advice WHERE run_id = $1)",
    )
    .bind(run.id)
    .fetch_one(&app.pool)
    .await?;
    super::drop_world(&app).await?;
    anyhow::ensure!(
        forecasts as usize == o.skus,
        "{forecasts} forecasts stored for {} SKUs",
        o.skus
    );
    let v = json!({
        "bench": "forecast_through_db",
        "skus": o.skus,
        "merchants": spec.merchants,
        "days": o.days,
        "demand_rows": loaded.demand_rows,
        "load_s": secs(load),
        "run_s": secs(run_time),
        "skus_per_s": (o.skus as f64 / run_time.as_secs_f64()).round(),
        "threads": o.threads,
        // Summed over the merchants (so over the threads): where a run's time goes.
        "read_s": secs(phases.read),
        "fit_s": secs(phases.fit),
        "write_s": secs(phases.write),
        "forecasts": forecasts,
        "stock_advice": advice,
        "machine_cpu_ms_per_sku": busy_ms.map(|b| (b / o.skus.max(1) as f64 * 100.0).round() / 100.0),
    });
    Ok(super::with_calibration(v, &calibration))
}
