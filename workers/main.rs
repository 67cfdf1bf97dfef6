//! The `souk` binary: what an operator deploys and runs.
//!
//! Parses the command line, loads configuration, handles SIGTERM/SIGINT and the ops port, and
//! hands everything else to the library.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use souk::{
    app::App,
    bench,
    config::Config,
    queue::{dead, stats, QueueKeys},
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "souk",
    version,
    about = "Fulfilment back end of a multi-merchant marketplace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start workers (all queues, or only those named) and the cron scheduler.
    Run {
        /// Comma-separated queue names; all queues when omitted.
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// Do not run the cron scheduler in this process.
        #[arg(long)]
        no_cron: bool,
    },
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Show every queue: length, pending per consumer, oldest age, delayed, dead, rates.
    Queues {
        #[arg(long)]
        json: bool,
    },
    /// Inspect and act on dead letters.
    Dead {
        #[command(subcommand)]
        action: DeadAction,
    },
    /// Push one job: a queue name and its JSON payload.
    Push { queue: String, payload: String },
    /// Enqueue storefront commands from a file (one JSON document, or one per line; - for stdin).
    Enqueue { file: String },
    /// Manage merchants (the admin HTTP API does the same).
    Merchants {
        #[command(subcommand)]
        action: MerchantAction,
    },
    /// Inspect orders.
    Orders {
        #[command(subcommand)]
        action: OrderAction,
    },
    /// Serve the sandbox (Stripe-compatible payments, merchant webhook receivers) on 127.0.0.1.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: std::net::SocketAddr,
        /// The API key the sandbox accepts (use it as payment.api_key).
        #[arg(long, default_value = "sk_test_souk_sandbox")]
        api_key: String,
    },
    /// Souk's main job, played end to end against the sandbox: a storefront placing orders.
    Demo {
        #[arg(long, default_value_t = 3_000)]
        orders: usize,
    },
    /// Demand forecasts: run them, look at them, load a generated history.
    Forecast {
        #[command(subcommand)]
        action: ForecastAction,
    },
    /// Benchmarks; each prints one JSON object as its last line.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
}

#[derive(Subcommand)]
enum MerchantAction {
    /// Add a merchant; prints its signing secret once.
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: String,
        /// auto (accept at once) or manual (merchant decides by the deadline).
        #[arg(long)]
        mode: Option<String>,
        /// accept or reject: what happens at the deadline without a decision.
        #[arg(long)]
        default: Option<String>,
        #[arg(long)]
        deadline_s: Option<i32>,
        #[arg(long)]
        commission_bps: Option<i32>,
    },
    /// List merchants (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a merchant; a new URL re-enables a disabled endpoint.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        default: Option<String>,
        #[arg(long)]
        deadline_s: Option<i32>,
        #[arg(long)]
        commission_bps: Option<i32>,
    },
    /// Set a merchant's ship-by deadline: accepted sub-orders not shipped within it are flagged late.
    ShipBy {
        id: String,
        /// Seconds from acceptance; omit with --clear to use tracking.ship_by_s.
        seconds: Option<i32>,
        #[arg(long, conflicts_with = "seconds")]
        clear: bool,
    },
    /// A merchant's KPIs over the last days (recomputed first).
    Kpis {
        id: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Set the merchant's payout account at the payment provider (Stripe: acct_...).
    PayoutAccount {
        id: String,
        account: Option<String>,
        #[arg(long, conflicts_with = "account")]
        clear: bool,
    },
    /// Issue a new signing secret; the previous one keeps signing until --drop-old.
    RotateSecret {
        id: String,
        #[arg(long)]
        drop_old: bool,
    },
}

#[derive(Subcommand)]
enum OrderAction {
    /// The whole story of one order, by storefront order id or souk id.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeadAction {
    /// List dead letters, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        id: String,
        #[arg(long)]
        queue: Option<String>,
    },
    /// Put dead letters back on their queue: by id, a whole queue (--queue), or all (--all).
    Retry {
        ids: Vec<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters: by id, a whole queue (--queue), or all (--all).
    Purge {
        ids: Vec<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ForecastAction {
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
}

#[derive(Subcommand)]
enum BenchKind {
    /// Backtest of the demand forecasts on a generated marketplace panel (no services needed).
    Forecast {
        #[arg(long, default_value_t = 100_000)]
        skus: usize,
        #[arg(long, default_value_t = 1_000)]
        merchants: usize,
        /// Days of history per SKU (the last `horizon` are held out).
        #[arg(long, default_value_t = 730)]
        days: usize,
        #[arg(long, default_value_t = 20261124)]
        seed: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Orders through the whole pipeline against the sandbox: a burst, then a paced phase.
    Pipeline {
        #[arg(long, default_value_t = 5_000)]
        orders: usize,
        #[arg(long, default_value_t = 8)]
        merchants: usize,
        /// Orders per second offered in the paced (latency) phase.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 5_000)]
        paced_orders: usize,
        /// Orders run through first and not counted: connections opened, statements prepared,
        /// scripts loaded, so the burst measures a running fleet rather than its start.
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        /// Runs one after another, each in a fresh database; the last line is their summary
        /// (medians, each figure's min, max and per-run values, sums of oversold and lost).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Shipments tracked to their end against the sandbox's rate-limited tracking provider.
    Tracking {
        #[arg(long, default_value_t = 1_000)]
        shipments: usize,
        #[arg(long, default_value_t = 4)]
        merchants: usize,
        /// souk's limit on provider calls per second (the sandbox allows 10 % more).
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Milliseconds between two scripted carrier events.
        #[arg(long, default_value_t = 2_000)]
        step_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Many orders for one SKU with little stock.
    FlashSale {
        #[arg(long, default_value_t = 20_000)]
        orders: usize,
        #[arg(long, default_value_t = 1_000)]
        stock: i64,
        #[arg(long)]
        json: bool,
    },
    /// Push a backlog of no-op jobs and drain it with one worker process.
    Queue {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1_000_000)]
        backlog: usize,
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// Print only the JSON line (figures go to stderr otherwise too).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("souk: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = config.log.clone();
    if matches!(cli.command, Command::Demo { .. } | Command::Bench { .. })
        && std::env::var_os("SOUK_LOG__LEVEL").is_none()
    {
        // The demo and benchmarks print their own report; keep routine logs out of it
        // (unless SOUK_LOG__LEVEL asks for them, e.g. "souk::store::batch=debug").
        log.level = "error".to_owned();
    }
    souk::telemetry::init(&log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("souk: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("souk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn redis_conn(config: &Config) -> anyhow::Result<redis::aio::ConnectionManager> {
    let client = souk::queue::backend::open_client(&config.redis.url)?;
    souk::queue::backend::connection_manager(&client, None)
        .await
        .with_context(|| {
            format!(
                "connecting to redis at {}",
                souk::config::redact_url(&config.redis.url)
            )
        })
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run { queues, no_cron } => {
            let app = App::connect(config.clone()).await?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            if !config.ops.listen.is_empty() {
                let addr: SocketAddr = config.ops.listen.parse().context("ops.listen")?;
                let mut rx = rx.clone();
                let ops_app = app.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.changed().await;
                    };
                    if let Err(e) = souk::http::serve(addr, ops_app, stop).await {
                        tracing::error!(%addr, error = %e, "ops server failed");
                    }
                });
            }
            app.run_workers(&queues, !no_cron, async move {
                shutdown_signal().await;
                let _ = tx.send(true);
            })
            .await?;
            tracing::info!("all workers stopped");
            Ok(())
        }
        Command::Migrate => {
            let pool = souk::store::migrate(&config.database.url).await?;
            pool.close().await;
            println!(
                "migrations applied to {}",
                souk::config::redact_url(&config.database.url)
            );
            Ok(())
        }
        Command::Queues { json } => {
            let mut conn = redis_conn(&config).await?;
            let prefix = &config.redis.key_prefix;
            let mut all = Vec::new();
            for q in stats::queue_names(&mut conn, prefix).await? {
                all.push(stats::queue_stats(&mut conn, &QueueKeys::new(prefix, &q)).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            if all.is_empty() {
                println!("no queues under prefix {prefix:?} yet");
            }
            for s in all {
                println!(
                    "{}\n  length {}  waiting {}  pending {}  delayed {}  dead {}  oldest {}",
                    s.queue,
                    s.length,
                    s.waiting,
                    s.pending,
                    s.delayed,
                    s.dead,
                    s.oldest_age_s
                        .map(|a| format!("{a:.1}s"))
                        .unwrap_or_else(|| "-".into())
                );
                let rates: Vec<String> = s
                    .rates_per_min
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.1}/min"))
                    .collect();
                println!(
                    "  last 5 min: {}",
                    if rates.is_empty() {
                        "idle".to_owned()
                    } else {
                        rates.join(", ")
                    }
                );
                for c in s.consumers {
                    println!(
                        "  consumer {:<40} pending {:>6}  idle {:.1}s",
                        c.name,
                        c.pending,
                        c.idle_ms as f64 / 1000.0
                    );
                }
            }
            Ok(())
        }
        Command::Dead { action } => dead_command(&config, action).await,
        Command::Push { queue, payload } => {
            serde_json::from_str::<serde_json::Value>(&payload).context("the payload must be JSON")?;
            let conn = redis_conn(&config).await?;
            let producer = souk::queue::Producer::new(conn, config.redis.key_prefix.clone());
            producer.declare(&queue).await?;
            let id = producer.push_raw(&queue, &payload).await?;
            println!("{id}");
            Ok(())
        }
        Command::Demo { orders } => souk::demo::run(config, orders).await,
        Command::Enqueue { file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            let docs: Vec<String> = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => vec![v.to_string()],
                Err(_) => text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            let conn = redis_conn(&config).await?;
            let producer = souk::queue::Producer::new(conn, config.redis.key_prefix.clone());
            let queue = souk::jobs::intake_storefront::QUEUE;
            producer.declare(queue).await?;
            for d in docs {
                let id = producer.push_raw(queue, &d).await?;
                println!("{id}");
            }
            Ok(())
        }
        Command::Merchants { action } => merchants_command(config, action).await,
        Command::Forecast { action } => forecast_command(config, action).await,
        Command::Orders {
            action: OrderAction::Show { id, json },
        } => {
            let pool = souk::store::connect(&config.database.url, 2).await?;
            let story = souk::admin::order_story(&pool, &id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&story)?);
            } else {
                print!("{}", souk::demo::render_story(&story));
            }
            Ok(())
        }
        Command::Sandbox { listen, api_key } => {
            let sb = souk::sandbox::Sandbox::new(&api_key);
            let (addr, _h) = souk::sandbox::start(listen, sb).await?;
            println!("sandbox on http://{addr}  (payments: payment.base_url=http://{addr}, api key {api_key}; merchant endpoints: http://{addr}/merchants/<id>/webhook)");
            shutdown_signal().await;
            Ok(())
        }
        Command::Bench { which } => match which {
            BenchKind::Queue {
                jobs,
                backlog,
                probes,
                json,
            } => {
                let figures = bench::queue(
                    &config,
                    &bench::QueueBenchOptions {
                        jobs,
                        backlog,
                        probes,
                    },
                )
                .await?;
                if !json {
                    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                }
                println!("{figures}");
                Ok(())
            }
            BenchKind::Pipeline {
                orders,
                merchants,
                rate,
                paced_orders,
                warmup,
                runs,
                json,
            } => {
                anyhow::ensure!(merchants >= 2, "--merchants must be at least 2");
                anyhow::ensure!(runs >= 1, "--runs must be at least 1");
                let opts = bench::PipelineBenchOptions {
                    orders,
                    merchants,
                    rate,
                    paced_orders,
                    warmup,
                };
                let figures = bench::pipeline_runs(&config, &opts, runs).await?;
                if !json {
                    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                }
                println!("{figures}");
                Ok(())
            }
            BenchKind::Forecast {
                skus,
                merchants,
                days,
                seed,
                threads,
                json,
            } => {
                let settings = config.forecast.settings();
                anyhow::ensure!(
                    days > settings.horizon + 7,
                    "--days must exceed the horizon by a week"
                );
                let opts = souk::forecast::backtest::BacktestOptions {
                    skus,
                    merchants: merchants.max(1),
                    days,
                    seed,
                    threads: threads
                        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                    settings,
                    policy: config.forecast.policy(None),
                };
                let figures =
                    tokio::task::spawn_blocking(move || souk::forecast::backtest::run(&opts)).await?;
                if !json {
                    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                }
                println!("{figures}");
                Ok(())
            }
            BenchKind::Tracking {
                shipments,
                merchants,
                rate,
                step_ms,
                json,
            } => {
                anyhow::ensure!(
                    shipments >= 1 && merchants >= 1 && rate >= 1,
                    "need shipments, merchants and a rate"
                );
                let opts = bench::TrackingBenchOptions {
                    shipments,
                    merchants,
                    rate_per_s: rate,
                    step_ms,
                };
                let figures = bench::tracking(&config, &opts).await?;
                if !json {
                    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                }
                println!("{figures}");
                Ok(())
            }
            BenchKind::FlashSale { orders, stock, json } => {
                let figures = bench::flash_sale(&config, orders, stock).await?;
                if !json {
                    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                }
                println!("{figures}");
                Ok(())
            }
        },
    }
}

async fn forecast_command(config: Config, action: ForecastAction) -> anyhow::Result<()> {
    use souk::{forecast, jobs::plan_forecasts, store::forecasts};
    let app = App::connect(config).await?;
    match action {
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
                let args = plan_forecasts::Args {
                    as_of: Some(as_of),
                    run_key: Some(key),
                    merchants: only,
                };
                let (run, n) = plan_forecasts::plan(&app, &args)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "run {} ({}): {n} merchant jobs queued on {}",
                    run.id,
                    run.run_key,
                    souk::jobs::forecast_merchant::QUEUE
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
                let from = r.as_of - chrono::Duration::days(55);
                let hist = forecasts::daily_units(&app.pool, &merchant, sku, from, r.as_of).await?;
                println!(
                    "{merchant} / {sku}: forecast from {} (run {})",
                    r.as_of + chrono::Duration::days(1),
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
                let week = souk::domain::forecast::dist::Demand::new(
                    r.mean.iter().take(7).sum::<f64>(),
                    r.mean.iter().take(7).sum::<f64>() * r.dispersion,
                );
                let mut q = [0.0; 3];
                week.quantiles(&souk::domain::forecast::LEVELS, &mut q);
                println!(
                    "  next 7 days: mean {:.1} units; p50 {}, p90 {}, p95 {}",
                    week.mean, q[0], q[1], q[2]
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
                print!("{}", forecast::text_chart(&hist, &r.p50, &r.p90, 10));
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
            let loaded = forecast::generate::load(&app, &spec, &ids, as_of, &webhook_url).await?;
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

async fn merchants_command(config: Config, action: MerchantAction) -> anyhow::Result<()> {
    use souk::store::merchants::MerchantInput;
    let app = App::connect(config).await?;
    match action {
        MerchantAction::Add {
            id,
            name,
            url,
            mode,
            default,
            deadline_s,
            commission_bps,
        } => {
            let input = MerchantInput {
                name,
                webhook_url: Some(url),
                acceptance_mode: mode,
                acceptance_default: default,
                acceptance_deadline_s: deadline_s,
                commission_bps,
            };
            let secret = souk::admin::add_merchant(&app, &id, &input).await?;
            println!("merchant {id} added; its webhook signing secret (shown once): {secret}");
        }
        MerchantAction::List { json } => {
            let list = souk::store::merchants::list(&app.pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in list {
                    let state = match (&m.endpoint_disabled_at, &m.failing_since) {
                        (Some(_), _) => format!(
                            "DISABLED ({})",
                            m.endpoint_disabled_reason.clone().unwrap_or_default()
                        ),
                        (None, Some(t)) => format!("failing since {t}"),
                        _ => "ok".to_owned(),
                    };
                    println!("{:<20} {:<24} {:<7} default={:<6} deadline={}s commission={}bps secrets={} endpoint {} ({state})",
                        m.id, m.name, m.acceptance_mode, m.acceptance_default, m.acceptance_deadline_s, m.commission_bps, m.secrets, m.webhook_url);
                }
            }
        }
        MerchantAction::Update {
            id,
            name,
            url,
            mode,
            default,
            deadline_s,
            commission_bps,
        } => {
            let input = MerchantInput {
                name,
                webhook_url: url,
                acceptance_mode: mode,
                acceptance_default: default,
                acceptance_deadline_s: deadline_s,
                commission_bps,
            };
            souk::admin::update_merchant(&app, &id, &input).await?;
            println!("merchant {id} updated");
        }
        MerchantAction::ShipBy { id, seconds, clear } => {
            anyhow::ensure!(
                clear || seconds.is_some_and(|s| s > 0),
                "give the deadline in seconds (> 0), or --clear"
            );
            if !souk::store::shipments::set_ship_by(&app.pool, &id, seconds).await? {
                anyhow::bail!("no merchant {id}");
            }
            match seconds {
                Some(s) => println!("merchant {id}: sub-orders ship within {s} s of acceptance"),
                None => println!("merchant {id}: ship-by deadline back to tracking.ship_by_s"),
            }
        }
        MerchantAction::Kpis { id, days, json } => {
            let to = chrono::Utc::now().date_naive();
            let from = to - chrono::Duration::days(days.clamp(1, 3650) as i64 - 1);
            souk::store::kpis::compute(&app.pool, from, to).await?;
            let k = souk::store::kpis::summary(&app.pool, &id, from, to).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&k)?);
            } else {
                let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} %", v * 100.0));
                let hours = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} h", v / 3600.0));
                println!("{id}, {from} to {to}: {} sub-orders", k.sub_orders);
                println!("  acceptance rate      {}", pct(k.acceptance_rate));
                println!("  auto-rejected rate   {}", pct(k.auto_rejected_rate));
                println!("  late shipment rate   {}", pct(k.late_shipment_rate));
                println!("  time to ship         {}", hours(k.avg_time_to_ship_s));
                println!("  delivery time        {}", hours(k.avg_delivery_time_s));
                println!("  refund rate          {}", pct(k.refund_rate));
                println!("  return rate          {}", pct(k.return_rate));
                println!("  complaint rate       {}", pct(k.complaint_rate));
            }
        }
        MerchantAction::PayoutAccount { id, account, clear } => {
            anyhow::ensure!(
                clear || account.is_some(),
                "give the account (acct_...), or --clear"
            );
            if !souk::store::settlement::set_payout_account(&app.pool, &id, account.as_deref()).await? {
                anyhow::bail!("no merchant {id}");
            }
            match account {
                Some(a) => println!("merchant {id}: completed sub-orders are paid out to {a}"),
                None => println!("merchant {id}: payables accrue in the ledger, nothing is paid out"),
            }
        }
        MerchantAction::RotateSecret { id, drop_old } => {
            let secret = souk::admin::rotate_secret(&app, &id, drop_old).await?;
            let note = if drop_old {
                "the old secret no longer signs"
            } else {
                "the previous secret keeps signing until you rotate with --drop-old"
            };
            println!("new signing secret for {id} (shown once): {secret}\n{note}");
        }
    }
    Ok(())
}

async fn dead_command(config: &Config, action: DeadAction) -> anyhow::Result<()> {
    let mut conn = redis_conn(config).await?;
    let prefix = &config.redis.key_prefix;
    let queues = |only: &Option<String>| {
        let only = only.clone();
        let prefix = prefix.clone();
        let mut conn = conn.clone();
        async move {
            match only {
                Some(q) => Ok::<_, anyhow::Error>(vec![q]),
                None => Ok(stats::queue_names(&mut conn, &prefix).await?),
            }
        }
    };
    match action {
        DeadAction::List { queue, limit, json } => {
            let mut all = Vec::new();
            for q in queues(&queue).await? {
                all.extend(dead::list(&mut conn, &QueueKeys::new(prefix, &q), limit).await?);
            }
            all.sort_by_key(|d| std::cmp::Reverse(d.died_at));
            all.truncate(limit);
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no dead letters");
            } else {
                for d in all {
                    let when = chrono::DateTime::from_timestamp_millis(d.died_at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{}  {}  {}  attempts={}  {}",
                        d.queue, d.id, when, d.attempts, d.error
                    );
                }
            }
        }
        DeadAction::Show { id, queue } => {
            for q in queues(&queue).await? {
                if let Some(d) = dead::show(&mut conn, &QueueKeys::new(prefix, &q), &id).await? {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                    return Ok(());
                }
            }
            anyhow::bail!("no dead letter {id}");
        }
        DeadAction::Retry { ids, queue, all } | DeadAction::Purge { ids, queue, all }
            if ids.is_empty() && queue.is_none() && !all =>
        {
            anyhow::bail!("say which dead letters: ids, --queue NAME, or --all");
        }
        DeadAction::Retry { ids, queue, all: _ } => {
            let mut n = 0;
            for q in queues(&queue).await? {
                n += dead::retry(&mut conn, &QueueKeys::new(prefix, &q), &ids).await?;
            }
            println!("{n} dead letters put back on their queue");
        }
        DeadAction::Purge { ids, queue, all: _ } => {
            let mut n = 0;
            for q in queues(&queue).await? {
                n += dead::purge(&mut conn, &QueueKeys::new(prefix, &q), &ids).await?;
            }
            println!("{n} dead letters deleted");
        }
    }
    Ok(())
}
