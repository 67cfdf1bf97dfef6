//! The keeper: a backend's timers. Promotes due delayed entries in bounded chunks, renews the
//! lease on running entries (`XCLAIM … JUSTID` on the ones still owned), takes over entries
//! idle longer than `claim_idle_ms` in other consumers, trims old dead letters and forgets
//! long-gone consumers. It runs from timers, never from `poll_next`, because apalis stops
//! calling `poll_next` while concurrency is full.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use apalis_core::task::Task;
use redis::Value;
use tokio::sync::mpsc;

use super::{
    backend::{parse_entries, Decoder, Inner},
    now_ms, scripts, stats, GROUP,
};

pub(crate) async fn keep_loop<Args: Send + 'static>(
    inner: Arc<Inner>,
    tx: mpsc::Sender<Task<Args>>,
    decode: Decoder<Args>,
) {
    let mut stop = inner.stop.subscribe();
    let s = inner.ctx.settings.clone();
    let mut promote = tokio::time::interval(Duration::from_millis(100));
    let mut renew = tokio::time::interval(Duration::from_millis((s.claim_idle_ms / 3).max(100)));
    let mut reclaim = tokio::time::interval(Duration::from_millis((s.claim_idle_ms / 4).clamp(100, 2_000)));
    let mut tidy = tokio::time::interval(Duration::from_secs(60));
    for t in [&mut promote, &mut renew, &mut reclaim, &mut tidy] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let res = tokio::select! {
            _ = stop.changed() => break,
            _ = promote.tick() => promote_due(&inner).await,
            _ = renew.tick() => renew_leases(&inner).await,
            _ = reclaim.tick() => reclaim_stale(&inner, &tx, decode).await,
            _ = tidy.tick() => tidy_up(&inner).await,
        };
        if let Err(e) = res {
            inner.ctx.metrics.redis_errors.fetch_add(1, Relaxed);
            tracing::warn!(queue = %inner.ctx.keys.queue, error = %e, "queue upkeep failed; will retry");
        }
    }
}

/// Moves due delayed entries to the stream, 500 per script call so Redis is never blocked long.
async fn promote_due(inner: &Inner) -> redis::RedisResult<()> {
    let mut conn = inner.ctx.conn.clone();
    loop {
        let (moved, _next): (i64, Option<String>) = scripts::PROMOTE
            .key(&inner.ctx.keys.delayed)
            .key(&inner.ctx.keys.stream)
            .arg(now_ms())
            .arg(500)
            .invoke_async(&mut conn)
            .await?;
        if moved < 500 {
            return Ok(());
        }
    }
}

async fn renew_leases(inner: &Inner) -> redis::RedisResult<()> {
    let ids: Vec<String> = inner
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let mut conn = inner.ctx.conn.clone();
    for chunk in ids.chunks(200) {
        let mut inv = scripts::RENEW.key(&inner.ctx.keys.stream);
        inv.arg(GROUP).arg(&inner.ctx.consumer);
        for id in chunk {
            inv.arg(id);
        }
        let lost: Vec<String> = inv.invoke_async(&mut conn).await?;
        for id in lost {
            if inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
            {
                tracing::warn!(queue = %inner.ctx.keys.queue, entry_id = %id, "entry was taken over by another consumer while running here (paused too long?)");
            }
        }
    }
    Ok(())
}

/// Takes over entries idle longer than `claim_idle_ms` in any consumer (a crashed or hung
/// process, or this one before a restart), counting deliveries so a crash loop ends.
async fn reclaim_stale<Args: Send + 'static>(
    inner: &Inner,
    tx: &mpsc::Sender<Task<Args>>,
    decode: Decoder<Args>,
) -> redis::RedisResult<()> {
    let s = &inner.ctx.settings;
    let mut conn = inner.ctx.conn.clone();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&inner.ctx.keys.stream)
        .arg(GROUP)
        .arg("IDLE")
        .arg(s.claim_idle_ms)
        .arg("-")
        .arg("+")
        .arg(s.batch_size)
        .query_async(&mut conn)
        .await?;
    let mut candidates: Vec<(String, u64)> = {
        let mine = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .into_iter()
            .filter(|(id, _, _, _)| !mine.contains(id))
            .map(|(id, _, _, count)| (id, count))
            .collect()
    };
    if candidates.is_empty() {
        return Ok(());
    }
    // Stale entries have waited longest, so they go before new reads: under a steady backlog
    // the fetcher would otherwise hold every permit and a hung or cut-off consumer's entries
    // would wait until the load ebbed. Permits are taken one at a time as handlers finish (the
    // semaphore hands a released permit to a waiter first, so the fetcher's next read queues
    // behind this), for a short while only, so lease renewal in this loop is never held up.
    let wait = Duration::from_millis((s.claim_idle_ms / 10).clamp(50, 1_000));
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = 0;
    while got < candidates.len() {
        match tokio::time::timeout_at(deadline, inner.permits.acquire()).await {
            Ok(Ok(p)) => {
                p.forget();
                got += 1;
            }
            _ => break,
        }
    }
    if got == 0 {
        return Ok(());
    }
    candidates.truncate(got);
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(&inner.ctx.keys.stream)
        .arg(GROUP)
        .arg(&inner.ctx.consumer)
        .arg(s.claim_idle_ms);
    for (id, _) in &candidates {
        cmd.arg(id);
    }
    let claimed = match cmd.query_async::<Value>(&mut conn).await {
        Ok(v) => parse_entries(&v),
        Err(e) => {
            inner.permits.add_permits(candidates.len());
            return Err(e);
        }
    };
    inner
        .permits
        .add_permits(candidates.len() - claimed.len().min(candidates.len()));
    inner
        .ctx
        .metrics
        .reclaimed
        .fetch_add(claimed.len() as u64, Relaxed);
    for e in claimed {
        let before = candidates
            .iter()
            .find(|(id, _)| *id == e.id)
            .map(|(_, c)| *c)
            .unwrap_or(1);
        tracing::warn!(queue = %inner.ctx.keys.queue, entry_id = %e.id, deliveries = before + 1, "took over a stale entry");
        inner.deliver(e, (before + 1) as u32, tx, decode).await;
    }
    Ok(())
}

/// Trims expired dead letters and forgets consumers gone for more than ten minutes.
async fn tidy_up(inner: &Inner) -> redis::RedisResult<()> {
    let mut conn = inner.ctx.conn.clone();
    let keys = &inner.ctx.keys;
    let cutoff = now_ms() - (inner.ctx.settings.dead_retention_hours as i64) * 3_600_000;
    loop {
        let n: i64 = scripts::DEAD_TRIM
            .key(&keys.dead)
            .key(&keys.dead_index)
            .arg(cutoff)
            .arg(500)
            .invoke_async(&mut conn)
            .await?;
        if n < 500 {
            break;
        }
    }
    let consumers = stats::consumers(&mut conn, &keys.stream).await?;
    for c in consumers {
        if c.pending == 0 && c.idle_ms > 600_000 && c.name != inner.ctx.consumer {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&keys.stream)
                .arg(GROUP)
                .arg(&c.name)
                .query_async(&mut conn)
                .await?;
        }
    }
    Ok(())
}
