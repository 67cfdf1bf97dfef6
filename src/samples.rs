//! The sample job's work (`souk.record_sample.v1`): records its start and its completion in
//! PostgreSQL, can work for a while and fail its first attempts; a completion is recorded once
//! per job id, so running it twice is safe.

use std::time::Duration;

use crate::{
    app::App,
    queue::{Delivery, JobError},
    store::samples,
};

pub async fn record(
    app: &App,
    d: &Delivery,
    label: &str,
    work_ms: u64,
    fail_first: u32,
) -> Result<(), JobError> {
    samples::record_start(
        &app.pool,
        &d.job_id,
        label,
        d.attempt,
        &crate::queue::process_consumer_name(),
    )
    .await
    .map_err(JobError::retry)?;
    if work_ms > 0 {
        tokio::time::sleep(Duration::from_millis(work_ms)).await;
    }
    if d.attempt <= fail_first {
        return Err(JobError::retry(format!(
            "sample failure {} of {}",
            d.attempt, fail_first
        )));
    }
    samples::record_completion(&app.pool, &d.job_id, label, d.attempt, d.enqueued_at_ms)
        .await
        .map_err(JobError::retry)?;
    Ok(())
}
