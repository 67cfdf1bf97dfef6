//! Cron: scheduled pushes that fire exactly once per tick across the whole fleet.
//!
//! Every process that runs the scheduler computes the same ticks; firing a tick is one Lua
//! script that pushes only when the tick is later than the last tick fired (kept in Redis
//! beside the target queue), so however many processes race for a tick, one push happens. A
//! tick missed while no process ran fires once at start-up when catch-up is on. The scheduler
//! only pushes: the job itself runs on the queue like any other, with its retries.

use std::{str::FromStr, time::Duration};

use crate::queue::conn::Conn;
use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::watch;

use super::{keys::QueueKeys, now_ms, producer, scripts};
use crate::config::CronConfig;

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct CronJob {
    pub name: String,
    pub schedule: cron::Schedule,
    pub queue: String,
    pub payload: String,
    pub catch_up: bool,
}

impl CronJob {
    /// The jobs of a (validated) cron configuration.
    pub fn from_config(cfg: &CronConfig) -> Vec<CronJob> {
        cfg.jobs
            .iter()
            .filter_map(|(name, j)| {
                Some(CronJob {
                    name: name.clone(),
                    schedule: cron::Schedule::from_str(&j.schedule).ok()?,
                    queue: j.queue.clone(),
                    payload: j.payload.clone(),
                    catch_up: j.catch_up.unwrap_or(cfg.catch_up),
                })
            })
            .collect()
    }
}

/// The latest tick after `last` and not after `now`: the one a catch-up fires.
pub fn missed_tick(
    schedule: &cron::Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.after(&last).take_while(|t| *t <= now).last()
}

/// Fires `tick` for `job` unless it (or a later tick) was fired already. True if fired here.
pub async fn fire(
    conn: &mut Conn,
    prefix: &str,
    job: &CronJob,
    tick: DateTime<Utc>,
) -> redis::RedisResult<bool> {
    let keys = QueueKeys::new(prefix, &job.queue);
    let tick_ms = tick.timestamp_millis();
    let fired: i64 = scripts::CRON_FIRE
        .key(keys.cron_last(&job.name))
        .key(&keys.stream)
        .arg(tick_ms)
        .arg(&job.payload)
        .arg(format!("cron:{}:{}", job.name, tick_ms))
        .arg(now_ms())
        .invoke_async(conn)
        .await?;
    Ok(fired == 1)
}

/// Runs the schedule of every job until `stop` turns true.
pub async fn run_scheduler(conn: Conn, prefix: String, jobs: Vec<CronJob>, stop: watch::Receiver<bool>) {
    let mut tasks = Vec::new();
    for job in jobs {
        tasks.push(tokio::spawn(run_job(
            conn.clone(),
            prefix.clone(),
            job,
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn run_job(mut conn: Conn, prefix: String, job: CronJob, mut stop: watch::Receiver<bool>) {
    let keys = QueueKeys::new(&prefix, &job.queue);
    while let Err(e) = producer::declare(&mut conn, &prefix, &job.queue).await {
        tracing::warn!(cron = %job.name, error = %e, "cannot reach redis; retrying");
        tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stop.changed() => return }
    }
    if job.catch_up {
        let last: redis::RedisResult<Option<i64>> = redis::cmd("GET")
            .arg(keys.cron_last(&job.name))
            .query_async(&mut conn)
            .await;
        if let Ok(Some(last_ms)) = last {
            if let Some(last) = Utc.timestamp_millis_opt(last_ms).single() {
                if let Some(tick) = missed_tick(&job.schedule, last, Utc::now()) {
                    match fire(&mut conn, &prefix, &job, tick).await {
                        Ok(true) => tracing::info!(cron = %job.name, tick = %tick, "fired a missed tick"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(cron = %job.name, error = %e, "catch-up failed"),
                    }
                }
            }
        }
    }
    loop {
        let Some(next) = job.schedule.upcoming(Utc).next() else {
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // A tick is retried for a while if Redis is down, then left to catch-up.
        for attempt in 0..30u32 {
            match fire(&mut conn, &prefix, &job, next).await {
                Ok(true) => {
                    tracing::info!(cron = %job.name, queue = %job.queue, tick = %next, "cron fired");
                    break;
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(cron = %job.name, error = %e, attempt, "cron tick failed; retrying");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_millis(200)) => {}, _ = stop.changed() => return }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_fires_only_the_latest_missed_tick() {
        let s = cron::Schedule::from_str("0 0 * * * *").unwrap(); // hourly
        let last = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 7, 30, 0).unwrap();
        assert_eq!(
            missed_tick(&s, last, now),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 7, 0, 0).unwrap())
        );
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 3, 59, 0).unwrap();
        assert_eq!(missed_tick(&s, last, now), None);
    }
}
