//! The settler: writes the decisions of the ack layer to Redis in batches (acknowledge and
//! delete, park for later, dead-letter), retrying with backoff until Redis answers; an entry
//! is released from this process's prefetch count only once its settlement is written.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use tokio::sync::mpsc;

use super::{
    backend::{backoff_sleep, Inner, Settle},
    now_ms, scripts, GROUP,
};

pub(crate) async fn settle_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut buf = Vec::with_capacity(1024);
    let mut stop = inner.stop.subscribe();
    loop {
        if rx.recv_many(&mut buf, 1024).await == 0 {
            break;
        }
        let mut done = Vec::new();
        let mut others = Vec::new();
        let mut flushes = Vec::new();
        for s in buf.drain(..) {
            match s {
                Settle::Done(id, seq) => done.push((id, seq)),
                Settle::Flush(tx) => flushes.push(tx),
                other => others.push(other),
            }
        }
        let mut step = 0u32;
        loop {
            match apply(&inner, &done, &others).await {
                Ok(()) => break,
                Err(e) => {
                    inner.ctx.metrics.redis_errors.fetch_add(1, Relaxed);
                    tracing::warn!(queue = %inner.ctx.keys.queue, error = %e, pending = done.len() + others.len(), "acknowledgement failed; retrying");
                    if *stop.borrow() && step > 30 {
                        tracing::error!(queue = %inner.ctx.keys.queue, "giving up on acknowledgements at shutdown; those entries will run again elsewhere");
                        break;
                    }
                    backoff_sleep(&mut step, &mut stop).await;
                }
            }
        }
        for (id, _) in &done {
            inner.release(id);
        }
        for s in &others {
            match s {
                Settle::Later { entry_id, .. } | Settle::Dead { entry_id, .. } => inner.release(entry_id),
                _ => {}
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

async fn apply(
    inner: &Inner,
    done: &[(String, Option<String>)],
    others: &[Settle],
) -> redis::RedisResult<()> {
    let keys = &inner.ctx.keys;
    let m = &inner.ctx.metrics;
    let mut conn = inner.ctx.conn.clone();
    let minute = keys.stats_minute(now_ms() / 60_000);
    let (mut retried, mut snoozed, mut dead) = (0i64, 0i64, 0i64);
    for s in others {
        match s {
            Settle::Later {
                entry_id,
                due_ms,
                member,
                snooze,
            } => {
                let _: i64 = scripts::SETTLE_LATER
                    .key(&keys.stream)
                    .key(&keys.delayed)
                    .arg(GROUP)
                    .arg(entry_id)
                    .arg(due_ms)
                    .arg(member)
                    .invoke_async(&mut conn)
                    .await?;
                if *snooze {
                    snoozed += 1;
                } else {
                    retried += 1;
                }
            }
            Settle::Dead {
                entry_id,
                dead_id,
                record,
                seq,
            } => {
                let mut inv = match inner.groups {
                    Some(rule) => rule.dead.prepare_invoke(),
                    None => scripts::SETTLE_DEAD.prepare_invoke(),
                };
                inv.key(&keys.stream)
                    .key(&keys.dead)
                    .key(&keys.dead_index)
                    .arg(GROUP)
                    .arg(entry_id)
                    .arg(dead_id)
                    .arg(record)
                    .arg(now_ms());
                if inner.groups.is_some() {
                    inv.key(&keys.gkeys)
                        .key(&keys.held)
                        .arg(&keys.group_prefix)
                        .arg(seq.as_deref().unwrap_or(""));
                }
                let _: i64 = inv.invoke_async(&mut conn).await?;
                dead += 1;
            }
            _ => {}
        }
    }
    let (grouped, plain): (Vec<_>, Vec<_>) = done.iter().partition(|(_, seq)| seq.is_some());
    if let Some(rule) = inner.groups {
        // The release of a head's groups happens in the script of its XACK: acknowledged and
        // released together, or neither.
        for chunk in grouped.chunks(200) {
            let mut inv = rule.done.prepare_invoke();
            inv.key(&keys.stream)
                .key(&keys.gkeys)
                .key(&keys.held)
                .arg(GROUP)
                .arg(&keys.group_prefix);
            for (id, seq) in chunk {
                inv.arg(id).arg(seq.as_deref().unwrap_or(""));
            }
            let _: i64 = inv.invoke_async(&mut conn).await?;
        }
    }
    let plain: Vec<&String> = plain.into_iter().map(|(id, _)| id).collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    if !plain.is_empty() {
        pipe.cmd("XACK").arg(&keys.stream).arg(GROUP).arg(&plain).ignore();
        pipe.cmd("XDEL").arg(&keys.stream).arg(&plain).ignore();
    }
    if !done.is_empty() {
        pipe.cmd("HINCRBY")
            .arg(&minute)
            .arg("done")
            .arg(done.len())
            .ignore();
    }
    for (field, n) in [("retried", retried), ("snoozed", snoozed), ("dead", dead)] {
        if n > 0 {
            pipe.cmd("HINCRBY").arg(&minute).arg(field).arg(n).ignore();
        }
    }
    if !done.is_empty() || retried + snoozed + dead > 0 {
        pipe.cmd("EXPIRE").arg(&minute).arg(3_600).ignore();
        let () = pipe.query_async(&mut conn).await?;
    }
    m.done.fetch_add(done.len() as u64, Relaxed);
    m.retried.fetch_add(retried as u64, Relaxed);
    m.snoozed.fetch_add(snoozed as u64, Relaxed);
    m.dead.fetch_add(dead as u64, Relaxed);
    Ok(())
}
