//! Dead letters: jobs that failed for good, kept with their payload, attempts, last error and
//! times for `dead_retention_hours`. List, show, retry (back to the stream with a fresh attempt
//! count) and purge, per queue, per id, or for all.

use crate::queue::conn::Conn;
use serde::{Deserialize, Serialize};

use super::{keys::QueueKeys, now_ms, scripts};

/// One dead letter, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// The dead letter's id (entry id and job id).
    #[serde(default)]
    pub id: String,
    pub queue: String,
    pub job_id: String,
    pub entry_id: String,
    pub payload: String,
    pub attempts: u32,
    pub deliveries: u32,
    pub error: String,
    pub enqueued_at: i64,
    pub died_at: i64,
}

/// Dead letters of one queue, newest first, at most `limit`.
pub async fn list(conn: &mut Conn, keys: &QueueKeys, limit: usize) -> redis::RedisResult<Vec<DeadLetter>> {
    let ids: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(&keys.dead_index)
        .arg(0)
        .arg(limit.saturating_sub(1))
        .query_async(conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&keys.dead)
        .arg(&ids)
        .query_async(conn)
        .await?;
    Ok(ids
        .into_iter()
        .zip(records)
        .filter_map(|(id, rec)| decode(&id, rec.as_deref()?))
        .collect())
}

/// One dead letter by id.
pub async fn show(conn: &mut Conn, keys: &QueueKeys, id: &str) -> redis::RedisResult<Option<DeadLetter>> {
    let rec: Option<String> = redis::cmd("HGET")
        .arg(&keys.dead)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(rec.and_then(|r| decode(id, &r)))
}

fn decode(id: &str, record: &str) -> Option<DeadLetter> {
    let mut d: DeadLetter = serde_json::from_str(record).ok()?;
    d.id = id.to_owned();
    Some(d)
}

/// Moves dead letters back to the queue: the given ids, or all of the queue's when `ids` is
/// empty. Returns how many moved.
pub async fn retry(conn: &mut Conn, keys: &QueueKeys, ids: &[String]) -> redis::RedisResult<usize> {
    let ids = if ids.is_empty() {
        all_ids(conn, keys).await?
    } else {
        ids.to_vec()
    };
    let mut moved = 0;
    for id in ids {
        let n: i64 = scripts::DEAD_RETRY
            .key(&keys.dead)
            .key(&keys.dead_index)
            .key(&keys.stream)
            .arg(&id)
            .arg(now_ms())
            .invoke_async(conn)
            .await?;
        moved += n as usize;
    }
    Ok(moved)
}

/// Deletes dead letters: the given ids, or all of the queue's when `ids` is empty.
pub async fn purge(conn: &mut Conn, keys: &QueueKeys, ids: &[String]) -> redis::RedisResult<usize> {
    let ids = if ids.is_empty() {
        all_ids(conn, keys).await?
    } else {
        ids.to_vec()
    };
    let mut purged = 0;
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HDEL").arg(&keys.dead).arg(chunk);
        pipe.cmd("ZREM").arg(&keys.dead_index).arg(chunk).ignore();
        let (n,): (usize,) = pipe.query_async(conn).await?;
        purged += n;
    }
    Ok(purged)
}

async fn all_ids(conn: &mut Conn, keys: &QueueKeys) -> redis::RedisResult<Vec<String>> {
    redis::cmd("ZRANGE")
        .arg(&keys.dead_index)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
}
