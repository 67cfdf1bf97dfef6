//! SQL of the sample job (`souk.record_sample.v1`).

use sqlx::PgPool;

/// Records that a handler started a job.
pub async fn record_start(
    pool: &PgPool,
    job_id: &str,
    label: &str,
    attempt: u32,
    consumer: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO sample_starts (job_id, label, attempt, consumer) VALUES ($1, $2, $3, $4)")
        .bind(job_id)
        .bind(label)
        .bind(attempt as i32)
        .bind(consumer)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a completion once per job id; returns false when it was already recorded.
pub async fn record_completion(
    pool: &PgPool,
    job_id: &str,
    label: &str,
    attempts: u32,
    enqueued_at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO sample_completions (job_id, label, attempts, enqueued_at)
         VALUES ($1, $2, $3, to_timestamp($4::double precision / 1000))
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(job_id)
    .bind(label)
    .bind(attempts as i32)
    .bind(enqueued_at_ms as f64)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Completions per label.
pub async fn completions(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT label, count(*) FROM sample_completions GROUP BY label ORDER BY label")
        .fetch_all(pool)
        .await
}

/// Starts per job id for the jobs whose label matches.
pub async fn starts_by_job(pool: &PgPool, label: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, count(*) FROM sample_starts WHERE label = $1 GROUP BY job_id ORDER BY job_id",
    )
    .bind(label)
    .fetch_all(pool)
    .await
}

/// Number of completions whose label matches.
pub async fn completion_count(pool: &PgPool, label: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM sample_completions WHERE label = $1")
        .bind(label)
        .fetch_one(pool)
        .await
}
