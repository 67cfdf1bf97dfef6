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
    /// Souk's main job on sample data: push a burst through the queue and show what happened.
    Demo {
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
    },
    /// Benchmarks; each prints one JSON object as its last line.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
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
enum BenchKind {
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
    if matches!(cli.command, Command::Demo { .. } | Command::Bench { .. }) {
        // The demo and benchmarks print their own report; keep routine logs out of it.
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
    let client = redis::Client::open(config.redis.url.as_str())?;
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
                let (conn, pool) = (app.conn.clone(), app.pool.clone());
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.changed().await;
                    };
                    if let Err(e) = souk::http::serve(addr, conn, pool, stop).await {
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
        Command::Demo { jobs } => {
            let app = App::connect(config).await?;
            souk::demo::run(app, jobs).await
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
        },
    }
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
