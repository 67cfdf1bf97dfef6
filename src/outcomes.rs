//! The outcome stream: what happened to each order, for the storefront to consume.
//!
//! Every state change appends a row to `order_events` in the same transaction as the change
//! (the outbox); this relay copies the events after its cursor whose transactions are final to
//! the Redis stream `<prefix>:outcomes`, then moves the cursor (`outbox_cursor`, migration
//! 0009). A crash between the two publishes events twice, so consumers
//! dedupe on `event_id` (at-least-once, in the order of the transactions that wrote them).

use std::time::Duration;

use tokio::sync::watch;

use crate::{app::App, store::outbox};

/// The stream key of outcome events.
pub fn stream_key(prefix: &str) -> String {
    format!("{prefix}:outcomes")
}

/// An outcome entry's `data` field, `{actor, at, data, order_id, reason, sub_order_id}`, with
/// the event's own data copied in as the JSON text the database returned (a `RawValue`).
/// Parsing that text into a tree only to write it out again was most of the relay's cost,
/// itself ~3 % of the machine's CPU in a burst (ten events per order).
#[derive(serde::Serialize)]
struct Envelope<'a> {
    actor: &'a str,
    at: chrono::DateTime<chrono::Utc>,
    data: &'a serde_json::value::RawValue,
    order_id: Option<i64>,
    reason: Option<&'a str>,
    sub_order_id: Option<i64>,
}

/// The envelope of `e` as JSON text. It fails only if `data` is not JSON, which PostgreSQL's
/// own output of a jsonb column always is.
fn envelope(e: &outbox::OutboxEvent) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Envelope {
        actor: &e.actor,
        at: e.created_at,
        data: serde_json::from_str(&e.data)?,
        order_id: e.order_id,
        reason: e.reason.as_deref(),
        sub_order_id: e.sub_order_id,
    })
}

/// Relays until `stop` turns true: at once again after a full batch, else every 100 ms.
pub async fn relay_loop(app: App, mut stop: watch::Receiver<bool>) {
    let key = stream_key(&app.config.redis.key_prefix);
    let maxlen = app.config.marketplace.outcome_stream_maxlen;
    loop {
        let mut conn = app.conn.clone();
        let key = key.clone();
        let res = outbox::relay(&app.pool, "outcomes", 500, |events| async move {
            let mut pipe = redis::pipe();
            for e in &events {
                let data = envelope(e)?;
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(maxlen)
                    .arg("*")
                    .arg("event_id")
                    .arg(e.id)
                    .arg("type")
                    .arg(&e.r#type)
                    .arg("storefront_order_id")
                    .arg(e.storefront_order_id.as_deref().unwrap_or(""))
                    .arg("data")
                    .arg(data)
                    .ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
            conn.replicated(&key).await?;
            Ok(())
        })
        .await;
        let wait = match res {
            Ok(500) => Duration::ZERO,
            Ok(_) => Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "outcome relay failed; retrying");
                Duration::from_secs(1)
            }
        };
        if *stop.borrow() {
            // One last pass above published what the final jobs recorded.
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope is the JSON the relay used to build as a tree, for awkward text too.
    #[test]
    fn the_envelope_is_the_json_of_the_event() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:34:56.789012Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        for (order_id, sub_order_id, reason, data) in [
            (Some(7), None, None, r#"{}"#),
            (
                Some(-1),
                Some(9_007_199_254_740_993),
                Some("line 1\n\"quoted\" \\ ünï \u{1}"),
                r#"{"b": [1, 2.5, null], "a": {"x": "y\"z"}}"#,
            ),
            (None, None, Some(""), r#"[]"#),
        ] {
            let e = outbox::OutboxEvent {
                id: 1,
                order_id,
                sub_order_id,
                storefront_order_id: None,
                r#type: "order.paid".into(),
                actor: "souk \"payments\"".into(),
                reason: reason.map(str::to_owned),
                data: data.to_owned(),
                created_at: at,
                xid: "1".into(),
            };
            let got: serde_json::Value = serde_json::from_str(&envelope(&e).unwrap()).unwrap();
            let want = serde_json::json!({
                "order_id": order_id,
                "sub_order_id": sub_order_id,
                "actor": e.actor,
                "reason": reason,
                "data": serde_json::from_str::<serde_json::Value>(data).unwrap(),
                "at": at,
            });
            assert_eq!(got, want);
        }
    }
}
