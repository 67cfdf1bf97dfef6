//! The apalis backend over one Redis stream and its consumer group.
//!
//! A backend instance owns three background tasks:
//! - the **fetcher** reads new entries with a blocking `XREADGROUP` on a connection of its own
//!   (a blocking read stalls every other command multiplexed on its connection) and decodes
//!   them into tasks. It reads only as many entries as it holds permits for, so entries fetched
//!   but not finished never exceed `concurrency + 2 × batch_size`;
//! - the **keeper** ([`super::upkeep`]) promotes due delayed entries, renews leases, takes over
//!   stale entries (dead-lettering those delivered too often) and tidies up;
//! - the **settler** ([`super::settle`]) batches the acknowledgements decided by [`super::ack`].
//!
//! It must never return an error from `poll_next` (that ends the apalis worker) nor `None`
//! (that means "no more tasks ever"): Redis failures are retried here with backoff, and a
//! payload that does not decode becomes a dead letter.

use std::{
    collections::HashSet,
    marker::PhantomData,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig},
    task::{builder::TaskBuilder, task_id::TaskId, Task},
    worker::context::WorkerContext,
};
use futures::future::BoxFuture;
use redis::Value;
use serde::de::DeserializeOwned;
use tokio::{
    sync::{mpsc, oneshot, watch, Semaphore},
    task::JoinHandle,
};

pub(crate) use super::entries::{dead_record, id_millis, parse_entries, text, RawEntry};
use super::entries::{parse_read_reply, truncate};
use super::{
    ack::{decide, AckLayer, Decision},
    conn::{Conn, RedisClient},
    groups::GroupRule,
    keys::QueueKeys,
    metrics::{self, QueueMetrics},
    now_ms, producer, scripts, Delivery, GROUP,
};
use crate::{config::QueueConfig, domain::backoff::RetryPolicy};

/// Everything a queue's workers in this process share: keys, settings, the consumer name and
/// a Redis connection that reconnects by itself.
#[derive(Clone)]
pub struct QueueContext {
    pub keys: QueueKeys,
    pub settings: QueueConfig,
    pub consumer: String,
    pub client: RedisClient,
    pub conn: Conn,
    pub metrics: Arc<QueueMetrics>,
}

impl QueueContext {
    /// Connects, creates the stream and group when missing, and registers the queue.
    pub async fn connect(
        client: &RedisClient,
        prefix: &str,
        queue: &str,
        settings: QueueConfig,
    ) -> Result<Self, redis::RedisError> {
        let mut conn = client.connect(None).await?;
        producer::declare(&mut conn, prefix, queue).await?;
        Ok(Self {
            keys: QueueKeys::new(prefix, queue),
            settings,
            consumer: super::process_consumer_name(),
            client: client.clone(),
            conn,
            metrics: metrics::for_queue(queue),
        })
    }

    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.settings.retry_base_ms),
            cap: Duration::from_millis(self.settings.retry_cap_ms),
            max_attempts: self.settings.max_attempts,
        }
    }
}

/// A settlement for the settler task.
pub(crate) enum Settle {
    /// Entry id and, in a grouped queue, its sequence id.
    Done(String, Option<String>),
    Later {
        entry_id: String,
        due_ms: i64,
        member: String,
        snooze: bool,
    },
    Dead {
        entry_id: String,
        dead_id: String,
        record: String,
        seq: Option<String>,
    },
    Flush(oneshot::Sender<()>),
}

/// State shared by a backend instance, its background tasks and its ack layer.
pub(crate) struct Inner {
    pub(crate) ctx: QueueContext,
    pub(crate) in_flight: Mutex<HashSet<String>>,
    pub(crate) permits: Semaphore,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) settle_tx: mpsc::UnboundedSender<Settle>,
    /// The queue's message groups, when it has them.
    pub(crate) groups: Option<&'static GroupRule>,
}

impl Inner {
    /// Called by the ack layer when a handler has returned.
    pub(crate) fn settle_after_run(
        &self,
        d: Delivery,
        result: Result<(), &apalis_core::error::BoxDynError>,
        took: Duration,
    ) {
        let m = &self.ctx.metrics;
        m.handler_count.fetch_add(1, Relaxed);
        m.handler_micros_sum.fetch_add(took.as_micros() as u64, Relaxed);
        let decision = decide(result, d.attempt, &self.ctx.policy(), fastrand::f64());
        match &decision {
            Decision::Done => {}
            // WARN is for what an operator should look at: a snooze is a job waiting its turn
            // (a rate limit, a deadline, a payment still processing) and a first retry is the
            // ordinary transient failure; a job failing again and again is worth a look.
            Decision::Later {
                delay,
                spend: false,
                error,
            } => {
                tracing::debug!(queue = %d.queue, job_id = %d.job_id, snooze_ms = delay.as_millis() as u64, reason = %error, "job snoozed");
            }
            Decision::Later {
                delay,
                spend: true,
                error,
            } if d.attempt < 3 => {
                tracing::info!(queue = %d.queue, job_id = %d.job_id, attempt = d.attempt, retry_in_ms = delay.as_millis() as u64, error = %error, "job will run again");
            }
            Decision::Later { delay, error, .. } => {
                tracing::warn!(queue = %d.queue, job_id = %d.job_id, attempt = d.attempt, retry_in_ms = delay.as_millis() as u64, error = %error, "job keeps failing; will run again");
            }
            Decision::Dead { error } => {
                tracing::error!(queue = %d.queue, job_id = %d.job_id, attempt = d.attempt, error = %error, "job is dead");
            }
        }
        self.settle(d, decision);
    }

    fn settle(&self, d: Delivery, decision: Decision) {
        let msg = match decision {
            Decision::Done => Settle::Done(d.entry_id, d.seq),
            Decision::Later { delay, spend, error } => {
                let spent = if spend {
                    d.attempt
                } else {
                    d.attempt.saturating_sub(1)
                };
                let mut member = serde_json::json!({
                    "job_id": d.job_id,
                    "payload": &*d.payload,
                    "attempt": spent.to_string(),
                    "enqueued_at": d.enqueued_at_ms.to_string(),
                    "last_error": truncate(&error, 2000),
                });
                if let Some(seq) = &d.seq {
                    member["gseq"] = seq.as_str().into();
                }
                Settle::Later {
                    entry_id: d.entry_id,
                    due_ms: now_ms() + delay.as_millis() as i64,
                    member: member.to_string(),
                    snooze: !spend,
                }
            }
            Decision::Dead { error } => {
                let record = dead_record(&d, &error);
                Settle::Dead {
                    dead_id: d.entry_id.clone(),
                    entry_id: d.entry_id,
                    record,
                    seq: d.seq,
                }
            }
        };
        // The settler outlives every sender but the backend itself; if it is gone the process
        // is stopping and the entry stays pending, to be redelivered: at-least-once holds.
        let _ = self.settle_tx.send(msg);
    }

    pub(crate) fn release(&self, entry_id: &str) {
        let removed = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(entry_id);
        if removed {
            self.ctx.metrics.in_flight.fetch_sub(1, Relaxed);
            self.permits.add_permits(1);
        }
    }
}

/// souk's apalis backend for one queue. Build one per worker with [`StreamsBackend::new`].
pub struct StreamsBackend<Args> {
    inner: Arc<Inner>,
    tx: Option<mpsc::Sender<Task<Args>>>,
    rx: Option<mpsc::Receiver<Task<Args>>>,
    settle_rx: Option<mpsc::UnboundedReceiver<Settle>>,
    handles: Vec<JoinHandle<()>>,
    settler: Option<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
    decode: Decoder<Args>,
    _args: PhantomData<fn() -> Args>,
}

/// Turns a raw payload into a job's arguments, or says why it cannot.
pub type Decoder<Args> = fn(&str) -> Result<Args, String>;

fn json_decoder<Args: DeserializeOwned>(raw: &str) -> Result<Args, String> {
    serde_json::from_str::<Args>(raw).map_err(|err| {
        format!(
            "payload does not decode as {}: {err}",
            std::any::type_name::<Args>()
        )
    })
}

impl<Args> std::fmt::Debug for StreamsBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsBackend")
            .field("queue", &self.inner.ctx.keys.queue)
            .field("consumer", &self.inner.ctx.consumer)
            .finish()
    }
}

/// Backend errors. Never returned to apalis (see the module docs); kept for the trait.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl<Args: DeserializeOwned + Send + 'static> StreamsBackend<Args> {
    /// A backend whose payloads are the JSON form of `Args`.
    pub fn new(ctx: QueueContext) -> Self {
        Self::with_decoder(ctx, json_decoder::<Args>)
    }
}

impl<Args: Send + 'static> StreamsBackend<Args> {
    /// A backend with its own payload decoder (for a queue that must see even malformed input,
    /// such as the storefront stream, whose handler records why a message was refused).
    pub fn with_decoder(ctx: QueueContext, decode: Decoder<Args>) -> Self {
        let prefetch = ctx.settings.concurrency + 2 * ctx.settings.batch_size;
        let (tx, rx) = mpsc::channel(prefetch);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                ctx,
                in_flight: Mutex::new(HashSet::new()),
                permits: Semaphore::new(prefetch),
                stop,
                settle_tx,
                groups: None,
            }),
            tx: Some(tx),
            rx: Some(rx),
            settle_rx: Some(settle_rx),
            handles: Vec::new(),
            settler: None,
            closing: None,
            decode,
            _args: PhantomData,
        }
    }

    /// Runs the queue's entries in message groups (see [`super::groups`]). Call before the
    /// worker starts.
    pub fn grouped(mut self, rule: &'static GroupRule) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.groups = Some(rule);
        }
        self
    }

    fn start(&mut self) {
        let (Some(tx), Some(settle_rx)) = (self.tx.take(), self.settle_rx.take()) else {
            return;
        };
        self.settler = Some(tokio::spawn(super::settle::settle_loop(
            self.inner.clone(),
            settle_rx,
        )));
        self.handles.push(tokio::spawn(fetch_loop::<Args>(
            self.inner.clone(),
            tx.clone(),
            self.decode,
        )));
        self.handles.push(tokio::spawn(super::upkeep::keep_loop::<Args>(
            self.inner.clone(),
            tx,
            self.decode,
        )));
        tracing::info!(queue = %self.inner.ctx.keys.queue, consumer = %self.inner.ctx.consumer, "worker started");
    }
}

impl<Args> Drop for StreamsBackend<Args> {
    fn drop(&mut self) {
        // Not closed through poll_close (a worker restart, a forced shutdown): stop everything.
        // Entries still pending are taken over by a live consumer after claim_idle_ms.
        let _ = self.inner.stop.send(true);
        for h in &self.handles {
            h.abort();
        }
        if let Some(s) = &self.settler {
            if self.closing.is_none() {
                s.abort();
            }
        }
    }
}

impl<Args: Send + 'static> Backend for StreamsBackend<Args> {
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.tx.is_some() {
            self.start();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Pending;
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(task)) => Poll::Ready(Some(Ok(task))),
            // The fetchers only stop at shutdown; "no more tasks ever" would hang the worker.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            let inner = self.inner.clone();
            let handles = std::mem::take(&mut self.handles);
            let rx = self.rx.take();
            let settler = self.settler.take();
            self.closing = Some(Box::pin(close(inner, handles, rx, settler)));
        }
        match self.closing.as_mut() {
            Some(f) => f.as_mut().poll(cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<Args> BackendConfig for StreamsBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = apalis_core::backend::finalize::Ephemeral;
    type Config = QueueConfig;
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &self.inner.ctx.settings
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        AckLayer {
            inner: self.inner.clone(),
        }
    }
}

/// Graceful close: stop fetching, give prefetched entries back, flush acknowledgements, leave.
async fn close<Args: Send + 'static>(
    inner: Arc<Inner>,
    handles: Vec<JoinHandle<()>>,
    rx: Option<mpsc::Receiver<Task<Args>>>,
    settler: Option<JoinHandle<()>>,
) {
    let _ = inner.stop.send(true);
    for h in handles {
        let _ = h.await;
    }
    let mut given_back = 0usize;
    if let Some(mut rx) = rx {
        rx.close();
        while let Some(task) = rx.recv().await {
            if let Some(d) = task.data().get::<Delivery>() {
                let keys = &inner.ctx.keys;
                let res: redis::RedisResult<i64> = scripts::GIVE_BACK
                    .key(&keys.stream)
                    .arg(GROUP)
                    .arg(&d.entry_id)
                    .arg(&*d.payload)
                    .arg(&d.job_id)
                    .arg(d.attempt.saturating_sub(1))
                    .arg(d.enqueued_at_ms)
                    .arg(d.seq.as_deref().unwrap_or(""))
                    .invoke_async(&mut inner.ctx.conn.clone())
                    .await;
                if res.is_ok() {
                    given_back += 1;
                }
                inner.release(&d.entry_id);
            }
        }
    }
    let (tx, done) = oneshot::channel();
    if inner.settle_tx.send(Settle::Flush(tx)).is_ok() {
        let _ = done.await;
    }
    if let Some(s) = settler {
        s.abort();
    }
    let left: redis::RedisResult<i64> = scripts::LEAVE_GROUP
        .key(&inner.ctx.keys.stream)
        .arg(GROUP)
        .arg(&inner.ctx.consumer)
        .invoke_async(&mut inner.ctx.conn.clone())
        .await;
    tracing::info!(queue = %inner.ctx.keys.queue, given_back, left_group = matches!(left, Ok(n) if n >= 0), "worker stopped");
}

impl Inner {
    /// Turns an entry into a task, or dead-letters it when its payload does not decode.
    pub(crate) async fn deliver<Args>(
        &self,
        e: RawEntry,
        deliveries: u32,
        tx: &mpsc::Sender<Task<Args>>,
        decode: Decoder<Args>,
    ) {
        let m = &self.ctx.metrics;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.id.clone());
        m.in_flight.fetch_add(1, Relaxed);
        let payload: Arc<str> = e.field("payload").unwrap_or_default().into();
        // In a grouped queue every entry has a sequence id: the one it carries once admitted,
        // else its own id (releasing an id that is in no group does nothing).
        let seq = self.groups.map(|_| e.field("gseq").unwrap_or(&e.id).to_owned());
        let spent: u32 = e.field("attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
        let (job_id, enqueued_at_ms, ignored) = super::entries::identity(&e, seq.as_deref());
        if let Some(t) = ignored {
            m.enqueued_at_ignored.fetch_add(1, Relaxed);
            tracing::info!(queue = %self.ctx.keys.queue, entry_id = %e.id, enqueued_at = t, "enqueued_at out of bounds; the entry's own time is used");
        }
        let d = Delivery {
            queue: self.ctx.keys.queue.as_str().into(),
            job_id,
            attempt: spent + 1,
            deliveries,
            enqueued_at_ms,
            entry_id: e.id,
            payload,
            seq,
            invalid_utf8: e.invalid_utf8,
        };
        if deliveries > self.ctx.settings.max_deliveries {
            let why = format!(
                "delivered {} times without finishing (max_deliveries = {}): the process running it crashed or hung each time",
                deliveries - 1,
                self.ctx.settings.max_deliveries
            );
            tracing::error!(queue = %d.queue, job_id = %d.job_id, "{why}");
            self.settle(d, Decision::Dead { error: why });
            return;
        }
        // A decoder of raw input (the storefront's) takes an empty payload too, and refuses it
        // with a recorded reason; a typed one fails on it, and the entry is dead-lettered.
        let parsed = decode(&d.payload).map_err(|e| {
            if e_has_payload(&d) {
                e
            } else {
                "entry has no `payload` field".to_owned()
            }
        });
        match parsed {
            Ok(args) => {
                let task = TaskBuilder::new(args)
                    .task_id(TaskId::String(d.entry_id.clone()))
                    .attempt((d.attempt - 1) as usize)
                    .max_attempts(self.ctx.settings.max_attempts as usize)
                    .data(d)
                    .build();
                // Fails only while closing; the entry then stays pending and is redelivered.
                let _ = tx.send(task).await;
            }
            Err(why) => {
                m.decode_failed.fetch_add(1, Relaxed);
                tracing::error!(queue = %d.queue, entry_id = %d.entry_id, error = %why, "poison entry dead-lettered");
                self.settle(d, Decision::Dead { error: why });
            }
        }
    }
}

fn e_has_payload(d: &Delivery) -> bool {
    !d.payload.is_empty()
}

/// One read of a grouped queue: the read script (non-blocking, since scripts cannot block)
/// and, when it found nothing new, a blocking `XREAD` past the newest entry, which wakes on
/// the next `XADD` without consuming it; the loop then reads again.
async fn read_grouped(
    inner: &Inner,
    rule: &GroupRule,
    c: &mut Conn,
    want: usize,
) -> redis::RedisResult<Vec<RawEntry>> {
    let keys = &inner.ctx.keys;
    let v: Value = rule
        .read
        .key(&keys.stream)
        .key(&keys.gkeys)
        .key(&keys.held)
        .arg(GROUP)
        .arg(&inner.ctx.consumer)
        .arg(want)
        .arg(&keys.group_prefix)
        .invoke_async(c)
        .await?;
    let (read, last, entries) = super::groups::parse_read(&v);
    if read == 0 {
        let _: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(inner.ctx.settings.block_ms)
            .arg("STREAMS")
            .arg(&keys.stream)
            .arg(&last)
            .query_async(c)
            .await?;
    }
    Ok(entries)
}

/// Sleeps for an exponential backoff step (100 ms doubling to 5 s), or until stop.
pub(crate) async fn backoff_sleep(step: &mut u32, stop: &mut watch::Receiver<bool>) {
    let ms = (100u64 << (*step).min(6)).min(5_000);
    *step += 1;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        _ = stop.changed() => {}
    }
}

async fn fetch_loop<Args: Send + 'static>(
    inner: Arc<Inner>,
    tx: mpsc::Sender<Task<Args>>,
    decode: Decoder<Args>,
) {
    let mut stop = inner.stop.subscribe();
    let s = &inner.ctx.settings;
    let mut conn: Option<Conn> = None;
    let mut step = 0u32;
    loop {
        if *stop.borrow() {
            break;
        }
        let first = tokio::select! {
            p = inner.permits.acquire() => p,
            _ = stop.changed() => break,
        };
        match first {
            Ok(p) => p.forget(),
            Err(_) => break,
        }
        let mut want = 1usize;
        let extra = inner.permits.available_permits().min(s.batch_size - 1);
        if extra > 0 {
            if let Ok(p) = inner.permits.try_acquire_many(extra as u32) {
                p.forget();
                want += extra;
            }
        }
        if conn.is_none() {
            // A connection of its own: the blocking read would stall anything sharing it.
            match inner
                .ctx
                .client
                .connect(Some(Duration::from_millis(s.block_ms + 5_000)))
                .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    inner.permits.add_permits(want);
                    inner.ctx.metrics.redis_errors.fetch_add(1, Relaxed);
                    tracing::warn!(queue = %inner.ctx.keys.queue, error = %e, "redis unreachable; retrying");
                    backoff_sleep(&mut step, &mut stop).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let res = match inner.groups {
            None => redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&inner.ctx.consumer)
                .arg("COUNT")
                .arg(want)
                .arg("BLOCK")
                .arg(s.block_ms)
                .arg("STREAMS")
                .arg(&inner.ctx.keys.stream)
                .arg(">")
                .query_async::<Value>(c)
                .await
                .map(|v| parse_read_reply(&v)),
            Some(rule) => read_grouped(&inner, rule, c, want).await,
        };
        match res {
            Ok(entries) => {
                step = 0;
                inner.permits.add_permits(want - entries.len().min(want));
                inner.ctx.metrics.fetched.fetch_add(entries.len() as u64, Relaxed);
                for e in entries {
                    inner.deliver(e, 1, &tx, decode).await;
                }
            }
            Err(e) => {
                inner.permits.add_permits(want);
                inner.ctx.metrics.redis_errors.fetch_add(1, Relaxed);
                if e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP") {
                    // The stream or group vanished (Redis restarted without persistence, or a
                    // FLUSH): create them again so new pushes are read.
                    let mut m = inner.ctx.conn.clone();
                    let _ = producer::declare(&mut m, &inner.ctx.keys.prefix, &inner.ctx.keys.queue).await;
                } else {
                    tracing::warn!(queue = %inner.ctx.keys.queue, error = %e, "read failed; retrying");
                }
                backoff_sleep(&mut step, &mut stop).await;
            }
        }
    }
}
