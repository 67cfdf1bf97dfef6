//! `souk bench queue`: pushes no-op jobs to a queue under a fresh key prefix, drains them with
//! a worker in this process, measures pickup latency of an idle worker, and compares Redis
//! memory before and after. It removes its keys when done.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::queue::conn::Conn;
use anyhow::Context;
use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    config::Config,
    queue::{backend::QueueContext, Delivery, JobError, Producer, StreamsBackend},
};

const QUEUE: &str = "souk.bench_noop.v1";
/// A queue with the storefront queue's message groups, for the intake stream's ceiling.
const GROUPED: &str = "souk.bench_grouped.v1";

/// Arguments of the no-op bench job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoopArgs {
    /// Set on pickup probes: when the job was pushed, unix microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_us: Option<i64>,
}

/// Options of `souk bench queue`.
#[derive(Debug, Clone)]
pub struct QueueBenchOptions {
    /// Jobs in the small-backlog drain (repeated three times, median kept).
    pub jobs: usize,
    /// Jobs in the large-backlog drain.
    pub backlog: usize,
    /// Pickup probes.
    pub probes: usize,
}

type Latencies = Arc<Mutex<Vec<u64>>>;

async fn noop(args: NoopArgs, _d: Data<Delivery>, lat: Data<Latencies>) -> Result<(), JobError> {
    if let Some(sent) = args.sent_us {
        let now = chrono::Utc::now().timestamp_micros();
        lat.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((now - sent).max(0) as u64);
    }
    Ok(())
}

fn start_worker(
    ctx: QueueContext,
    lat: Latencies,
    grouped: bool,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let s = ctx.settings.clone();
        let monitor = Monitor::new().register(move |_| {
            let backend = StreamsBackend::<NoopArgs>::new(ctx.clone());
            let backend = if grouped {
                backend.grouped(crate::jobs::storefront_groups())
            } else {
                backend
            };
            WorkerBuilder::new(ctx.keys.queue.clone())
                .backend(backend)
                .concurrency(s.concurrency)
                .data(lat.clone())
                .build(noop)
        });
        let _ = monitor
            .run_with_signal(async move {
                let _ = rx.changed().await;
                Ok(())
            })
            .await;
    });
    (tx, handle)
}

/// Redis's own CPU (user + system) so far, in ms.
async fn redis_cpu_ms(conn: &mut Conn) -> Option<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.ok()?;
    let field = |name| super::costs::info_field(&info, name);
    Some((field("used_cpu_user")? + field("used_cpu_sys")?) * 1000.0)
}

async fn used_memory(conn: &mut Conn) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

async fn push_backlog(producer: &Producer, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let chunk = vec![NoopArgs { sent_us: None }; 10_000.min(n.max(1))];
    let mut left = n;
    while left > 0 {
        let take = left.min(chunk.len());
        producer.push_many(QUEUE, &chunk[..take]).await?;
        left -= take;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Drains `n` already-queued jobs with a fresh worker; returns jobs per second.
async fn drain(ctx: &QueueContext, n: usize, lat: &Latencies, grouped: bool) -> anyhow::Result<f64> {
    let base = ctx.metrics.done.load(Relaxed);
    let started = Instant::now();
    let (stop, handle) = start_worker(ctx.clone(), lat.clone(), grouped);
    let deadline = started + Duration::from_secs(600);
    while ctx.metrics.done.load(Relaxed) < base + n as u64 {
        if Instant::now() > deadline {
            anyhow::bail!("drain of {n} jobs did not finish in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = handle.await;
    Ok(rate)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

/// Runs the queue benchmark and returns its figures.
pub async fn queue(config: &Config, opts: &QueueBenchOptions) -> anyhow::Result<serde_json::Value> {
    let prefix = format!("souk-bench-{}", crate::queue::producer::new_job_id());
    let client = crate::queue::conn::RedisClient::open(&config.redis)?;
    let mut conn = client.connect(None).await?;
    let settings = config.queue(QUEUE);
    let ctx = QueueContext::connect(&client, &prefix, QUEUE, settings.clone()).await?;
    let producer = Producer::new(conn.clone(), prefix.clone());
    let lat: Latencies = Arc::default();
    let bytes_before = used_memory(&mut conn).await?;

    eprintln!(
        "bench: {} jobs, three times, drained from a standing start",
        opts.jobs
    );
    let mut small = Vec::new();
    for _ in 0..3 {
        push_backlog(&producer, opts.jobs).await?;
        small.push(drain(&ctx, opts.jobs, &lat, false).await?);
    }
    small.sort_by(f64::total_cmp);
    let drain_small = small[1];

    eprintln!("bench: pushing a backlog of {}", opts.backlog);
    let push_rate = push_backlog(&producer, opts.backlog).await?;
    let bytes_full = used_memory(&mut conn).await?;
    eprintln!("bench: draining the backlog");
    let drain_big = drain(&ctx, opts.backlog, &lat, false).await?;

    // The storefront stream is one key, so one slot on one master: its ceiling is what one
    // Redis core gives a grouped queue. Commands about 1,000 orders, ten each, as in a sale.
    eprintln!(
        "bench: {} storefront-shaped commands through a grouped queue",
        opts.jobs
    );
    let gctx = QueueContext::connect(&client, &prefix, GROUPED, settings.clone()).await?;
    let commands: Vec<String> = (0..opts.jobs)
        .map(|i| {
            serde_json::json!({"type": "merchant.decision", "storefront_order_id": format!("o-{}", i % 1000)})
                .to_string()
        })
        .collect();
    let mut grouped = Vec::new();
    for _ in 0..3 {
        producer.push_raw_many(GROUPED, &commands).await?;
        let cpu0 = redis_cpu_ms(&mut conn).await;
        let rate = drain(&gctx, opts.jobs, &lat, true).await?;
        let cpu_us = redis_cpu_ms(&mut conn)
            .await
            .zip(cpu0)
            .map(|(b, a)| ((b - a) * 1000.0 / opts.jobs as f64 * 10.0).round() / 10.0);
        grouped.push((rate, cpu_us));
    }
    grouped.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (grouped_rate, grouped_cpu_us) = grouped[1];

    eprintln!("bench: {} pickup probes on an idle worker", opts.probes);
    let (stop, handle) = start_worker(ctx.clone(), lat.clone(), false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..opts.probes {
        let before = lat.lock().unwrap_or_else(|p| p.into_inner()).len();
        producer
            .push(
                QUEUE,
                &NoopArgs {
                    sent_us: Some(chrono::Utc::now().timestamp_micros()),
                },
            )
            .await?;
        let wait_until = Instant::now() + Duration::from_secs(5);
        while lat.lock().unwrap_or_else(|p| p.into_inner()).len() == before && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);
    let _ = handle.await;
    let mut probes: Vec<u64> = lat.lock().unwrap_or_else(|p| p.into_inner()).clone();
    probes.sort_unstable();

    // Let Redis settle its lazy frees before reading memory again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes_after = used_memory(&mut conn).await?;
    let stats = crate::queue::stats::queue_stats(&mut conn, &ctx.keys).await?;

    // Clean up every key of this run.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
    }

    Ok(serde_json::json!({
        "bench": "queue",
        "jobs": opts.jobs,
        "backlog": opts.backlog,
        "concurrency": settings.concurrency,
        "batch_size": settings.batch_size,
        "push_per_s": push_rate.round(),
        "drain_per_s": drain_small.round(),
        "drain_per_s_runs": small.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "drain_per_s_at_backlog": drain_big.round(),
        "grouped_drain_per_s": grouped_rate.round(),
        "grouped_redis_cpu_us_per_job": grouped_cpu_us,
        "backlog_vs_small_ratio": (drain_big / drain_small * 1000.0).round() / 1000.0,
        "pickup_p50_ms": percentile(&probes, 0.50) / 1000.0,
        "pickup_p99_ms": percentile(&probes, 0.99) / 1000.0,
        "pickup_max_ms": probes.last().copied().unwrap_or(0) as f64 / 1000.0,
        "pickup_probes": probes.len(),
        "redis_bytes_before": bytes_before,
        "redis_bytes_with_backlog": bytes_full,
        "redis_bytes_after": bytes_after,
        "redis_bytes_growth": bytes_after - bytes_before,
        "left_in_stream": stats.length,
        "pending_after": stats.pending,
        "dead_after": stats.dead,
    }))
}
