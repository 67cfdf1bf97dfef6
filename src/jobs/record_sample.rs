//! `souk.record_sample.v1`: the sample job that exercises the queue end to end until the order
//! pipeline lands. It records its start and its completion in PostgreSQL, can be told to work
//! for a while and to fail its first attempts, and is safe to run twice (a completion is
//! recorded once per job id).

use std::time::Duration;

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::samples,
};

/// The stable queue name.
pub const QUEUE: &str = "souk.record_sample.v1";

/// Arguments (the `payload` JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SampleArgs {
    /// Free text to group runs by.
    pub label: String,
    /// Milliseconds of pretend work.
    #[serde(default)]
    pub work_ms: u64,
    /// Fail this many attempts before succeeding (to show retries).
    #[serde(default)]
    pub fail_first: u32,
}

/// The handler.
pub async fn handle(args: SampleArgs, d: Data<Delivery>, pool: Data<PgPool>) -> Result<(), JobError> {
    samples::record_start(
        &pool,
        &d.job_id,
        &args.label,
        d.attempt,
        &crate::queue::process_consumer_name(),
    )
    .await
    .map_err(JobError::retry)?;
    if args.work_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.work_ms)).await;
    }
    if d.attempt <= args.fail_first {
        return Err(JobError::retry(format!(
            "sample failure {} of {}",
            d.attempt, args.fail_first
        )));
    }
    samples::record_completion(&pool, &d.job_id, &args.label, d.attempt, d.enqueued_at_ms)
        .await
        .map_err(JobError::retry)?;
    Ok(())
}

/// Adds this job's worker to `monitor`.
pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    let pool = app.pool.clone();
    monitor.register(move |_restarts| {
        let s = &ctx.settings;
        WorkerBuilder::new(QUEUE)
            .backend(StreamsBackend::<SampleArgs>::new(ctx.clone()))
            .concurrency(s.concurrency)
            .timeout(crate::app::handler_timeout(s))
            .catch_panic()
            .data(pool.clone())
            .build(handle)
    })
}
