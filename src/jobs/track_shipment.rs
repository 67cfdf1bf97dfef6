//! `souk.track_shipment.v1`: follows one shipment to its end. Each run registers the number
//! with the tracking provider (once), reads every checkpoint, stores the new ones (de-duplicated,
//! in carrier-time order), moves the shipment to its latest known status, tells the merchant
//! (a signed webhook per status change) and the storefront (an outcome event), then snoozes
//! until the next poll: often while the parcel moves, seldom while it is quiet, not at all once
//! it is delivered, returned or expired. A provider rate limit snoozes until its reset time;
//! snoozes spend no attempts.

use std::time::Duration;

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{db, notify_merchant, register_job};
use crate::{
    app::App,
    domain::tracking::{
        poll::{next_poll, silence},
        status::{normalise, roll_up, Status},
    },
    integrations::tracking::TrackingError,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::shipments::{self, NewEvent},
};

pub const QUEUE: &str = "souk.track_shipment.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub shipment_id: i64,
    /// A provider push's one-off poll: polls once and ends, leaving the regular schedule (the
    /// shipment's own job) as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hint: bool,
}

fn provider_error(e: TrackingError) -> JobError {
    match e {
        TrackingError::RateLimited(d) => JobError::Snooze(d),
        other => JobError::retry(other),
    }
}

/// The webhook id of a shipment's status change: one per shipment and status.
pub fn delivery_id(shipment_id: i64, status: &str) -> String {
    format!("msg_sh{shipment_id}_{status}")
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

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let Some(s) = shipments::load(&app.pool, args.shipment_id).await.map_err(db)? else {
        return Err(JobError::abort(format!("no shipment {}", args.shipment_id)));
    };
    if Status::parse(&s.status).is_some_and(Status::is_final) {
        return Ok(());
    }
    let provider = app.tracking.clone();
    if s.registered_at.is_none() {
        slot(&app).await?;
        provider
            .register(s.carrier.as_deref(), &s.tracking_number)
            .await
            .map_err(provider_error)?;
        shipments::mark_registered(&app.pool, s.id).await.map_err(db)?;
    }
    slot(&app).await?;
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
    let mut changed_to = Vec::new();
    if outcome.changed {
        changed_to.push(outcome.status.clone());
    }
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
        if outcome.changed {
            changed_to.push(outcome.status.clone());
        }
    }
    for status in changed_to {
        let id = delivery_id(s.id, &status);
        app.push_once(
            notify_merchant::QUEUE,
            &format!("notify:{id}"),
            &notify_merchant::Args { delivery_id: id },
            None,
        )
        .await?;
    }
    if outcome.return_received {
        // The return parcel reached the merchant: the refund goes out.
        app.push_once(
            super::adjust_payment::QUEUE,
            &format!("adjust:{}:return-parcel:{}", s.order_id, s.id),
            &super::adjust_payment::Args::new(s.order_id),
            None,
        )
        .await?;
        notify_merchant::push_pending_for_order(&app, s.order_id).await?;
    }
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

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
