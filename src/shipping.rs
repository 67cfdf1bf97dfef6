//! Following a shipment to its end, one poll at a time (the job `souk.track_shipment.v1`):
//! register with the tracking provider once, store new checkpoints, move the shipment's status,
//! write the merchant's webhook rows and outcome events with it, and say when to poll again.
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{
    app::App,
    domain::tracking::{
        poll::{next_poll, silence},
        status::{normalise, roll_up, Status},
    },
    integrations::tracking::TrackingError,
    queue::JobError,
    store::shipments::{self, NewEvent},
};

use crate::enqueue::TrackShipment as Args;

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

fn provider_error(e: TrackingError) -> JobError {
    match e {
        TrackingError::RateLimited(d) => JobError::Snooze(d),
        other => JobError::retry(other),
    }
}

/// The webhook id of a shipment's status change: one per shipment and status.
pub fn delivery_id(shipment_id: i64, status: &str) -> String {
    crate::domain::ids::shipment_webhook_id(shipment_id, status)
}

/// A slot of the provider's fleet-wide rate limit, or a snooze until one frees up.
async fn slot(app: &App) -> Result<(), JobError> {
    let key = format!(
        "{}:ratelimit:tracking:{}",
        app.config.redis.key_prefix, app.config.tracking.provider
    );
    let mut conn = app.conn.clone();
    match crate::queue::limiter::take(&mut conn, &key, app.config.tracking.rate_per_s)
        .await
        .map_err(JobError::retry)?
    {
        Ok(()) => Ok(()),
        Err(wait) => Err(JobError::Snooze(
            wait + Duration::from_millis(fastrand::u64(0..200)),
        )),
    }
}

pub async fn track(app: &App, args: &Args) -> Result<(), JobError> {
    let Some(s) = shipments::load(&app.pool, args.shipment_id.0).await.map_err(db)? else {
        return Err(JobError::abort(format!("no shipment {}", args.shipment_id)));
    };
    if Status::parse(&s.status).is_some_and(Status::is_final) {
        return Ok(());
    }
    let provider = app.tracking.clone();
    if s.registered_at.is_none() {
        slot(app).await?;
        provider
            .register(s.carrier.as_deref(), &s.tracking_number)
            .await
            .map_err(provider_error)?;
        shipments::mark_registered(&app.pool, s.id).await.map_err(db)?;
    }
    slot(app).await?;
    if args.hint {
        crate::enqueue::hint_started(app, crate::domain::ids::ShipmentId(s.id)).await?;
    }
    let checkpoints = provider
        .fetch(s.carrier.as_deref(), &s.tracking_number)
        .await
        .map_err(provider_error)?;
    let kind = provider.kind();
    let events: Vec<NewEvent> = checkpoints
        .into_iter()
        .map(|c| {
            let key = format!(
                "{}|{}|{}|{}|{}",
                c.at.timestamp_millis(),
                c.status,
                c.sub_status.as_deref().unwrap_or(""),
                c.location.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            );
            let digest = Sha256::digest(key.as_bytes());
            NewEvent {
                occurred_at: c.at,
                status: normalise(kind, &c.status, c.sub_status.as_deref()).map(Status::as_str),
                raw_status: c.status,
                raw_sub_status: c.sub_status,
                location: c.location,
                message: c.message,
                dedupe_key: digest.iter().take(16).map(|b| format!("{b:02x}")).collect(),
            }
        })
        .collect();
    let roll = |all: &[String]| {
        let parsed: Vec<Status> = all.iter().filter_map(|x| Status::parse(x)).collect();
        roll_up(&parsed).map(|st| st.as_str().to_owned())
    };
    let mut outcome = shipments::record_poll(&app.pool, &s, &events, roll, delivery_id)
        .await
        .map_err(db)?;
    // Each change stored its webhook delivery with it (record_poll); their jobs are pushed below.
    // Silence is news too: a parcel never scanned expires, one stuck becomes an exception.
    let now = chrono::Utc::now();
    let current = Status::parse(&outcome.status).unwrap_or(Status::Pending);
    let since_created = (now - s.created_at).num_seconds().max(0) as u64;
    let since_event = outcome
        .last_event_at
        .map(|t| (now - t).num_seconds().max(0) as u64);
    if let Some(imposed) = silence(
        current,
        since_created,
        since_event,
        &app.config.tracking.silence_rules(),
    ) {
        let (raw, message) = match imposed {
            Status::Expired => (
                "souk:no_info",
                "no carrier information since the shipment was registered",
            ),
            _ => ("souk:no_news", "no carrier news for too long"),
        };
        let event = NewEvent {
            occurred_at: now,
            status: Some(imposed.as_str()),
            raw_status: raw.to_owned(),
            raw_sub_status: None,
            location: None,
            message: Some(message.to_owned()),
            dedupe_key: format!(
                "{raw}:{}",
                outcome.last_event_at.map_or(0, |t| t.timestamp_millis())
            ),
        };
        outcome = shipments::record_poll(&app.pool, &s, &[event], roll, delivery_id)
            .await
            .map_err(db)?;
    }
    crate::faults::crash_point("track.recorded");
    // What the order's state now needs, derived from it rather than from what this poll
    // changed, so a rerun after a crash here pushes it too: the merchant's webhooks of each
    // status change, and the refund once a return parcel reached the merchant (receipt marks
    // the order's charge due for adjustment).
    crate::enqueue::follow_ups(app, crate::domain::ids::OrderId(s.order_id)).await?;
    if args.hint {
        return Ok(());
    }
    let status = Status::parse(&outcome.status).unwrap_or(Status::Pending);
    let since_event = outcome
        .last_event_at
        .map_or(0, |t| (chrono::Utc::now() - t).num_seconds().max(0) as u64);
    match next_poll(status, since_event, &app.config.tracking.poll_policy()) {
        None => Ok(()),
        Some(secs) => {
            // ±10 % so that shipments registered together do not poll together forever.
            let ms = secs * 1000;
            let jitter = fastrand::u64(0..=ms / 5);
            Err(JobError::Snooze(Duration::from_millis(ms - ms / 10 + jitter)))
        }
    }
}
