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

mod cli;

use cli::{
    dead::{dead_command, DeadAction},
    forecast::{forecast_command, ForecastAction},
    merchants::{merchants_command, MerchantAction},
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
    /// Ask this host's `souk run` whether it is alive (`/healthz` on the ops port; with
    /// `--ready`, `/readyz`: Redis and PostgreSQL answer). Exit status 0 or 1: a container
    /// healthcheck.
    Health {
        #[arg(long)]
        ready: bool,
    },
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
enum OrderAction {
    /// The whole story of one order, by storefront order id or souk id.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
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
        /// The nightly job's own path instead of the backtest: the panel loaded into a fresh
        /// database (timed apart), then every merchant read, fitted and written as
        /// `souk.forecast_merchant.v1` does, `--threads` merchants at a time.
        #[arg(long)]
        through_db: bool,
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
    /// Orders through `souk run` processes killed with -9 every few seconds, one Redis kill
    /// and restart on its append-only file and one PostgreSQL immediate restart, on servers of
    /// its own; then the invariants (lost, oversold, money kept, not final, ...), each 0.
    Chaos {
        #[arg(long, default_value_t = 15_000)]
        orders: usize,
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// The orders are offered over this many seconds; the faults happen inside them.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        #[arg(long, default_value_t = 4.0)]
        kill_every_s: f64,
        /// Every n-th order is cancelled right after it is placed (0: none).
        #[arg(long, default_value_t = 10)]
        cancel_every: usize,
        #[arg(long, default_value_t = 300)]
        settle_limit_s: u64,
        /// Run the workers on this many hosts (network namespaces on this machine; needs root
        /// and iproute2), and cut one off from the others for --cut-host-s mid-run. 0 or 1: this
        /// machine's loopback, as without it.
        #[arg(long, default_value_t = 0)]
        hosts: usize,
        #[arg(long, default_value_t = 20.0)]
        cut_host_s: f64,
        /// Run on a Redis Cluster of its own (3 masters, 3 replicas, `wait_replicas = 1`), with
        /// a master failover instead of the Redis restart.
        #[arg(long)]
        redis_cluster: bool,
        #[arg(long)]
        json: bool,
    },
    /// A generated daily sales history of N rows imported into a fresh database as `souk
    /// forecast import` does it (checked whole, then 10,000-row transactions).
    Import {
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 10_000)]
        skus: usize,
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

async fn redis_conn(config: &Config) -> anyhow::Result<souk::queue::conn::Conn> {
    let client = souk::queue::conn::RedisClient::open(&config.redis)?;
    client.connect(None).await.with_context(|| {
        format!(
            "connecting to redis at {}",
            souk::config::redact_url(&config.redis.url)
        )
    })
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run { queues, no_cron } => {
            let wait = std::time::Duration::from_secs(config.worker.startup_wait_s);
            let app = App::connect_within(config.clone(), wait).await?;
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
            if !config.merchant_api.listen.is_empty() {
                let addr: SocketAddr = config
                    .merchant_api
                    .listen
                    .parse()
                    .context("merchant_api.listen")?;
                let mut rx = rx.clone();
                let api_app = app.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.changed().await;
                    };
                    if let Err(e) = souk::merchant_api::serve(addr, api_app, stop).await {
                        tracing::error!(%addr, error = %e, "merchant API failed");
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
        Command::Health { ready } => {
            // The ops port may listen on 0.0.0.0 (a container): ask it on loopback.
            let addr: SocketAddr = config
                .ops
                .listen
                .parse()
                .context("ops.listen is empty: nothing to ask")?;
            let host = if addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            };
            let url = format!(
                "http://{}/{}",
                SocketAddr::new(host, addr.port()),
                if ready { "readyz" } else { "healthz" }
            );
            let resp = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .no_proxy()
                .build()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            anyhow::ensure!(resp.status().is_success(), "{url} answered {}", resp.status());
            println!("ok ({url})");
            Ok(())
        }
        Command::Migrate => {
            let pool = souk::store::migrate(config.database.migrate_target()).await?;
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
                    "{}\n  length {}  waiting {}  pending {}  delayed {}  held {}  dead {}  oldest {}",
                    s.queue,
                    s.length,
                    s.waiting,
                    s.pending,
                    s.delayed,
                    s.held,
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
            println!("{}", souk::sandbox::banner(addr, &api_key));
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
                through_db,
                json,
            } => {
                let threads =
                    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
                if through_db {
                    let opts = bench::ForecastDbOptions {
                        skus,
                        merchants,
                        days,
                        seed,
                        threads,
                    };
                    let figures = bench::forecast_through_db(&config, &opts).await?;
                    if !json {
                        eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                    }
                    println!("{figures}");
                    return Ok(());
                }
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
                    threads,
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
            BenchKind::Chaos {
                orders,
                workers,
                seconds,
                kill_every_s,
                cancel_every,
                settle_limit_s,
                hosts,
                cut_host_s,
                redis_cluster,
                json,
            } => {
                if hosts > 1 && bench::netns::Hosts::hub().is_none() {
                    // Hosts are namespaces behind a hub namespace; the bench runs again there.
                    let status = bench::netns::enter_hub()?;
                    std::process::exit(status.code().unwrap_or(1));
                }
                let opts = bench::ChaosOptions {
                    orders,
                    workers,
                    seconds,
                    kill_every_s,
                    cancel_every,
                    settle_limit_s,
                    hosts,
                    cut_host_s,
                    redis_cluster,
                };
                let figures = bench::chaos(&config, &opts).await?;
                if !json {
                    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
                }
                println!("{figures}");
                Ok(())
            }
            BenchKind::Import { rows, skus, json } => {
                let figures =
                    bench::import_history(&config, &bench::ImportBenchOptions { rows, skus }).await?;
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
