//! Queue statistics for `souk queues`: length, pending per consumer, oldest age, delayed,
//! dead and recent rates. Read-only; must not change any queue.

use std::collections::BTreeMap;

use crate::queue::conn::Conn;
use redis::Value;
use serde::Serialize;

use super::{keys::QueueKeys, now_ms, GROUP};

/// One consumer of a queue's group.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerInfo {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
}

/// A snapshot of one queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Entries in the stream not yet finished: waiting plus pending.
    pub length: u64,
    /// Entries read by a consumer and not yet settled.
    pub pending: u64,
    /// Entries not yet read by any consumer.
    pub waiting: u64,
    pub consumers: Vec<ConsumerInfo>,
    /// Age of the oldest unfinished entry, in seconds.
    pub oldest_age_s: Option<f64>,
    pub delayed: u64,
    /// Grouped queues: entries waiting for an earlier entry of one of their groups.
    pub held: u64,
    pub dead: u64,
    /// Per-minute rates over the last 5 complete minutes (events per minute).
    pub rates_per_min: BTreeMap<String, f64>,
}

pub(crate) async fn consumers(conn: &mut Conn, stream: &str) -> redis::RedisResult<Vec<ConsumerInfo>> {
    let v: Value = match redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(GROUP)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    if let Value::Array(list) = v {
        for c in list {
            let pairs: Vec<(String, Value)> = match c {
                Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|p| match (p.first(), p.get(1)) {
                        (Some(k), Some(v)) => {
                            Some((redis::from_redis_value::<String>(k.clone()).ok()?, v.clone()))
                        }
                        _ => None,
                    })
                    .collect(),
                Value::Map(kv) => kv
                    .into_iter()
                    .filter_map(|(k, v)| Some((redis::from_redis_value::<String>(k).ok()?, v)))
                    .collect(),
                _ => continue,
            };
            let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let num = |name: &str| {
                get(name)
                    .and_then(|v| redis::from_redis_value::<u64>(v).ok())
                    .unwrap_or(0)
            };
            out.push(ConsumerInfo {
                name: get("name")
                    .and_then(|v| redis::from_redis_value::<String>(v).ok())
                    .unwrap_or_default(),
                pending: num("pending"),
                idle_ms: num("idle"),
            });
        }
    }
    Ok(out)
}

/// The names of all queues known under `prefix`.
pub async fn queue_names(conn: &mut Conn, prefix: &str) -> redis::RedisResult<Vec<String>> {
    let mut names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(QueueKeys::registry(prefix))
        .query_async(conn)
        .await?;
    names.sort();
    Ok(names)
}

/// A snapshot of one queue.
pub async fn queue_stats(conn: &mut Conn, keys: &QueueKeys) -> redis::RedisResult<QueueStats> {
    let minute_now = now_ms() / 60_000;
    let mut pipe = redis::pipe();
    pipe.cmd("XLEN").arg(&keys.stream);
    pipe.cmd("ZCARD").arg(&keys.delayed);
    pipe.cmd("HLEN").arg(&keys.dead);
    pipe.cmd("HLEN").arg(&keys.held);
    pipe.cmd("XRANGE")
        .arg(&keys.stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
    for m in 1..=5 {
        pipe.cmd("HGETALL").arg(keys.stats_minute(minute_now - m));
    }
    type Minute = BTreeMap<String, f64>;
    type Reply = (u64, u64, u64, u64, Value, Minute, Minute, Minute, Minute, Minute);
    let (length, delayed, dead, held, first, r1, r2, r3, r4, r5): Reply = pipe.query_async(conn).await?;
    let consumers = consumers(conn, &keys.stream).await?;
    let pending: u64 = consumers.iter().map(|c| c.pending).sum();
    let oldest_age_s = super::backend::parse_entries(&first)
        .first()
        .map(|e| (now_ms() - super::backend::id_millis(&e.id)).max(0) as f64 / 1000.0);
    let mut rates_per_min = BTreeMap::new();
    for r in [r1, r2, r3, r4, r5] {
        for (k, v) in r {
            *rates_per_min.entry(k).or_insert(0.0) += v / 5.0;
        }
    }
    Ok(QueueStats {
        queue: keys.queue.clone(),
        length,
        pending,
        waiting: length.saturating_sub(pending),
        consumers,
        oldest_age_s,
        delayed,
        held,
        dead,
        rates_per_min,
    })
}
