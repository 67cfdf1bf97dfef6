//! One signed Standard Webhooks delivery to one merchant (the job `souk.notify_merchant.v1`):
//! the merchant's in-flight slot, the signed request, and what its answer means (delivered,
//! retry on `webhooks.schedule_s`, endpoint disabled, given up).
use std::sync::LazyLock;

use redis::Script;
use serde::Serialize;

use crate::queue::slot_waits::{SLOT_POLL, SLOT_WAIT};
use crate::{
    app::App,
    domain::webhook::{next_delay, sign},
    queue::{Delivery, JobError},
    store::deliveries,
};

use crate::enqueue::NotifyMerchant as Args;

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

/// The webhook id of an event about a sub-order: stable, so recreating it finds the same row.
pub fn delivery_id(sub_order_id: i64, event_type: &str) -> String {
    crate::domain::ids::sub_order_webhook_id(sub_order_id, event_type)
}

/// Takes one of the merchant's slots for delivery `member`, waiting for one (see [`SlotWaits`]);
/// false when none came in time, or too many jobs of this process already wait.
async fn take_slot(app: &App, slots: &str, member: &str) -> Result<bool, JobError> {
    let cfg = &app.config.webhooks;
    let mut conn = app.conn.clone();
    let mut try_take = async || -> Result<bool, JobError> {
        let now = chrono::Utc::now().timestamp_millis();
        let took: i64 = TAKE_SLOT
            .key(slots)
            .arg(now)
            .arg(now + cfg.timeout_ms as i64 + 5_000)
            .arg(cfg.max_in_flight_per_merchant)
            .arg(member)
            .invoke_async(&mut conn)
            .await
            .map_err(JobError::retry)?;
        Ok(took == 1)
    };
    if try_take().await? {
        return Ok(true);
    }
    let Some(place) = app
        .slot_waits
        .join(slots, cfg.max_in_flight_per_merchant as usize)
    else {
        return Ok(false);
    };
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let _ = tokio::time::timeout(left.min(SLOT_POLL), place.0.freed.notified()).await;
        if try_take().await? {
            return Ok(true);
        }
    }
}

/// Takes a slot of the merchant's fleet-wide in-flight limit; slots expire on their own, so a
/// crashed worker's slot comes back. KEYS: slots. ARGV: now_ms, expires_ms, max, member.
static TAKE_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 3600000)
  return 1
end
return 0
"#,
    )
});

/// A webhook's body, `{data, timestamp, type}` (Standard Webhooks), with the event's data
/// copied in as the JSON text the database returned (a `RawValue`) rather than parsed into a
/// tree and written out again. It fails only if `data` is not JSON, which PostgreSQL's own
/// output of a jsonb column always is.
fn webhook_body(
    event_type: &str,
    created_at: chrono::DateTime<chrono::Utc>,
    data: &str,
) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Body<'a> {
        data: &'a serde_json::value::RawValue,
        timestamp: String,
        r#type: &'a str,
    }
    serde_json::to_string(&Body {
        data: serde_json::from_str(data)?,
        timestamp: created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        r#type: event_type,
    })
}

/// A webhook's body in the merchant's version: 1 as [`webhook_body`]; 2 with `version` in the
/// body and one flat `data` (the fields version 1 nests in `data.details` lifted beside the
/// others), the shape docs/schema/webhooks/v2/ describes per event type.
fn versioned_body(
    version: i16,
    event_type: &str,
    created_at: chrono::DateTime<chrono::Utc>,
    data: &str,
) -> Result<String, serde_json::Error> {
    if version < 2 {
        return webhook_body(event_type, created_at, data);
    }
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    // One level of `data` and of `details` is enough: every value below is copied as the
    // text it is, not parsed into a tree and written again (two deliveries an order).
    let mut flat: BTreeMap<String, &RawValue> = serde_json::from_str(data)?;
    if let Some(details) = flat.remove("details") {
        if let Ok(details) = serde_json::from_str::<BTreeMap<String, &RawValue>>(details.get()) {
            for (k, v) in details {
                flat.entry(k).or_insert(v);
            }
        }
    }
    // Keys in the order a JSON object of serde_json writes them (sorted), as before.
    #[derive(Serialize)]
    struct Body<'a> {
        data: BTreeMap<String, &'a RawValue>,
        timestamp: String,
        r#type: &'a str,
        version: u8,
    }
    serde_json::to_string(&Body {
        data: flat,
        timestamp: created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        r#type: event_type,
        version: 2,
    })
}

pub async fn deliver(app: &App, args: &Args, d: &Delivery) -> Result<(), JobError> {
    let Some(row) = app
        .batches
        .deliveries
        .call(args.delivery_id.clone())
        .await
        .map_err(db)?
    else {
        return Err(JobError::abort(format!(
            "no webhook delivery {}",
            args.delivery_id
        )));
    };
    if row.status != "pending" {
        return Ok(());
    }
    if row.endpoint_disabled_at.is_some() {
        deliveries::mark_given_up(
            &app.pool,
            &row,
            "endpoint_disabled",
            "the merchant's endpoint is disabled",
        )
        .await
        .map_err(db)?;
        return Ok(());
    }
    let cfg = &app.config.webhooks;
    let slots = format!(
        "{}:webhook-slots:{}",
        app.config.redis.key_prefix, row.merchant_id
    );
    let mut conn = app.conn.clone();
    // Signed before a slot is taken, so a job that fails here holds none (the timestamp is at
    // most the slot wait, 1 s, older than the send; receivers allow minutes).
    let body = versioned_body(row.webhook_version, &row.event_type, row.created_at, &row.payload)
        .map_err(|e| JobError::abort(format!("webhook payload of {}: {e}", row.id)))?;
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(&row.signing_secrets, &row.id, ts, &body).map_err(JobError::abort)?;
    if !take_slot(app, &slots, &row.id).await? {
        return Err(JobError::Snooze(app.slot_waits.snooze_for(&slots)));
    }
    let result = app
        .webhooks
        .send(&row.webhook_url, &row.id, ts, &signature, body)
        .await;
    let _: redis::RedisResult<i64> = redis::cmd("ZREM")
        .arg(&slots)
        .arg(&row.id)
        .query_async(&mut conn)
        .await;
    app.slot_waits.freed(&slots, result.latency);
    if let (true, Some(status)) = (result.is_success(), result.status) {
        // The common case goes through the group commit: attempt, delivered and event at once.
        let d = crate::store::pipeline::Delivered {
            delivery_id: row.id.clone(),
            merchant_id: row.merchant_id.clone(),
            status,
            latency_ms: result.latency.as_millis() as i64,
            excerpt: result.response_excerpt.clone(),
        };
        app.batches.delivered.call(d).await.map_err(db)?;
        return Ok(());
    }
    deliveries::record_attempt(
        &app.pool,
        &row.id,
        result.status,
        result.latency.as_millis() as i64,
        result.error.as_deref(),
        result.response_excerpt.as_deref(),
    )
    .await
    .map_err(db)?;
    if result.is_success() {
        deliveries::mark_delivered(&app.pool, &row).await.map_err(db)?;
        return Ok(());
    }
    let what = match (result.status, &result.error) {
        (Some(s), _) => format!("merchant endpoint answered {s}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "no answer".to_owned(),
    };
    if result.status == Some(410) {
        deliveries::disable_endpoint(&app.pool, &row.merchant_id, "410 Gone")
            .await
            .map_err(db)?;
        deliveries::mark_given_up(
            &app.pool,
            &row,
            "endpoint_disabled",
            "410 Gone: endpoint disabled",
        )
        .await
        .map_err(db)?;
        return Ok(());
    }
    let since = deliveries::note_failure(&app.pool, &row.merchant_id)
        .await
        .map_err(db)?;
    if chrono::Utc::now() - since > chrono::Duration::hours(cfg.disable_after_hours as i64) {
        let why = format!("failing since {since}");
        deliveries::disable_endpoint(&app.pool, &row.merchant_id, &why)
            .await
            .map_err(db)?;
        deliveries::mark_given_up(&app.pool, &row, "endpoint_disabled", &why)
            .await
            .map_err(db)?;
        return Ok(());
    }
    match next_delay(&cfg.schedule_s, d.attempt, result.retry_after) {
        Some(delay) => Err(JobError::retry_after(delay, what)),
        None => {
            let why = format!("gave up after {} attempts: {what}", d.attempt);
            deliveries::mark_given_up(&app.pool, &row, "failed", &why)
                .await
                .map_err(db)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The body is the Standard Webhooks payload, for awkward text too.
    #[test]
    fn the_webhook_body_is_type_timestamp_and_data() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:34:56.789012Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let data = r#"{"sub_order_id": 12, "lines": [{"sku": "a\"b", "qty": 2}], "note": "ü\n"}"#;
        let body = webhook_body("sub_order.\"created\"", at, data).unwrap();
        let got: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            got,
            json!({
                "type": "sub_order.\"created\"",
                "timestamp": "2026-11-30T12:34:56.789Z",
                "data": serde_json::from_str::<serde_json::Value>(data).unwrap(),
            })
        );
    }

    /// Version 2 lifts `details` into `data` and says its version; version 1 is unchanged.
    #[test]
    fn version_2_has_one_flat_data() {
        let at = chrono::Utc::now();
        let data = r#"{"sub_order_id": 3, "merchant_id": "m", "details": {"reason": "r", "code": "c"}}"#;
        let v1: serde_json::Value =
            serde_json::from_str(&versioned_body(1, "sub_order.cancelled", at, data).unwrap()).unwrap();
        assert_eq!(v1["data"]["details"]["code"], "c");
        assert!(v1.get("version").is_none());
        let v2: serde_json::Value =
            serde_json::from_str(&versioned_body(2, "sub_order.cancelled", at, data).unwrap()).unwrap();
        assert_eq!(v2["version"], 2);
        assert_eq!(
            v2["data"],
            json!({"sub_order_id": 3, "merchant_id": "m", "reason": "r", "code": "c"})
        );
    }

    /// Version 2 copies values below the top level as text; read back, each body is the one a
    /// full parse and rewrite of `data` gives: a field of `data` wins over the same one in
    /// `details`, `details` that is not an object goes, and nested values, escapes and numbers
    /// are kept.
    #[test]
    fn version_2_bodies_read_back_as_a_full_rewrite_of_data() {
        let at = chrono::Utc::now();
        let rewrite = |data: &str| -> serde_json::Value {
            let mut flat: serde_json::Map<String, serde_json::Value> = serde_json::from_str(data).unwrap();
            if let Some(serde_json::Value::Object(details)) = flat.remove("details") {
                for (k, v) in details {
                    flat.entry(k).or_insert(v);
                }
            }
            flat.into()
        };
        for data in [
            r#"{"sub_order_id": 3, "details": {"reason": "r", "sub_order_id": 9}}"#,
            r#"{"lines": [{"sku": "a\"b", "quantity": 2}], "note": "\u00fc\n", "total_minor": 12345678901234}"#,
            r#"{"sub_order_id": 4, "details": "not an object"}"#,
            r#"{"details": {"carrier": {"name": "DHL", "codes": [1, 2.5]}}, "merchant_id": "m"}"#,
        ] {
            let body = versioned_body(2, "x.y", at, data).unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["data"], rewrite(data), "{data}");
            assert_eq!(
                (v["type"].as_str(), v["version"].as_i64()),
                (Some("x.y"), Some(2))
            );
            assert!(body.starts_with(r#"{"data":"#), "keys sorted as before: {body}");
        }
    }
}
