//! Pushing jobs: one, many, for later, or once per idempotency key.
//!
//! The producer writes the documented wire format, so what it does a storefront in any
//! language can do with `XADD`. It must not wait for or read results.

use std::time::Duration;

use crate::queue::conn::Conn;
use serde::Serialize;

use super::{keys::QueueKeys, now_ms, scripts, GROUP};

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Added; carries the stream entry id (immediate push) or the job id (delayed or unique push).
    Pushed(String),
    /// An idempotent push whose key was already used inside its window: nothing was added.
    /// Carries the job id of the first push.
    Duplicate(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot encode the job arguments: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Pushes jobs onto queues under one key prefix.
#[derive(Clone)]
pub struct Producer {
    conn: Conn,
    prefix: String,
}

impl Producer {
    pub fn new(conn: Conn, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
        }
    }

    pub fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.prefix, queue)
    }

    /// Creates the stream and its consumer group if missing, and lists the queue for
    /// `souk queues`. Reading from id 0 means entries pushed before any worker started count.
    pub async fn declare(&self, queue: &str) -> Result<(), redis::RedisError> {
        declare(&mut self.conn.clone(), &self.prefix, queue).await
    }

    /// Pushes one job to run now; returns the stream entry id.
    pub async fn push<T: Serialize>(&self, queue: &str, args: &T) -> Result<String, PushError> {
        let payload = serde_json::to_string(args)?;
        self.push_raw(queue, &payload).await
    }

    /// Pushes one raw JSON payload to run now (what `XADD … payload <json>` does).
    pub async fn push_raw(&self, queue: &str, payload: &str) -> Result<String, PushError> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let id: String = redis::cmd("XADD")
            .arg(&keys.stream)
            .arg("*")
            .arg("payload")
            .arg(payload)
            .arg("enqueued_at")
            .arg(now_ms())
            .query_async(&mut conn)
            .await?;
        conn.replicated(&keys.stream).await?;
        Ok(id)
    }

    /// [`Producer::push_raw`] once per `key` within `window`: the entry id of the push that
    /// used the key, and whether it was this one. A caller that retries after losing the
    /// answer finds its first entry instead of adding a second.
    pub async fn push_raw_once(
        &self,
        queue: &str,
        key: &str,
        payload: &str,
        window: Duration,
    ) -> Result<(bool, String), PushError> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let (added, id): (i64, String) = scripts::PUSH_RAW_ONCE
            .key(&keys.stream)
            .key(keys.idempotency(key))
            .arg(payload)
            .arg(now_ms())
            .arg(window.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        conn.replicated(&keys.stream).await?;
        Ok((added == 1, id))
    }

    /// Pushes many jobs in one pipelined round trip per 1,000; returns their entry ids.
    pub async fn push_many<T: Serialize>(&self, queue: &str, jobs: &[T]) -> Result<Vec<String>, PushError> {
        let payloads = jobs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        self.push_raw_many(queue, &payloads).await
    }

    /// Pushes many raw JSON payloads in one pipelined round trip per 1,000; returns their entry ids.
    pub async fn push_raw_many(&self, queue: &str, payloads: &[String]) -> Result<Vec<String>, PushError> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut ids = Vec::with_capacity(payloads.len());
        for chunk in payloads.chunks(1000) {
            let now = now_ms();
            let mut pipe = redis::pipe();
            for payload in chunk {
                pipe.cmd("XADD")
                    .arg(&keys.stream)
                    .arg("*")
                    .arg("payload")
                    .arg(payload)
                    .arg("enqueued_at")
                    .arg(now);
            }
            let mut got: Vec<String> = pipe.query_async(&mut conn).await?;
            conn.replicated(&keys.stream).await?;
            ids.append(&mut got);
        }
        Ok(ids)
    }

    /// Pushes a job to run at `due_ms` (unix milliseconds); returns its job id.
    pub async fn push_at<T: Serialize>(
        &self,
        queue: &str,
        args: &T,
        due_ms: i64,
    ) -> Result<String, PushError> {
        let keys = self.keys(queue);
        let job_id = new_job_id();
        let member = serde_json::json!({
            "job_id": job_id,
            "payload": serde_json::to_string(args)?,
            "attempt": "0",
            "enqueued_at": now_ms().to_string(),
        });
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("ZADD")
            .arg(&keys.delayed)
            .arg(due_ms)
            .arg(member.to_string())
            .query_async(&mut conn)
            .await?;
        conn.replicated(&keys.delayed).await?;
        Ok(job_id)
    }

    /// Pushes a job to run after `delay`; returns its job id.
    pub async fn push_after<T: Serialize>(
        &self,
        queue: &str,
        args: &T,
        delay: Duration,
    ) -> Result<String, PushError> {
        self.push_at(queue, args, now_ms() + delay.as_millis() as i64)
            .await
    }

    /// Pushes a job unless a push with the same `key` happened within `window`. The key becomes
    /// the job id, so handlers see the same id for the same logical job.
    pub async fn push_unique<T: Serialize>(
        &self,
        queue: &str,
        key: &str,
        args: &T,
        window: Duration,
        due_ms: Option<i64>,
    ) -> Result<PushOutcome, PushError> {
        let mut outcomes = self
            .push_unique_many(queue, &[(key.to_owned(), args, due_ms)], window)
            .await?;
        Ok(outcomes.remove(0))
    }

    /// [`Producer::push_unique`] for several jobs of one queue, in one round trip and one
    /// script run: `(key, args, due_ms)` each; an outcome per job, in order (a key repeated in
    /// the call is pushed once).
    pub async fn push_unique_many<T: Serialize>(
        &self,
        queue: &str,
        jobs: &[(String, T, Option<i64>)],
        window: Duration,
    ) -> Result<Vec<PushOutcome>, PushError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut inv = scripts::PUSH_UNIQUE.key(&keys.stream);
        inv.key(&keys.delayed)
            .arg(window.as_millis().max(1) as u64)
            .arg(now_ms());
        for (key, args, due_ms) in jobs {
            inv.key(keys.idempotency(key))
                .arg(key)
                .arg(serde_json::to_string(args)?)
                .arg(due_ms.unwrap_or(0));
        }
        let mut conn = self.conn.clone();
        let answers: Vec<(i64, String)> = inv.invoke_async(&mut conn).await?;
        conn.replicated(&keys.stream).await?;
        Ok(answers
            .into_iter()
            .map(|(pushed, id)| {
                if pushed == 1 {
                    PushOutcome::Pushed(id)
                } else {
                    PushOutcome::Duplicate(id)
                }
            })
            .collect())
    }
}

/// See [`Producer::declare`].
pub(crate) async fn declare(conn: &mut Conn, prefix: &str, queue: &str) -> Result<(), redis::RedisError> {
    let keys = QueueKeys::new(prefix, queue);
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(()) => {}
        Err(e) if e.code() == Some("BUSYGROUP") => {}
        Err(e) => return Err(e),
    }
    let _: i64 = redis::cmd("SADD")
        .arg(QueueKeys::registry(prefix))
        .arg(queue)
        .query_async(conn)
        .await?;
    Ok(())
}

/// A random 128-bit job id in hex.
pub fn new_job_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
