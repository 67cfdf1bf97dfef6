//! `souk bench import`: a generated daily history file of N rows imported into a fresh
//! database through `souk forecast import`'s own path (check, then 10,000-row transactions).

use std::io::Write;

use anyhow::Context;
use serde_json::json;

use crate::{app::App, config::Config, forecast::import};

pub struct ImportBenchOptions {
    pub rows: usize,
    pub skus: usize,
}

pub async fn import_history(config: &Config, opts: &ImportBenchOptions) -> anyhow::Result<serde_json::Value> {
    let skus = opts.skus.clamp(1, opts.rows.max(1));
    let days = opts.rows.div_ceil(skus);
    let app = App::connect(super::bench_config(config)?).await?;
    let calibration = super::Calibration::measure(&app.pool).await;
    let input = crate::store::merchants::MerchantInput {
        name: None,
        webhook_url: Some("https://bench.merchant.invalid/webhook".into()),
        acceptance_mode: None,
        acceptance_default: None,
        acceptance_deadline_s: None,
        commission_bps: None,
        webhook_version: None,
    };
    crate::admin::add_merchant(&app, "m-import", &input).await?;
    let path = std::env::temp_dir().join(format!("souk-bench-import-{}.csv", std::process::id()));
    let started = std::time::Instant::now();
    let last = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let first = last - chrono::Duration::days(days as i64 - 1);
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        writeln!(f, "sku,date,units,revenue_minor")?;
        let mut rng = fastrand::Rng::with_seed(20261203);
        let mut n = 0;
        'outer: for s in 0..skus {
            for d in 0..days {
                if n == opts.rows {
                    break 'outer;
                }
                let units = rng.u32(0..6);
                let day = first + chrono::Duration::days(d as i64);
                writeln!(f, "SKU-{s:06},{day},{units},{}", units * 1_250)?;
                n += 1;
            }
        }
        f.flush()?;
    }
    let generate_s = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    let busy0 = super::machine_busy_ms();
    let started = std::time::Instant::now();
    let source = import::Source::File(path.clone());
    let out = import::import(
        &app.pool,
        "m-import",
        &source,
        import::Format::Csv,
        false,
        |_, _| {},
    )
    .await
    .context("the import")?;
    let import_s = started.elapsed().as_secs_f64();
    let busy_ms = super::machine_busy_ms().zip(busy0).map(|(b, a)| b - a);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sku_daily_demand WHERE source = 'imported'")
        .fetch_one(&app.pool)
        .await?;
    std::fs::remove_file(&path).ok();
    super::drop_world(&app).await?;
    anyhow::ensure!(
        out.error_count == 0,
        "the generated file was refused: {:?}",
        out.errors.first()
    );
    let v = json!({
        "bench": "import",
        "rows": out.rows,
        "stored": stored,
        "skus": skus,
        "file_mb": (bytes as f64 / 1e6 * 10.0).round() / 10.0,
        "generate_s": (generate_s * 10.0).round() / 10.0,
        "import_s": (import_s * 10.0).round() / 10.0,
        "rows_per_s": (out.rows as f64 / import_s).round(),
        "machine_cpu_us_per_row": busy_ms.map(|b| (b * 1000.0 / out.rows.max(1) as f64 * 10.0).round() / 10.0),
    });
    Ok(super::with_calibration(v, &calibration))
}
