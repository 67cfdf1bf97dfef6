//! SQL of the merchant API: Idempotency-Key answers, operations, ownership checks and webhook
//! replays (its reads are in [`reads`], its keys in [`keys`]).

pub mod keys;
pub mod reads;

use sqlx::PgPool;

/// What a request with an Idempotency-Key finds.
pub enum Begin {
    Fresh,
    Replay(i32, String),
    InFlight,
    Mismatch,
}

/// Claims `key` for this request, or says what became of the first one with it.
pub async fn begin(
    pool: &PgPool,
    merchant: &str,
    key: &str,
    fingerprint: &[u8],
    in_flight: std::time::Duration,
) -> Result<Begin, sqlx::Error> {
    // Keys are kept 24 h: an older row is gone for every purpose.
    let claimed = sqlx::query(
        "INSERT INTO api_idempotency (merchant_id, idempotency_key, request_sha256) VALUES ($1, $2, $3)
         ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
            SET request_sha256 = EXCLUDED.request_sha256, status_code = NULL, response = NULL, created_at = now()
            WHERE api_idempotency.created_at < now() - interval '24 hours'
               OR (api_idempotency.status_code IS NULL AND api_idempotency.request_sha256 = EXCLUDED.request_sha256
                   AND api_idempotency.created_at < now() - make_interval(secs => $4))",
    )
    .bind(merchant)
    .bind(key)
    .bind(fingerprint)
    .bind(in_flight.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        if fastrand::u8(..) == 0 {
            sqlx::query(
                "DELETE FROM api_idempotency WHERE ctid IN
                   (SELECT ctid FROM api_idempotency WHERE created_at < now() - interval '24 hours' LIMIT 1000)",
            )
            .execute(pool)
            .await?;
        }
        return Ok(Begin::Fresh);
    }
    let (sha, status, body): (Vec<u8>, Option<i32>, Option<String>) = sqlx::query_as(
        "SELECT request_sha256, status_code, response::text FROM api_idempotency
         WHERE merchant_id = $1 AND idempotency_key = $2",
    )
    .bind(merchant)
    .bind(key)
    .fetch_one(pool)
    .await?;
    Ok(if sha != fingerprint {
        Begin::Mismatch
    } else {
        match status {
            Some(s) => Begin::Replay(s, body.unwrap_or_default()),
            None => Begin::InFlight,
        }
    })
}

/// Keeps the answer (`Some`) or frees the key for a retry (`None`).
pub async fn finish(
    pool: &PgPool,
    merchant: &str,
    key: &str,
    answer: Option<(u16, &[u8])>,
) -> Result<(), sqlx::Error> {
    match answer {
        Some((status, body)) => {
            let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
            sqlx::query(
                "UPDATE api_idempotency SET status_code = $3, response = $4 WHERE merchant_id = $1 AND idempotency_key = $2",
            )
            .bind(merchant)
            .bind(key)
            .bind(i32::from(status))
            .bind(json)
            .execute(pool)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM api_idempotency WHERE merchant_id = $1 AND idempotency_key = $2")
                .bind(merchant)
                .bind(key)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// Records the operation of an enqueued command (once per entry); its creation time.
pub async fn record_operation(
    pool: &PgPool,
    merchant: &str,
    key_id: &str,
    entry: &str,
    command: &str,
) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_operations (merchant_id, key_id, entry_id, command) VALUES ($1, $2, $3, $4)
         ON CONFLICT (entry_id) DO UPDATE SET command = EXCLUDED.command RETURNING created_at",
    )
    .bind(merchant)
    .bind(key_id)
    .bind(entry)
    .bind(command)
    .fetch_one(pool)
    .await
}

/// A merchant's operation: its command and creation time.
pub async fn operation(
    pool: &PgPool,
    merchant: &str,
    entry: &str,
) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT command, created_at FROM api_operations WHERE entry_id = $1 AND merchant_id = $2")
        .bind(entry)
        .bind(merchant)
        .fetch_optional(pool)
        .await
}

/// The recorded refusal of a storefront entry, if it was refused: code and reason.
pub async fn refusal(pool: &PgPool, entry: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT code, reason FROM rejected_messages WHERE entry_id = $1")
        .bind(entry)
        .fetch_optional(pool)
        .await
}

/// The storefront order id of one of the merchant's sub-orders.
pub async fn own_sub_order(pool: &PgPool, merchant: &str, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT o.storefront_order_id FROM sub_orders s JOIN orders o ON o.id = s.order_id
         WHERE s.id = $1 AND s.merchant_id = $2",
    )
    .bind(id)
    .bind(merchant)
    .fetch_optional(pool)
    .await
}

/// A case (return or complaint) of the merchant's, by its storefront id.
#[derive(Clone, Copy)]
pub enum Case {
    Return,
    Complaint,
}

/// The merchant of a case, when the case exists.
pub async fn case_merchant(pool: &PgPool, case: Case, id: &str) -> Result<Option<String>, sqlx::Error> {
    let sql = match case {
        Case::Return => "SELECT merchant_id FROM returns WHERE storefront_return_id = $1",
        Case::Complaint => "SELECT merchant_id FROM complaints WHERE storefront_complaint_id = $1",
    };
    sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await
}

/// Why the merchant's endpoint is disabled, when it is.
pub async fn endpoint_disabled(pool: &PgPool, merchant: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(endpoint_disabled_reason, 'disabled') FROM merchants WHERE id = $1 AND endpoint_disabled_at IS NOT NULL",
    )
    .bind(merchant)
    .fetch_optional(pool)
    .await
}

/// A replay of one delivery that has ended: `None` when it is not the merchant's,
/// `Some(false)` when it is still pending, `Some(true)` when it is pending again.
pub async fn replay_one(pool: &PgPool, merchant: &str, id: &str) -> Result<Option<bool>, sqlx::Error> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1 AND merchant_id = $2")
            .bind(id)
            .bind(merchant)
            .fetch_optional(pool)
            .await?;
    match status.as_deref() {
        None => Ok(None),
        Some("pending") => Ok(Some(false)),
        Some(_) => {
            let n = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', replayed_at = now()
                 WHERE id = $1 AND merchant_id = $2 AND status <> 'pending'",
            )
            .bind(id)
            .bind(merchant)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(Some(n == 1))
        }
    }
}

/// Makes up to `limit` of the merchant's failed deliveries created since `since` pending again,
/// oldest first; their ids.
pub async fn replay_failed(
    pool: &PgPool,
    merchant: &str,
    since: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_deliveries SET status = 'pending', replayed_at = now()
         WHERE id IN (SELECT id FROM webhook_deliveries
                      WHERE merchant_id = $1 AND created_at >= $2 AND status IN ('failed', 'endpoint_disabled')
                      ORDER BY created_at LIMIT $3)
         RETURNING id",
    )
    .bind(merchant)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}
