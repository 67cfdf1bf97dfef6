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
                    .arg(
                        serde_json::json!({
                            "order_id": e.order_id,
                            "sub_order_id": e.sub_order_id,
                            "actor": e.actor,
                            "reason": e.reason,
                            "data": e.data,
                            "at": e.created_at,
                        })
                        .to_string(),
                    )
                    .ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
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
