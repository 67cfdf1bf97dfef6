//! `souk bench …`: measured figures, printed as one JSON object on the last line. Build with
//! `--release` for real figures. `pipeline` and `flash_sale` live here with the measuring
//! helpers they share; `queue`, `tracking` and `chaos` in their own files.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;

mod chaos;
mod costs;
mod forecast_db;
mod import;
pub mod netns;
mod queue;
mod tracking;

pub use chaos::{chaos, ChaosOptions};
pub use forecast_db::{forecast_through_db, ForecastDbOptions};
pub use import::{import_history, ImportBenchOptions};
pub use queue::{queue, NoopArgs, QueueBenchOptions};
pub use tracking::{tracking, TrackingBenchOptions};

/// Options of `souk bench pipeline`.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    pub orders: usize,
    pub merchants: usize,
    /// Orders per second offered in the latency phase.
    pub rate: u64,
    /// Orders in the latency phase.
    pub paced_orders: usize,
    /// Orders run through before the burst and not counted in its figures.
    pub warmup: usize,
}

/// Waits until `n` orders of `like` have settled and every webhook is done. While anything is
/// in flight it only asks whether any row is left in the small partial indexes (EXISTS stops
/// at the first), with no join, no count and no run filter (a benchmark has its own database,
/// so everything in flight is the run's); it counts the settled orders of the run only once
/// nothing is left in flight, so the check itself stays out of the figures (counting every
/// in-flight row took ~11 ms of PostgreSQL per poll in a 10,000-order burst, ~5 % of one core
/// at ten polls a second; a join per in-flight sub-order took ~20 ms).
pub(crate) async fn wait_settled(
    app: &crate::app::App,
    like: &str,
    n: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let moving: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE status IN ('received', 'authorised'))
                 OR EXISTS (SELECT 1 FROM sub_orders WHERE status IN ('pending', 'reserved'))
                 OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending')",
        )
        .fetch_one(&app.pool)
        .await?;
        if !moving {
            let settled: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE storefront_order_id LIKE $1 AND status IN ('captured', 'cancelled')",
            )
            .bind(like)
            .fetch_one(&app.pool)
            .await?;
            if settled >= n {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let (in_flight, open_hooks, settled): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM orders WHERE status IN ('received', 'authorised'))
                      + (SELECT count(*) FROM sub_orders WHERE status IN ('pending', 'reserved')),
                        (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'),
                        (SELECT count(*) FROM orders WHERE storefront_order_id LIKE $1
                            AND status IN ('captured', 'cancelled'))",
            )
            .bind(like)
            .fetch_one(&app.pool)
            .await?;
            anyhow::bail!(
                "orders not settled after {limit:?}: {in_flight} in flight, {open_hooks} webhooks pending, {settled} settled of {n}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How fast this machine is right now, measured just before a burst, so results are compared
/// only with runs made at similar values. A shared machine's speed moves from hour to hour,
/// and not only in one dimension: one session here saw the single-core loop unchanged while
/// the pipeline ran at less than half its earlier rate, because memory and system calls (the
/// loopback round trips every order is made of) had become slower under nested
/// virtualisation. So there are three figures, each the median of three runs:
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    /// A fixed single-core loop (xorshift: no memory, no system calls), in ms.
    pub cpu_ms: f64,
    /// One dependent load from a 64 MiB table in a random order (each misses the caches), in ns.
    pub memory_ns: f64,
    /// One `SELECT 1` round trip to PostgreSQL on an idle connection (two system calls a side,
    /// two wake-ups, loopback TCP), in µs.
    pub roundtrip_us: f64,
}

impl Calibration {
    /// Measures all three; the round trip on a connection of `pool`.
    pub async fn measure(pool: &sqlx::PgPool) -> Self {
        let (cpu_ms, memory_ns) =
            tokio::task::spawn_blocking(|| (median3(cpu_loop_ms), median3(memory_chase_ns)))
                .await
                .unwrap_or((f64::NAN, f64::NAN));
        let roundtrip_us = roundtrip_us(pool).await.unwrap_or(f64::NAN);
        Self {
            cpu_ms: round1(cpu_ms),
            memory_ns: round1(memory_ns),
            roundtrip_us: round1(roundtrip_us),
        }
    }
}

/// A benchmark's JSON object with the calibration's fields added (`calibration_ms` keeps the
/// name it had when it was the only one).
pub(crate) fn with_calibration(mut v: serde_json::Value, c: &Calibration) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("calibration_ms".into(), c.cpu_ms.into());
        o.insert("calibration_memory_ns".into(), c.memory_ns.into());
        o.insert("calibration_roundtrip_us".into(), c.roundtrip_us.into());
    }
    v
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn median3(f: fn() -> f64) -> f64 {
    let mut runs = [f(), f(), f()];
    runs.sort_by(f64::total_cmp);
    runs[1]
}

fn cpu_loop_ms() -> f64 {
    let started = Instant::now();
    let (mut x, mut acc) = (0x9E37_79B9_7F4A_7C15u64, 0u64);
    for i in 0..50_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_add(x ^ i);
    }
    std::hint::black_box(acc);
    started.elapsed().as_secs_f64() * 1e3
}

fn memory_chase_ns() -> f64 {
    // next[i] = (a*i + c) mod 2^23 with a = 1 (mod 4) and c odd is one cycle through every
    // slot (Hull-Dobell), built sequentially and walked in an order no prefetcher follows.
    const SLOTS: usize = 1 << 23; // 8 Mi slots of 8 bytes: 64 MiB
    const STEPS: usize = 1_000_000;
    let next: Vec<u64> = (0..SLOTS as u64)
        .map(|i| {
            i.wrapping_mul(0x5851_F42D_4C95_7F2D)
                .wrapping_add(0x1405_7B7E_F767_814F)
                & (SLOTS as u64 - 1)
        })
        .collect();
    let started = Instant::now();
    let mut at = 0u64;
    for _ in 0..STEPS {
        at = next[at as usize];
    }
    std::hint::black_box(at);
    started.elapsed().as_secs_f64() * 1e9 / STEPS as f64
}

async fn roundtrip_us(pool: &sqlx::PgPool) -> Result<f64, sqlx::Error> {
    const TRIPS: usize = 500;
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    let mut runs = Vec::with_capacity(3);
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..TRIPS {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
        }
        runs.push(started.elapsed().as_secs_f64() * 1e6 / TRIPS as f64);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// PostgreSQL's current write-ahead log position; `None` where the server does not say.
async fn wal_position(pool: &sqlx::PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await
        .ok()
}

/// Bytes of write-ahead log the whole server wrote since `from` (what an order costs in WAL
/// records, index entries and row locks, whatever the machine's speed; other databases on the
/// server count too, so measure on a quiet one).
async fn wal_bytes_since(pool: &sqlx::PgPool, from: &str) -> Option<f64> {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
        .bind(from)
        .fetch_one(pool)
        .await
        .ok()
}

/// CPU time the whole machine has spent busy (every process: souk, PostgreSQL, Redis, the
/// kernel), in ms, from /proc/stat; None where there is no /proc. Divided by the orders of a
/// phase below capacity it gives the cost of an order, which a saturated burst cannot show.
fn machine_busy_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if ticks.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal, in USER_HZ (100 per second on Linux).
    let busy: f64 = ticks.iter().sum::<f64>() - ticks[3] - ticks[4];
    Some(busy * 10.0)
}

/// Per-order latency from enqueue to the last merchant notified, in ms, over the orders of
/// `like` whose storefront ids sort at or after `from`: (p50, p99, how many orders).
async fn notify_latency(app: &crate::app::App, like: &str, from: &str) -> anyhow::Result<(f64, f64, i64)> {
    let (p50, p99, n): (Option<f64>, Option<f64>, i64) = sqlx::query_as(
        "WITH per_order AS (
            SELECT max(d.delivered_at) - o.enqueued_at AS lat FROM orders o JOIN webhook_deliveries d ON d.order_id = o.id
            WHERE o.storefront_order_id LIKE $1 AND o.storefront_order_id >= $2
              AND d.event_type = 'sub_order.created' GROUP BY o.id)
         SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM lat))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM lat))::float8, count(*) FROM per_order",
    )
    .bind(like)
    .bind(from)
    .fetch_one(&app.pool)
    .await?;
    Ok((p50.unwrap_or(0.0) * 1000.0, p99.unwrap_or(0.0) * 1000.0, n))
}

/// Units this run sold or holds beyond what was stocked, per SKU, plus stock rows whose
/// reserved count exceeds what is on hand (the database refuses both; this checks it did).
async fn oversold(
    app: &crate::app::App,
    like: &str,
    merchants: &[String],
    initial: i64,
) -> anyhow::Result<i64> {
    let over: Option<i64> = sqlx::query_scalar(
        "SELECT sum(greatest(0, used - $2))::bigint FROM (
            SELECT r.merchant_id, r.sku, sum(r.quantity) FILTER (WHERE r.status IN ('held', 'confirmed')) AS used
            FROM reservations r JOIN sub_orders s ON s.id = r.sub_order_id JOIN orders o ON o.id = s.order_id
            WHERE o.storefront_order_id LIKE $1 GROUP BY 1, 2) t",
    )
    .bind(like)
    .bind(initial)
    .fetch_one(&app.pool)
    .await?;
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stock WHERE merchant_id = ANY($1) AND (reserved > on_hand OR on_hand < 0)",
    )
    .bind(merchants)
    .fetch_one(&app.pool)
    .await?;
    Ok(over.unwrap_or(0) + broken)
}

/// Deletes every Redis key of a benchmark world's prefix.
async fn remove_keys(app: &crate::app::App) -> anyhow::Result<()> {
    let mut conn = app.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.config.redis.key_prefix))
        .query_async(&mut conn)
        .await?;
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }
    Ok(())
}

/// A benchmark's configuration: its own fresh database (dropped at the end), so a figure never
/// depends on what earlier runs left behind (dead rows pile up where autovacuum is off, as on
/// the CI machine), and a pool large enough for the fleet of one process.
pub(crate) fn bench_config(config: &Config) -> anyhow::Result<Config> {
    let mut c = config.clone();
    c.database.max_connections = c.database.max_connections.max(20);
    let base = {
        let u = url::Url::parse(&c.database.url).context("database.url")?;
        match u.path().trim_start_matches('/') {
            "" => "souk".to_owned(),
            b => b.to_owned(),
        }
    };
    let name = format!("{base}_bench_{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let renamed = |url: &str| -> anyhow::Result<String> {
        let mut u = url::Url::parse(url).context("database url")?;
        u.set_path(&name);
        Ok(u.to_string())
    };
    c.database.url = renamed(&c.database.url)?;
    if !c.database.migrate_url.is_empty() {
        c.database.migrate_url = renamed(&c.database.migrate_url)?;
    }
    Ok(c)
}

/// Ends a benchmark world: its Redis keys and its database go.
pub(crate) async fn drop_world(app: &crate::app::App) -> anyhow::Result<()> {
    remove_keys(app).await?;
    app.pool.close().await;
    crate::store::drop_database(app.config.database.migrate_target())
        .await
        .context("dropping the benchmark database")
}

/// Orders through the whole pipeline against the sandbox: a burst for throughput, then a paced
/// phase for latency.
pub async fn pipeline(config: &Config, opts: &PipelineBenchOptions) -> anyhow::Result<serde_json::Value> {
    use crate::demo::World;
    let stock = 1_000_000i64;
    let skus = 50;
    let world = World::start(
        bench_config(config)?,
        crate::demo::WorldOptions {
            merchants: opts.merchants,
            skus_per_merchant: skus,
            stock_per_sku: stock,
            // Auto-accept everywhere: a benchmark leaves no sub-order waiting for a decision.
            auto_accept_every: 1,
            acceptance_deadline_s: 3600,
            unpaid_timeout_s: 1800,
            in_process_workers: true,
        },
    )
    .await?;
    let app = world.app.clone();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut make = |n: usize| {
        // One to three merchants, two on average.
        let k = 1 + (n % 3).min(opts.merchants - 1);
        let first = rng.usize(..opts.merchants);
        let lines: Vec<(usize, usize, i64)> = (0..k)
            .map(|j| ((first + j) % opts.merchants, rng.usize(..skus), 1))
            .collect();
        world.order(n, &lines, "requires_capture").1.to_string()
    };
    // Storefront ids number the warm-up's orders first, then the burst's, then the paced
    // phase's, so each phase's figures select its own orders by id.
    let (w, burst_end) = (opts.warmup, opts.warmup + opts.orders);
    let like_all = format!("demo-{}-%", world.run);
    if w > 0 {
        eprintln!("bench: warm-up of {w} orders (not counted)");
        let warmup: Vec<String> = (0..w).map(&mut make).collect();
        app.producer
            .push_raw_many(crate::enqueue::STOREFRONT, &warmup)
            .await?;
        wait_settled(&app, &like_all, w as i64, Duration::from_secs(1800)).await?;
    }
    let burst: Vec<String> = (w..burst_end).map(&mut make).collect();
    let first_burst = format!("demo-{}-{w:06}", world.run);
    let merchants_per_order = 2.0;
    let calibration = Calibration::measure(&app.pool).await;
    eprintln!("bench: burst of {} orders", opts.orders);
    let burst_costs0 = costs::Costs::read(&app, &world.sandbox, &world.merchants).await;
    let started = Instant::now();
    app.producer
        .push_raw_many(crate::enqueue::STOREFRONT, &burst)
        .await?;
    wait_settled(&app, &like_all, burst_end as i64, Duration::from_secs(1800)).await?;
    let burst_secs = started.elapsed().as_secs_f64();
    let burst_costs1 = costs::Costs::read(&app, &world.sandbox, &world.merchants).await;
    let burst_costs = burst_costs0.per_order(&burst_costs1, opts.orders, &app).await;
    let wal_per_order = burst_costs["wal_bytes"].as_f64().filter(|_| opts.orders > 0);
    let (burst_p50, burst_p99, _) = notify_latency(&app, &like_all, &first_burst).await?;

    eprintln!("bench: {} orders offered at {}/s", opts.paced_orders, opts.rate);
    let paced: Vec<String> = (burst_end..burst_end + opts.paced_orders)
        .map(&mut make)
        .collect();
    let first_paced = format!("demo-{}-{burst_end:06}", world.run);
    let costs0 = costs::Costs::read(&app, &world.sandbox, &world.merchants).await;
    let t0 = Instant::now();
    for (i, m) in paced.iter().enumerate() {
        let due = t0 + Duration::from_secs_f64(i as f64 / opts.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        app.producer.push_raw(crate::enqueue::STOREFRONT, m).await?;
    }
    wait_settled(
        &app,
        &like_all,
        (burst_end + opts.paced_orders) as i64,
        Duration::from_secs(1800),
    )
    .await?;
    let costs1 = costs::Costs::read(&app, &world.sandbox, &world.merchants).await;
    let costs = costs0.per_order(&costs1, opts.paced_orders, &app).await;
    let cpu_ms_per_order = costs["machine_cpu_ms"].as_f64().filter(|_| opts.paced_orders > 0);
    let (p50, p99, n) = notify_latency(&app, &like_all, &first_paced).await?;
    let total = (burst_end + opts.paced_orders) as i64;
    let (notified_orders, webhooks): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT o.id), count(*) FROM orders o JOIN webhook_deliveries d ON d.order_id = o.id
         WHERE o.storefront_order_id LIKE $1 AND d.status = 'delivered'",
    )
    .bind(&like_all)
    .fetch_one(&app.pool)
    .await?;
    let over = oversold(&app, &like_all, &world.merchants, stock).await?;
    let dups: u64 = world
        .merchants
        .iter()
        .map(|m| world.sandbox.endpoint_report(m).duplicates)
        .sum();
    world.stop().await?;
    drop_world(&app).await?;
    Ok(with_calibration(
        serde_json::json!({
            "bench": "pipeline",
            "orders": opts.orders,
            "warmup_orders": w,
            "merchants": opts.merchants,
            "merchants_per_order": merchants_per_order,
            "orders_per_s": (opts.orders as f64 / burst_secs).round(),
            "burst_seconds": (burst_secs * 100.0).round() / 100.0,
            "burst_p50_ms": burst_p50.round(),
            "burst_p99_ms": burst_p99.round(),
            "burst_wal_bytes_per_order": wal_per_order,
            "burst_costs_per_order": burst_costs,
            "offered_per_s": opts.rate,
            "paced_orders": opts.paced_orders,
            "p50_ms": p50.round(),
            "p99_ms": p99.round(),
            "paced_measured": n,
            "paced_cpu_ms_per_order": cpu_ms_per_order,
            "paced_costs_per_order": costs,
            "webhooks_delivered": webhooks,
            "webhook_duplicates_at_merchants": dups,
            "oversold": over,
            "lost": total - notified_orders,
        }),
        &calibration,
    ))
}

/// `runs` pipeline benchmarks one after another, each in its own fresh database and Redis
/// prefix, summarised by [`summarize_pipeline_runs`]; each run's own figures go to stderr as it
/// ends. One run (the command refuses 0) answers its own figures unchanged.
pub async fn pipeline_runs(
    config: &Config,
    opts: &PipelineBenchOptions,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    if runs <= 1 {
        return pipeline(config, opts).await;
    }
    let mut each = Vec::with_capacity(runs);
    for i in 1..=runs {
        let figures = pipeline(config, opts).await?;
        eprintln!("bench: run {i}/{runs}: {figures}");
        each.push(figures);
    }
    Ok(summarize_pipeline_runs(&each))
}

/// The figures of several pipeline runs as one object with the same keys as one run: the
/// settings as given, each measured figure the median over the runs, and the counts
/// (`oversold`, `lost`, `webhook_duplicates_at_merchants`, `webhooks_delivered`,
/// `paced_measured`) summed. Added: `runs`, and for orders/s, p50, p99 and the calibration
/// figures their `_min`, `_max` and `_runs` (every run's value, in run order), so a slow run
/// can be told from a slow machine.
pub fn summarize_pipeline_runs(each: &[serde_json::Value]) -> serde_json::Value {
    let values = |key: &str| -> Vec<f64> { each.iter().filter_map(|r| r[key].as_f64()).collect() };
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        })
    };
    let mut out = each.first().cloned().unwrap_or_else(|| serde_json::json!({}));
    out["runs"] = each.len().into();
    for key in [
        "oversold",
        "lost",
        "webhook_duplicates_at_merchants",
        "webhooks_delivered",
        "paced_measured",
    ] {
        out[key] = (values(key).iter().sum::<f64>() as u64).into();
    }
    for key in [
        "orders_per_s",
        "p50_ms",
        "p99_ms",
        "burst_seconds",
        "burst_p50_ms",
        "burst_p99_ms",
        "burst_wal_bytes_per_order",
        "paced_cpu_ms_per_order",
        "merchants_per_order",
        "calibration_ms",
        "calibration_memory_ns",
        "calibration_roundtrip_us",
    ] {
        let v = values(key);
        out[key] = median(v.clone()).into();
        if matches!(key, "orders_per_s" | "p50_ms" | "p99_ms") || key.starts_with("calibration_") {
            out[format!("{key}_min")] = v.iter().copied().reduce(f64::min).into();
            out[format!("{key}_max")] = v.iter().copied().reduce(f64::max).into();
            out[format!("{key}_runs")] = v.into();
        }
    }
    for costs in ["burst_costs_per_order", "paced_costs_per_order"] {
        if let Some(keys) = each.first().and_then(|r| r[costs].as_object()) {
            for key in keys.keys() {
                let v: Vec<f64> = each.iter().filter_map(|r| r[costs][key].as_f64()).collect();
                out[costs][key] = median(v).into();
            }
        }
    }
    out
}

/// 20,000 orders (by default) for one SKU with 1,000 in stock.
pub async fn flash_sale(config: &Config, orders: usize, stock: i64) -> anyhow::Result<serde_json::Value> {
    use crate::demo::World;
    let world = World::start(
        bench_config(config)?,
        crate::demo::WorldOptions {
            merchants: 1,
            skus_per_merchant: 1,
            stock_per_sku: stock,
            auto_accept_every: 1,
            acceptance_deadline_s: 3600,
            unpaid_timeout_s: 1800,
            in_process_workers: true,
        },
    )
    .await?;
    let app = world.app.clone();
    let msgs: Vec<String> = (0..orders)
        .map(|n| world.order(n, &[(0, 0, 1)], "requires_capture").1.to_string())
        .collect();
    let calibration = Calibration::measure(&app.pool).await;
    eprintln!("bench: {orders} orders for one SKU with {stock} in stock");
    let started = Instant::now();
    app.producer
        .push_raw_many(crate::enqueue::STOREFRONT, &msgs)
        .await?;
    let like = format!("demo-{}-%", world.run);
    wait_settled(&app, &like, orders as i64, Duration::from_secs(1800)).await?;
    let secs = started.elapsed().as_secs_f64();
    let (reserved, out): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.status IN ('reserved', 'awaiting_acceptance', 'accepted')), count(*) FILTER (WHERE s.status = 'out_of_stock')
         FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id LIKE $1",
    )
    .bind(&like)
    .fetch_one(&app.pool)
    .await?;
    let over = oversold(&app, &like, &world.merchants, stock).await?;
    let (on_hand, held) =
        crate::store::merchants::stock(&app.pool, &world.merchants[0], &crate::demo::sku(0))
            .await?
            .unwrap_or((0, 0));
    let c = world.sandbox.counters();
    world.stop().await?;
    drop_world(&app).await?;
    Ok(with_calibration(
        serde_json::json!({
            "bench": "flash-sale",
            "orders": orders,
            "stock": stock,
            "reserved": reserved,
            "out_of_stock": out,
            "oversold": over,
            "on_hand_after": on_hand,
            "reserved_after": held,
            "captures": c.get("capture").copied().unwrap_or(0),
            "authorisations_released": c.get("cancel").copied().unwrap_or(0),
            "orders_per_s": (orders as f64 / secs).round(),
            "seconds": (secs * 100.0).round() / 100.0,
        }),
        &calibration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(orders_per_s: f64, p99: f64, lost: u64, roundtrip: f64) -> serde_json::Value {
        serde_json::json!({
            "bench": "pipeline", "orders": 5000, "orders_per_s": orders_per_s, "p50_ms": 40.0,
            "p99_ms": p99, "oversold": 0, "lost": lost, "webhooks_delivered": 21000,
            "calibration_roundtrip_us": roundtrip,
            "burst_costs_per_order": {"redis_cpu_ms": roundtrip / 100.0},
        })
    }

    #[test]
    fn several_runs_summarise_to_medians_extremes_and_sums() {
        let s = summarize_pipeline_runs(&[
            run(1300.0, 60.0, 0, 40.0),
            run(948.0, 170.0, 2, 130.0),
            run(1500.0, 55.0, 0, 35.0),
        ]);
        assert_eq!(s["bench"], "pipeline");
        assert_eq!(s["orders"], 5000);
        assert_eq!(s["runs"], 3);
        assert_eq!(s["orders_per_s"], 1300.0);
        assert_eq!(s["orders_per_s_min"], 948.0);
        assert_eq!(s["orders_per_s_max"], 1500.0);
        assert_eq!(s["orders_per_s_runs"], serde_json::json!([1300.0, 948.0, 1500.0]));
        assert_eq!(s["p99_ms"], 60.0);
        assert_eq!(s["p99_ms_max"], 170.0);
        assert_eq!(
            s["calibration_roundtrip_us_runs"],
            serde_json::json!([40.0, 130.0, 35.0])
        );
        // Each tier's cost per order: its median over the runs.
        assert_eq!(s["burst_costs_per_order"]["redis_cpu_ms"], 0.4);
        // A lost order in any run shows in the summary.
        assert_eq!(s["lost"], 2);
        assert_eq!(s["oversold"], 0);
        assert_eq!(s["webhooks_delivered"], 63000);
        // An even number of runs: the mean of the middle two.
        let s = summarize_pipeline_runs(&[run(1000.0, 60.0, 0, 40.0), run(1200.0, 80.0, 0, 40.0)]);
        assert_eq!(s["orders_per_s"], 1100.0);
        assert_eq!(s["p99_ms"], 70.0);
    }
}
