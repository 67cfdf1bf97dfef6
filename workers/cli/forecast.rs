//! `souk forecast …`: run, show and generate demand forecasts from the command line.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum ForecastAction {
    /// Forecast every merchant (or those named) now. Resumes the day's run: merchants already
    /// done are not done again.
    Run {
        /// Only this merchant (repeatable).
        #[arg(long)]
        merchant: Vec<String>,
        /// Last day of history (YYYY-MM-DD); default yesterday (UTC).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// Start a new run instead of resuming the day's.
        #[arg(long)]
        again: bool,
        /// Queue one job per merchant for the fleet instead of working here.
        #[arg(long)]
        enqueue: bool,
    },
    /// A merchant's latest forecast: SKUs riskiest first, or one SKU with a text chart.
    Show {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        sku: Option<String>,
        /// SKUs listed.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Set the restocking lead time of a merchant, or of one SKU (which wins over its merchant's).
    LeadTime {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        sku: Option<String>,
        /// Days from ordering to sellable stock (0–365); omit with --clear.
        days: Option<i32>,
        /// Go back to the merchant's (or the configured) lead time.
        #[arg(long, conflicts_with = "days")]
        clear: bool,
    },
    /// Set a merchant's stock-out threshold: SKUs at least this likely to run out within their
    /// lead time are at risk (advice and digest). Omit with --clear for forecast.warn_probability.
    Threshold {
        #[arg(long)]
        merchant: String,
        /// A probability between 0 and 1 (exclusive), e.g. 0.5.
        probability: Option<f64>,
        #[arg(long, conflicts_with = "probability")]
        clear: bool,
    },
    /// Import a merchant's own daily sales history (CSV with a header, or JSON lines): sku,
    /// date, units, and optionally revenue_minor, on_hand, in_stock. Checked whole first; on
    /// any bad line nothing is written and every refusal is listed with its line number.
    Import {
        #[arg(long)]
        merchant: String,
        file: std::path::PathBuf,
        /// Remove the merchant's imported history first (default: merge, the file's days win).
        #[arg(long)]
        replace: bool,
        /// csv or jsonl (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
    },
    /// Set the time zone a merchant's sales days are counted in (an IANA name such as
    /// Asia/Shanghai; default UTC). Its order history is counted in it from the next run.
    TimeZone {
        #[arg(long)]
        merchant: String,
        zone: String,
    },
    /// Set whether a merchant's history and forecasts are by day (the default) or by week
    /// (Monday to Sunday; for merchants whose sales reports are weekly). Its next run reads
    /// its history by that period; weekly history files can be imported once it is weekly.
    Period {
        #[arg(long)]
        merchant: String,
        /// day or week
        period: String,
    },
    /// Import a merchant's calendar of holidays and promotions (CSV with a header: kind
    /// holiday|promotion, from, and optionally to, sku, name), set aside when fitting and
    /// applied to the days ahead; or, with --country, a country's (no sku column values), used
    /// by every merchant of that country besides its own. Checked whole first, every bad line
    /// listed.
    #[command(group(clap::ArgGroup::new("whose").required(true).args(["merchant", "country"])))]
    Calendar {
        #[arg(long)]
        merchant: Option<String>,
        /// An ISO 3166-1 alpha-2 code, e.g. CN.
        #[arg(long)]
        country: Option<String>,
        file: std::path::PathBuf,
        /// Remove the merchant's (or country's) calendar first (default: merge).
        #[arg(long)]
        replace: bool,
    },
    /// Set the country whose calendar (`souk forecast calendar --country`) a merchant's
    /// forecasts also use; omit with --clear for none.
    Country {
        #[arg(long)]
        merchant: String,
        /// An ISO 3166-1 alpha-2 code, e.g. CN.
        code: Option<String>,
        #[arg(long, conflicts_with = "code")]
        clear: bool,
    },
    /// Load a seeded, generated marketplace history (daily demand and stock) into Postgres.
    Generate {
        #[arg(long, default_value_t = 20)]
        merchants: usize,
        #[arg(long, default_value_t = 2_000)]
        skus: usize,
        #[arg(long, default_value_t = 730)]
        days: usize,
        #[arg(long, default_value_t = 20261124)]
        seed: u64,
        /// Last day of the history; default yesterday (UTC).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// Webhook URL of merchants created ({id} is replaced). `souk sandbox`'s receivers are at
        /// http://127.0.0.1:12111/merchants/{id}/webhook (needs webhooks.allow_private_targets).
        #[arg(long, default_value = "https://{id}.merchant.invalid/webhook")]
        webhook_url: String,
    },
    /// souk's forecast of every series of a CSV (series,date,y; one row per series and day)
    /// from all but its last --horizon days, as CSV on stdout (series,date,mean,p50,p90,p95,
    /// model): for comparisons with other tools (bench/accuracy/). Needs no services.
    Evaluate {
        file: std::path::PathBuf,
        #[arg(long, default_value_t = 28)]
        horizon: usize,
    },
}

pub(crate) async fn forecast_command(config: Config, action: ForecastAction) -> anyhow::Result<()> {
    use souk::{forecast, store::forecasts};
    if let ForecastAction::Evaluate { file, horizon } = &action {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let settings = config.forecast.settings();
        let out = tokio::task::spawn_blocking({
            let horizon = *horizon;
            move || forecast::evaluate::evaluate(&text, horizon, &settings)
        })
        .await??;
        print!("{out}");
        return Ok(());
    }
    let app = App::connect(config).await?;
    match action {
        ForecastAction::Evaluate { .. } => unreachable!("answered before connecting"),
        ForecastAction::Import {
            merchant,
            file,
            replace,
            format,
        } => {
            use std::io::{IsTerminal, Write};
            let name = format.unwrap_or_else(|| file.to_string_lossy().into_owned());
            let format = forecast::import::Format::parse(&name)
                .ok_or_else(|| anyhow::anyhow!("say --format csv or --format jsonl"))?;
            let source = forecast::import::Source::File(file.clone());
            let tty = std::io::stderr().is_terminal();
            let started = std::time::Instant::now();
            let mut shown = 0u64;
            let out =
                forecast::import::import(&app.pool, &merchant, &source, format, replace, |done, total| {
                    let pct = done * 100 / total.max(1);
                    if tty {
                        eprint!("\rimported {done} of {total} rows ({pct} %)");
                        let _ = std::io::stderr().flush();
                    } else if pct >= shown + 10 || done == total {
                        shown = pct;
                        eprintln!("imported {done} of {total} rows ({pct} %)");
                    }
                })
                .await?;
            if tty && out.rows > 0 {
                eprintln!();
            }
            if out.error_count > 0 {
                for e in &out.errors {
                    println!("{}:{}: {}", file.display(), e.line, e.message);
                }
                if out.error_count > out.errors.len() {
                    println!("… and {} more", out.error_count - out.errors.len());
                }
                anyhow::bail!("{} bad lines: nothing imported", out.error_count);
            }
            println!(
                "{merchant}: {} rows imported{} in {:.1} s",
                out.rows,
                if replace {
                    format!(" ({} replaced)", out.replaced)
                } else {
                    String::new()
                },
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        ForecastAction::TimeZone { merchant, zone } => {
            match forecasts::set_time_zone(&app.pool, &merchant, &zone).await? {
                forecasts::ZoneSet::Set => {
                    println!("time zone of {merchant}: {zone} (its sales days from the next forecast run)")
                }
                forecasts::ZoneSet::NoMerchant => anyhow::bail!("no merchant {merchant}"),
                forecasts::ZoneSet::UnknownZone => {
                    anyhow::bail!("unknown time zone {zone:?}: give an IANA name such as Europe/Paris")
                }
            }
            Ok(())
        }
        ForecastAction::Period { merchant, period } => {
            let Some(p) = souk::domain::forecast::Period::parse(&period) else {
                anyhow::bail!("period {period:?}: give day or week")
            };
            if !forecasts::set_period(&app.pool, &merchant, p).await? {
                anyhow::bail!("no merchant {merchant}");
            }
            println!("{merchant}: history and forecasts by {period} from the next forecast run");
            Ok(())
        }
        ForecastAction::Country {
            merchant,
            code,
            clear,
        } => {
            let code = match (code, clear) {
                (Some(c), _) => Some(country_code(&c)?),
                (None, true) => None,
                (None, false) => anyhow::bail!("give a country code, or --clear"),
            };
            if !souk::store::calendar::set_country(&app.pool, &merchant, code.as_deref()).await? {
                anyhow::bail!("no merchant {merchant}");
            }
            match code {
                Some(c) => println!("{merchant}: {c}'s calendar is used from the next forecast run"),
                None => println!("{merchant}: no country's calendar from the next forecast run"),
            }
            Ok(())
        }
        ForecastAction::Calendar {
            merchant,
            country,
            file,
            replace,
        } => {
            // A bad code is refused before the file is read.
            let country = country.as_deref().map(country_code).transpose()?;
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            use souk::domain::forecast::calendar::{parse_calendar, parse_country_calendar};
            let parsed = match &country {
                Some(_) => parse_country_calendar(&text),
                None => parse_calendar(&text),
            };
            let periods = match parsed {
                Ok(p) => p,
                Err(errors) => {
                    for e in &errors {
                        println!("{}:{}: {}", file.display(), e.line, e.message);
                    }
                    anyhow::bail!("{} bad lines: nothing imported", errors.len());
                }
            };
            let (whose, days) = match (merchant, country) {
                (Some(merchant), _) => {
                    if souk::store::merchants::get(&app.pool, &merchant).await?.is_none() {
                        anyhow::bail!("no merchant {merchant}");
                    }
                    let days = souk::store::calendar::write(&app.pool, &merchant, &periods, replace).await?;
                    (merchant, days)
                }
                (None, Some(country)) => {
                    let days =
                        souk::store::calendar::write_country(&app.pool, &country, &periods, replace).await?;
                    (country, days)
                }
                (None, None) => unreachable!("clap requires --merchant or --country"),
            };
            println!(
                "{whose}: {} periods, {days} days in the calendar{}",
                periods.len(),
                if replace { " (replaced)" } else { "" }
            );
            Ok(())
        }
        ForecastAction::Run {
            merchant,
            as_of,
            again,
            enqueue,
        } => {
            let as_of = as_of.unwrap_or_else(|| forecast::default_as_of(chrono::Utc::now()));
            let key = if again {
                format!(
                    "manual:{as_of}:{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
                )
            } else {
                forecast::daily_key(as_of)
            };
            let only = (!merchant.is_empty()).then_some(merchant);
            if enqueue {
                let (run, n) = forecast::plan(&app, Some(as_of), Some(key), only.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "run {} ({}): {n} merchant jobs queued on {}",
                    run.id,
                    run.run_key,
                    souk::enqueue::FORECAST_MERCHANT
                );
                return Ok(());
            }
            let run = forecast::open_run(&app, &key, as_of, only.as_deref()).await?;
            let pending = forecasts::pending_merchants(&app.pool, run.id).await?;
            println!(
                "run {} ({}, history to {}): {} of {} merchants to do",
                run.id,
                run.run_key,
                run.as_of,
                pending.len(),
                run.merchants_total
            );
            let started = std::time::Instant::now();
            let (ok, failed) = forecast::run_in_process(&app, &run, |m, r| match r {
                Ok(o) if o.skipped => println!("  {m}: already done"),
                Ok(o) => println!(
                    "  {m}: {} SKUs, {} at risk{}",
                    o.skus,
                    o.at_risk,
                    if o.digest.is_some() { ", digest queued" } else { "" }
                ),
                Err(e) => println!("  {m}: FAILED: {e:#}"),
            })
            .await?;
            println!(
                "{ok} merchants done, {failed} failed, in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            anyhow::ensure!(failed == 0, "{failed} merchants failed; run again to retry them");
            Ok(())
        }
        ForecastAction::Show {
            merchant,
            sku,
            limit,
            json,
        } => {
            let rows = forecasts::latest_advice(&app.pool, &merchant, sku.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows.iter().take(limit).collect::<Vec<_>>())?
                );
                return Ok(());
            }
            let Some(first) = rows.first() else {
                anyhow::bail!(
                    "no forecast for merchant {merchant}{} yet: run `souk forecast run`",
                    sku.map(|s| format!(" SKU {s}")).unwrap_or_default()
                );
            };
            if let Some(sku) = &sku {
                let r = first;
                let weekly = r.period_days == 7;
                let (unit, span) = if weekly { ("week", 8 * 7) } else { ("day", 56) };
                let from = r.series_end - chrono::Duration::days(span - 1);
                let mut hist = forecasts::daily_units(&app.pool, &merchant, sku, from, r.series_end).await?;
                if weekly {
                    hist = hist.chunks(7).map(|w| w.iter().sum()).collect();
                }
                println!(
                    "{merchant} / {sku}: forecast by {unit} from {} (run {})",
                    r.series_end + chrono::Duration::days(1),
                    r.run_id
                );
                println!(
                    "  model {}{}, demand {}, validation RMSSE {}",
                    r.model,
                    r.fallback
                        .as_ref()
                        .map(|f| format!(" (fallback: {f})"))
                        .unwrap_or_default(),
                    r.demand_class,
                    r.validation_rmsse.map_or("-".to_owned(), |v| format!("{v:.3}"))
                );
                let first_week = if weekly { 1 } else { 7 };
                let week = souk::domain::forecast::dist::Demand::new(
                    r.mean.iter().take(first_week).sum::<f64>(),
                    r.mean.iter().take(first_week).sum::<f64>() * r.dispersion,
                );
                let mut q = [0.0; 3];
                week.quantiles(&souk::domain::forecast::LEVELS, &mut q);
                println!(
                    "  next {}: mean {:.1} units; p50 {}, p90 {}, p95 {}",
                    if weekly { "week" } else { "7 days" },
                    week.mean,
                    q[0],
                    q[1],
                    q[2]
                );
                println!(
                    "  stock {} available; lead time {} d, demand over it {:.1}; P(stock-out) {:.0} %; reorder point {}; suggested order {}",
                    r.available,
                    r.lead_time_days,
                    r.lead_time_demand,
                    r.stockout_probability * 100.0,
                    r.reorder_point,
                    r.suggested_order
                );
                println!();
                print!("{}", forecast::text_chart(&hist, &r.p50, &r.p90, 10, unit));
                return Ok(());
            }
            let at_risk = rows.iter().filter(|r| r.at_risk).count();
            println!(
                "{merchant}: {} SKUs forecast from {} (run {}), {at_risk} at risk of running out within their lead time",
                rows.len(),
                first.as_of + chrono::Duration::days(1),
                first.run_id
            );
            println!(
                "{:<16} {:<13} {:<14} {:>6} {:>8} {:>7} {:>6} {:>7} {:>6} {:>11}",
                "SKU", "demand", "model", "stock", "LT dem.", "P(out)", "ROP", "order", "cover", "value@risk"
            );
            for r in rows.iter().take(limit) {
                println!(
                    "{:<16} {:<13} {:<14} {:>6} {:>8.1} {:>6.0}% {:>6} {:>7} {:>6} {:>11.2}",
                    r.sku,
                    r.demand_class,
                    r.model,
                    r.available,
                    r.lead_time_demand,
                    r.stockout_probability * 100.0,
                    r.reorder_point,
                    r.suggested_order,
                    r.days_of_cover.map_or("-".to_owned(), |d| format!("{d} d")),
                    r.value_at_risk_minor as f64 / 100.0
                );
            }
            if rows.len() > limit {
                println!("… {} more (--limit)", rows.len() - limit);
            }
            println!(
                "\nOne SKU with its chart: souk forecast show --merchant {merchant} --sku {}",
                first.sku
            );
            Ok(())
        }
        ForecastAction::LeadTime {
            merchant,
            sku,
            days,
            clear,
        } => {
            anyhow::ensure!(clear || days.is_some(), "give the lead time in days, or --clear");
            if let Some(d) = days {
                anyhow::ensure!((0..=365).contains(&d), "the lead time must be 0 to 365 days");
            }
            let what = sku.as_ref().map_or(format!("merchant {merchant}"), |s| {
                format!("SKU {s} of {merchant}")
            });
            if !forecasts::set_lead_time(&app.pool, &merchant, sku.as_deref(), days).await? {
                anyhow::bail!("no {what}");
            }
            match days {
                Some(d) => println!("lead time of {what}: {d} days (used from the next forecast run)"),
                None => println!("lead time of {what} cleared"),
            }
            Ok(())
        }
        ForecastAction::Threshold {
            merchant,
            probability,
            clear,
        } => {
            anyhow::ensure!(clear || probability.is_some(), "give the probability, or --clear");
            if let Some(p) = probability {
                anyhow::ensure!(
                    p > 0.0 && p < 1.0,
                    "the probability must be between 0 and 1 (exclusive)"
                );
            }
            if !forecasts::set_warn_probability(&app.pool, &merchant, probability).await? {
                anyhow::bail!("no merchant {merchant}");
            }
            match probability {
                Some(p) => {
                    println!("stock-out threshold of {merchant}: {p} (used from the next forecast run)")
                }
                None => println!("stock-out threshold of {merchant} cleared"),
            }
            Ok(())
        }
        ForecastAction::Generate {
            merchants,
            skus,
            days,
            seed,
            as_of,
            webhook_url,
        } => {
            anyhow::ensure!(
                merchants >= 1 && skus >= 1 && days >= 28,
                "need at least 1 merchant, 1 SKU and 28 days"
            );
            let as_of = as_of.unwrap_or_else(|| forecast::default_as_of(chrono::Utc::now()));
            let spec = souk::domain::forecast::generator::PanelSpec {
                merchants,
                skus,
                days,
                seed,
            };
            let ids: Vec<String> = (0..merchants)
                .map(souk::domain::forecast::generator::merchant_id)
                .collect();
            let loaded = forecast::generate::load(&app, &spec, &ids, as_of, &webhook_url, &[]).await?;
            println!(
                "loaded {} SKUs of {} merchants ({} created): {} demand rows from {} to {}",
                loaded.skus,
                loaded.merchants,
                loaded.merchants_created,
                loaded.demand_rows,
                loaded.first_day,
                loaded.last_day
            );
            println!("next: souk forecast run --as-of {as_of}");
            Ok(())
        }
    }
}

/// An ISO 3166-1 alpha-2 code as stored, or a clear refusal.
fn country_code(code: &str) -> anyhow::Result<String> {
    souk::domain::forecast::calendar::country_code(code)
        .with_context(|| format!("country {code:?}: give an ISO 3166-1 alpha-2 code such as CN"))
}
