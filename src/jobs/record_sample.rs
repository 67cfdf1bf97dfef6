//! `souk.record_sample.v1`: the sample job that exercises the queue end to end until the order
//! pipeline lands. It records its start and its completion in PostgreSQL, can be told to work
//! for a while and to fail its first attempts, and is safe to run twice (a completion is
//! recorded once per job id).

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
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
pub async fn handle(args: SampleArgs, d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::samples::record(&app, &d, &args.label, args.work_ms, args.fail_first).await
}

/// Adds this job's worker to `monitor`.
pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    let app = app.clone();
    monitor.register(move |_restarts| {
        let s = &ctx.settings;
        WorkerBuilder::new(QUEUE)
            .backend(StreamsBackend::<SampleArgs>::new(ctx.clone()))
            .concurrency(s.concurrency)
            .timeout(crate::app::handler_timeout(s))
            .catch_panic()
            .data(app.clone())
            .build(handle)
    })
}
