//! The running application: configuration, connections, and the worker fleet of one process.
//!
//! Owns start-up (connect, register queues) and the run loop (apalis `Monitor`, cron, graceful
//! shutdown). Signals and the command line stay in `workers/main.rs`.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use apalis::prelude::Monitor;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    config::{redact_url, Config, QueueConfig},
    integrations::{
        payment::{PaymentProvider, StripeClient},
        webhook::WebhookSender,
    },
    jobs,
    queue::{
        backend::QueueContext,
        conn::{Conn, RedisClient},
        cron, Producer,
    },
    store::{batch::Batcher, pipeline},
};

/// Connections and configuration shared by everything in a process.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub redis: RedisClient,
    pub conn: Conn,
    pub pool: PgPool,
    pub producer: Producer,
    pub payments: Arc<dyn PaymentProvider>,
    pub tracking: Arc<dyn crate::integrations::tracking::TrackingProvider>,
    pub webhooks: WebhookSender,
    /// Group commit of the order pipeline's hot writes (see `store::batch`).
    pub batches: Arc<Batches>,
    /// Webhook jobs of this process waiting for a merchant's delivery slot.
    pub slot_waits: Arc<crate::queue::slot_waits::SlotWaits>,
}

/// The batchers of the order pipeline, one per kind of write (and the two hottest reads); each
/// runs one batch at a time.
pub struct Batches {
    pub insert_orders: Batcher<pipeline::NewOrder, crate::store::orders::Stored>,
    pub reserve: Batcher<pipeline::ReserveReq, pipeline::Reserved>,
    /// Reads of one order each (confirm_payment), one statement per batch.
    pub order: Batcher<i64, Option<crate::store::orders::OrderRow>>,
    /// Reads of one order and its charge target each (adjust_payment).
    pub target: Batcher<i64, Option<crate::store::orders::WithTarget>>,
    pub hand_over: Batcher<pipeline::HandOver, pipeline::HandedOver>,
    pub delivered: Batcher<pipeline::Delivered, bool>,
    pub catalogue: Batcher<Vec<(String, String)>, pipeline::Known>,
    pub deliveries: Batcher<String, Option<crate::store::deliveries::DeliveryRow>>,
}

impl Batches {
    /// Starts the batch tasks on `pool`; needs a running tokio runtime.
    pub fn start(pool: &PgPool, config: &Config) -> Self {
        let max = config.database.batch_size;
        let ttl = config.marketplace.reservation_ttl_s;
        Self {
            insert_orders: on_pool(pool, "insert_orders", max, |p, reqs| async move {
                pipeline::insert_orders(&p, &reqs).await
            }),
            reserve: on_pool(pool, "reserve", max, move |p, reqs| async move {
                pipeline::reserve_sub_orders(&p, &reqs, ttl).await
            }),
            order: on_pool(pool, "order", max, |p, ids| async move {
                crate::store::orders::orders_by_id(&p, &ids).await
            }),
            target: on_pool(pool, "target", max, |p, ids| async move {
                crate::store::orders::orders_with_targets(&p, &ids).await
            }),
            hand_over: on_pool(pool, "hand_over", max, |p, reqs| async move {
                pipeline::hand_over(&p, &reqs, crate::domain::ids::sub_order_webhook_id).await
            }),
            delivered: on_pool(pool, "delivered", max, |p, reqs| async move {
                pipeline::record_delivered(&p, &reqs).await
            }),
            catalogue: on_pool(pool, "catalogue", max, |p, reqs| async move {
                pipeline::catalogue(&p, &reqs).await
            }),
            deliveries: on_pool(pool, "deliveries", max, |p, ids| async move {
                pipeline::load_deliveries(&p, &ids).await
            }),
        }
    }
}

/// A batcher whose batch function gets its own handle on the pool.
fn on_pool<Q, R, F, Fut>(pool: &PgPool, name: &'static str, max: usize, run: F) -> Batcher<Q, R>
where
    Q: Clone + Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(PgPool, Arc<[Q]>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<R>, sqlx::Error>> + Send + 'static,
{
    let pool = pool.clone();
    Batcher::spawn(name, max, move |reqs| run(pool.clone(), reqs))
}

/// Runs `step` until it succeeds or `wait` has passed since the first try, pausing 250 ms
/// doubling to 5 s between tries; each failure before the end is logged at WARN.
async fn patiently<T, F, Fut>(what: &str, wait: Duration, mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(250);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = pause.as_millis() as u64, "{what} failed at start; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

impl App {
    /// Connects to Redis and PostgreSQL (creating and migrating the database when needed),
    /// failing at the first error: for commands an operator runs.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        Self::connect_within(config, Duration::ZERO).await
    }

    /// [`App::connect`], trying again for up to `wait` while Redis or PostgreSQL cannot be
    /// reached or used yet (restarting, recovering, failing over): for a worker, which a
    /// supervisor starts whenever it likes. A malformed `redis.url` fails at once.
    pub async fn connect_within(config: Config, wait: Duration) -> anyhow::Result<Self> {
        let redis = RedisClient::open(&config.redis)
            .with_context(|| format!("redis.url {}", redact_url(&config.redis.url)))?;
        let (conn, pool) = patiently("connecting", wait, || async {
            let conn = redis
                .connect(None)
                .await
                .with_context(|| format!("connecting to redis at {}", redact_url(&config.redis.url)))?;
            let target = config.database.migrate_target();
            let migrated = crate::store::migrate(target)
                .await
                .with_context(|| format!("preparing the database at {}", redact_url(target)))?;
            migrated.close().await;
            let pool = crate::store::connect_with(
                &config.database.url,
                config.database.max_connections,
                config.database.transaction_pooler,
            )
            .await
            .with_context(|| format!("connecting to {}", redact_url(&config.database.url)))?;
            anyhow::Ok((conn, pool))
        })
        .await?;
        let producer = Producer::new(conn.clone(), config.redis.key_prefix.clone());
        let payments: Arc<dyn PaymentProvider> = Arc::new(
            StripeClient::new(
                &config.payment.base_url,
                config.payment.api_key.expose(),
                Duration::from_millis(config.payment.timeout_ms),
            )
            .context("building the payment client")?,
        );
        let tracking = crate::integrations::tracking::from_config(&config.tracking)
            .context("building the tracking client")?;
        let webhooks = WebhookSender::new(
            Duration::from_millis(config.webhooks.timeout_ms),
            config.webhooks.allow_private_targets,
            &config.webhooks.proxy,
        )
        .context("building the webhook client")?;
        let batches = Arc::new(Batches::start(&pool, &config));
        Ok(Self {
            batches,
            // Shared, not copied: every job gets its own handle on the App.
            config: Arc::new(config),
            redis,
            conn,
            pool,
            producer,
            payments,
            tracking,
            webhooks,
            slot_waits: Arc::default(),
        })
    }

    /// Pushes a job once per key within the queue's idempotency window (see `Producer::push_unique`).
    pub async fn push_once<T: serde::Serialize>(
        &self,
        queue: &str,
        key: &str,
        args: &T,
        due_ms: Option<i64>,
    ) -> Result<(), crate::queue::JobError> {
        let window = Duration::from_secs(self.config.queue(queue).idempotency_window_s);
        self.producer
            .push_unique(queue, key, args, window, due_ms)
            .await
            .map(|_| ())
            .map_err(crate::queue::JobError::retry)
    }

    /// [`App::push_once`] for several jobs of one queue, in one round trip: `(key, args,
    /// due_ms)` each.
    pub async fn push_once_many<T: serde::Serialize>(
        &self,
        queue: &str,
        jobs: &[(String, T, Option<i64>)],
    ) -> Result<(), crate::queue::JobError> {
        let window = Duration::from_secs(self.config.queue(queue).idempotency_window_s);
        self.producer
            .push_unique_many(queue, jobs, window)
            .await
            .map(|_| ())
            .map_err(crate::queue::JobError::retry)
    }

    /// The queue context of `queue` with its effective settings, trying again for up to
    /// `worker.startup_wait_s` while Redis cannot take the declaration (a failover).
    pub async fn queue_context(&self, queue: &str) -> anyhow::Result<QueueContext> {
        let wait = Duration::from_secs(self.config.worker.startup_wait_s);
        patiently("declaring a queue", wait, || async {
            QueueContext::connect(
                &self.redis,
                &self.config.redis.key_prefix,
                queue,
                self.config.queue(queue),
            )
            .await
            .with_context(|| format!("declaring queue {queue}"))
        })
        .await
    }

    /// Runs the workers of the selected queues (all when `only` is empty) and the cron
    /// scheduler until `shutdown` resolves, then drains gracefully.
    pub async fn run_workers(
        &self,
        only: &[String],
        with_cron: bool,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        for q in only {
            if !jobs::ALL.iter().any(|j| j.queue == q) {
                let known: Vec<&str> = jobs::ALL.iter().map(|j| j.queue).collect();
                anyhow::bail!("unknown queue {q}; known queues: {}", known.join(", "));
            }
        }
        let mut monitor =
            Monitor::new().shutdown_timeout(Duration::from_millis(self.config.worker.shutdown_timeout_ms));
        for kind in jobs::ALL {
            if only.is_empty() || only.iter().any(|q| q == kind.queue) {
                let ctx = self.queue_context(kind.queue).await?;
                monitor = (kind.register)(monitor, self, ctx);
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let relay = tokio::spawn(crate::outcomes::relay_loop(self.clone(), stop_rx.clone()));
        let cron_jobs = cron::CronJob::from_config(&self.config.cron);
        let scheduler = if with_cron && !cron_jobs.is_empty() {
            Some(tokio::spawn(cron::run_scheduler(
                self.conn.clone(),
                self.config.redis.key_prefix.clone(),
                cron_jobs,
                stop_rx,
            )))
        } else {
            None
        };
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested: finishing running jobs");
            let _ = stop_tx.send(true);
            Ok(())
        };
        monitor.run_with_signal(signal).await.context("worker monitor")?;
        if let Some(s) = scheduler {
            let _ = s.await;
        }
        let _ = relay.await;
        Ok(())
    }
}

/// The handler time limit of a queue (`timeout_ms`, 0 meaning a year: effectively none).
pub fn handler_timeout(s: &QueueConfig) -> Duration {
    if s.timeout_ms == 0 {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        Duration::from_millis(s.timeout_ms)
    }
}
