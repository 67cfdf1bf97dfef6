//! `souk demo`: souk's main job, shown on a burst of sample jobs.
//!
//! Until the order pipeline lands, the demo pushes a burst of `souk.record_sample.v1` jobs
//! (some that fail once and are retried, some scheduled a few seconds ahead, one poison entry)
//! through the real queue, with workers in this process, and prints what happened. It kills
//! nothing and leaves its results in PostgreSQL and its dead letter in Redis for inspection.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    app::App,
    jobs::record_sample::{SampleArgs, QUEUE},
    queue::{dead, stats},
};

/// Runs the demo with `jobs` sample jobs.
pub async fn run(app: App, jobs: usize) -> anyhow::Result<()> {
    let run = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let label = |kind: &str| format!("demo-{run}-{kind}");
    let retried = jobs / 20;
    let delayed = (jobs / 100).clamp(1, 200);
    let plain = jobs.saturating_sub(retried + delayed);

    println!("souk demo: {jobs} sample jobs through queue {QUEUE}");
    println!("  redis    {}", crate::config::redact_url(&app.config.redis.url));
    println!(
        "  postgres {}",
        crate::config::redact_url(&app.config.database.url)
    );

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let workers = {
        let app = app.clone();
        tokio::spawn(async move {
            app.run_workers(&[QUEUE.to_owned()], false, async move {
                let _ = stop_rx.changed().await;
            })
            .await
        })
    };

    let started = Instant::now();
    let mut batch = Vec::with_capacity(plain);
    for i in 0..plain {
        batch.push(SampleArgs {
            label: label("ok"),
            work_ms: (i % 3) as u64,
            fail_first: 0,
        });
    }
    app.producer.push_many(QUEUE, &batch).await?;
    let retry_jobs: Vec<SampleArgs> = (0..retried)
        .map(|_| SampleArgs {
            label: label("retried"),
            work_ms: 0,
            fail_first: 1,
        })
        .collect();
    app.producer.push_many(QUEUE, &retry_jobs).await?;
    for _ in 0..delayed {
        let args = SampleArgs {
            label: label("delayed"),
            work_ms: 0,
            fail_first: 0,
        };
        app.producer
            .push_after(QUEUE, &args, Duration::from_secs(3))
            .await?;
    }
    let poison = app.producer.push_raw(QUEUE, "{\"label\": 42, oops").await?;
    println!(
        "pushed {plain} plain jobs, {retried} that fail once, {delayed} due in 3 s, and 1 poison entry ({poison}) in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let total = jobs as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = done_for_run(&app, &run).await?;
        let width = 40usize;
        let filled = ((done as f64 / total.max(1) as f64) * width as f64) as usize;
        print!(
            "\r[{}{}] {done}/{total} completed, {:.0} jobs/s   ",
            "#".repeat(filled.min(width)),
            ".".repeat(width - filled.min(width)),
            done as f64 / started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        if done >= total {
            break;
        }
        if Instant::now() > deadline {
            println!();
            anyhow::bail!("the demo did not finish within 300 s: is a worker stuck? see `souk queues`");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!();

    let _ = stop_tx.send(true);
    workers.await??;

    let rows: Vec<(String, i64, i64, f64, f64)> = sqlx::query_as(
        "SELECT c.label, count(*), sum(c.attempts)::bigint,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.completed_at - c.enqueued_at))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM c.completed_at - c.enqueued_at))::float8
         FROM sample_completions c WHERE c.label LIKE $1 GROUP BY c.label ORDER BY c.label",
    )
    .bind(format!("demo-{run}-%"))
    .fetch_all(&app.pool)
    .await?;
    println!("\nresults recorded in postgres (table sample_completions):");
    println!(
        "  {:<28} {:>8} {:>9} {:>12} {:>12}",
        "label", "jobs", "attempts", "p50 latency", "p99 latency"
    );
    for (label, n, attempts, p50, p99) in &rows {
        println!(
            "  {label:<28} {n:>8} {attempts:>9} {:>10.0}ms {:>10.0}ms",
            p50 * 1000.0,
            p99 * 1000.0
        );
    }
    println!("  (latency: enqueued to completion recorded; the delayed jobs were due 3 s after enqueue)");
    println!(
        "\n{total} jobs in {elapsed:.2} s: {:.0} jobs/s end to end, two PostgreSQL writes each",
        total as f64 / elapsed
    );

    let mut conn = app.conn.clone();
    let keys = app.producer.keys(QUEUE);
    let letters = dead::list(&mut conn, &keys, 5).await?;
    println!("\ndead letters in {QUEUE} (newest first):");
    for d in letters.iter().take(3) {
        println!("  {}  attempts={}  error: {}", d.id, d.attempts, d.error);
    }
    let s = stats::queue_stats(&mut conn, &keys).await?;
    println!(
        "\nqueue now: length={} pending={} delayed={} dead={}",
        s.length, s.pending, s.delayed, s.dead
    );
    println!("\nlook further with:");
    println!("  souk queues                      # every queue: length, pending, delayed, dead, rates");
    println!("  souk dead list --queue {QUEUE}");
    println!("  souk dead retry --queue {QUEUE} <id>   # or purge");
    println!(
        "  psql {} -c 'select * from sample_completions limit 5'",
        crate::config::redact_url(&app.config.database.url)
    );
    Ok(())
}

async fn done_for_run(app: &App, run: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM sample_completions WHERE label LIKE $1")
            .bind(format!("demo-{run}-%"))
            .fetch_one(&app.pool)
            .await?,
    )
}
