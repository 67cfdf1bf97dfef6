//! `souk bench tracking`: shipments tracked to their end against the sandbox's rate-limited
//! AfterShip stand-in.

use std::time::{Duration, Instant};

use crate::config::Config;

use super::{bench_config, drop_world, wait_settled};

/// Options of `souk bench tracking`.
#[derive(Debug, Clone)]
pub struct TrackingBenchOptions {
    pub shipments: usize,
    pub merchants: usize,
    /// souk's fleet-wide limit on provider calls per second; the sandbox allows 10 % more.
    pub rate_per_s: u32,
    /// Time between two scripted carrier events (ms).
    pub step_ms: u64,
}

/// Shipments tracked to their end against the sandbox's rate-limited AfterShip stand-in.
pub async fn tracking(config: &Config, opts: &TrackingBenchOptions) -> anyhow::Result<serde_json::Value> {
    use crate::demo::World;
    let mut config = bench_config(config)?;
    let t = &mut config.tracking;
    t.rate_per_s = opts.rate_per_s;
    let step_s = opts.step_ms.div_ceil(1000).max(1);
    (t.poll_imminent_s, t.poll_moving_s, t.poll_unscanned_s) = (step_s, step_s * 2, step_s * 2);
    (t.poll_quiet_s, t.quiet_after_s) = (step_s * 5, step_s * 30);
    let world = World::start(
        config,
        crate::demo::WorldOptions {
            merchants: opts.merchants,
            skus_per_merchant: 10,
            stock_per_sku: 1_000_000,
            auto_accept_every: 1,
            acceptance_deadline_s: 3600,
            unpaid_timeout_s: 1800,
            in_process_workers: true,
        },
    )
    .await?;
    *world
        .sandbox
        .couriers
        .step
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Duration::from_millis(opts.step_ms);
    *world
        .sandbox
        .couriers
        .rate_per_s
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = opts.rate_per_s + (opts.rate_per_s / 10).max(1);
    let app = world.app.clone();
    let like = format!("demo-{}-%", world.run);
    let orders: Vec<String> = (0..opts.shipments)
        .map(|n| {
            world
                .order(n, &[(n % opts.merchants, n % 10, 1)], "requires_capture")
                .1
                .to_string()
        })
        .collect();
    eprintln!("bench: {} orders to ship", opts.shipments);
    app.producer
        .push_raw_many(crate::enqueue::STOREFRONT, &orders)
        .await?;
    wait_settled(&app, &like, opts.shipments as i64, Duration::from_secs(1800)).await?;
    let ships: Vec<String> = (0..opts.shipments)
        .map(|n| {
            serde_json::json!({"type": "shipment.created", "version": 1,
                "storefront_order_id": format!("demo-{}-{n:06}", world.run),
                "merchant_id": world.merchants[n % opts.merchants],
                "tracking_number": format!("BENCH{}{n:06}", world.run.replace('-', "")),
                "carrier": "dhl"})
            .to_string()
        })
        .collect();
    eprintln!(
        "bench: {} shipments tracked at most {}/s",
        opts.shipments, opts.rate_per_s
    );
    let started = Instant::now();
    app.producer
        .push_raw_many(crate::enqueue::STOREFRONT, &ships)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let (done, pending_hooks): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM shipments s JOIN sub_orders so ON so.id = s.sub_order_id JOIN orders o ON o.id = so.order_id
                     WHERE o.storefront_order_id LIKE $1 AND s.status IN ('delivered', 'returned', 'expired')),
                    (SELECT count(*) FROM webhook_deliveries d JOIN orders o ON o.id = d.order_id
                     WHERE o.storefront_order_id LIKE $1 AND d.status = 'pending')",
        )
        .bind(&like)
        .fetch_one(&app.pool)
        .await?;
        if done >= opts.shipments as i64 && pending_hooks == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {} shipments ended",
            opts.shipments
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (polls, events, p50, p99, changes): (Option<i64>, i64, Option<f64>, Option<f64>, i64) = sqlx::query_as(
        "WITH ours AS (SELECT s.* FROM shipments s JOIN sub_orders so ON so.id = s.sub_order_id JOIN orders o ON o.id = so.order_id
                       WHERE o.storefront_order_id LIKE $1),
              lag AS (SELECT extract(epoch FROM d.delivered_at - (d.payload->>'last_event_at')::timestamptz) AS s
                      FROM webhook_deliveries d JOIN ours ON ours.id = (d.payload->>'shipment_id')::bigint
                      WHERE d.event_type = 'shipment.status_changed' AND d.status = 'delivered')
         SELECT (SELECT sum(polls) FROM ours)::bigint,
                (SELECT count(*) FROM tracking_events e JOIN ours ON ours.id = e.shipment_id),
                (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM lag)::float8,
                (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY s) FROM lag)::float8,
                (SELECT count(*) FROM lag)",
    )
    .bind(&like)
    .fetch_one(&app.pool)
    .await?;
    let served = world.sandbox.counters();
    let dups: u64 = world
        .merchants
        .iter()
        .map(|m| world.sandbox.endpoint_report(m).duplicates)
        .sum();
    world.stop().await?;
    drop_world(&app).await?;
    let polls = polls.unwrap_or(0);
    let calls = served.get("tracking_register").copied().unwrap_or(0)
        + served.get("tracking_get").copied().unwrap_or(0);
    Ok(serde_json::json!({
        "bench": "tracking",
        "shipments": opts.shipments,
        "polls": polls,
        "polls_per_shipment": (polls as f64 / opts.shipments as f64 * 100.0).round() / 100.0,
        "provider_calls": calls,
        "provider_calls_per_s": (calls as f64 / secs).round(),
        "rate_limit_per_s": opts.rate_per_s,
        "rate_limit_violations": served.get("tracking_rate_limited").copied().unwrap_or(0),
        "events_stored": events,
        "status_changes_notified": changes,
        "webhook_duplicates_at_merchants": dups,
        "p50_status_lag_s": (p50.unwrap_or(0.0) * 100.0).round() / 100.0,
        "p99_status_lag_s": (p99.unwrap_or(0.0) * 100.0).round() / 100.0,
        "carrier_step_ms": opts.step_ms,
        "seconds": (secs * 10.0).round() / 10.0,
    }))
}
