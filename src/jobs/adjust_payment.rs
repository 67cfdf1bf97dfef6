//! `souk.adjust_payment.v1`: makes the charge match what will ship, then hands reserved
//! sub-orders to their merchants.
//!
//! Runs once every sub-order has its stock decision, and again whenever a sub-order stops
//! shipping (merchant rejection, deadline, cancellation) or returned goods are received back.
//! Each run asks the provider for the payment's current state and makes at most one call
//! (capture, cancel or refund) decided by `domain::payment::reconcile`, whose idempotency keys
//! make a rerun repeat the same call. The first run, which `confirm_payment` makes itself
//! ([`run_now`]; this queue's job only when it cannot), skips the question: that job has just
//! read the authorisation and passes its amount (`authorised_minor`), so a freshly authorised
//! order is captured at once; a refusal sends the run back to the provider's state. Runs for
//! one order take turns (a fleet-wide lock in Redis), so two of them never refund the same
//! excess twice; a run that finds the lock taken snoozes briefly. Once the charge matches,
//! received returns are marked refunded.

use std::time::Duration;

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    confirm_payment::provider_error, db, expire_acceptance, intake_storefront, notify_merchant, register_job,
    reverse_payout,
};
use crate::{
    app::App,
    domain::payment::{reconcile, IntentStatus, PaymentAction, ProviderView},
    integrations::payment::ProviderError,
    queue::{backend::QueueContext, limiter, Delivery, JobError, StreamsBackend},
    store::{
        after_sales, orders,
        pipeline::{Capture, HandOver},
    },
};

pub const QUEUE: &str = "souk.adjust_payment.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub order_id: i64,
    /// The amount `confirm_payment` has just seen authorised and waiting for capture. With it,
    /// a run that finds the order freshly authorised (nothing captured or refunded recorded)
    /// captures at once instead of first asking the provider; if the provider refuses that
    /// call, the run reads the payment's state and decides from it as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorised_minor: Option<i64>,
}

impl Args {
    /// A run that reads the provider's state first.
    pub fn new(order_id: i64) -> Self {
        Self {
            order_id,
            authorised_minor: None,
        }
    }
}

fn status_name(s: crate::domain::payment::IntentStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    match run_now(&app, &args).await? {
        Some(result) => result,
        None => Err(JobError::Snooze(Duration::from_millis(
            100 + fastrand::u64(0..400),
        ))),
    }
}

/// Takes the order's fleet-wide lock and runs the adjustment of `args` under it, as this
/// queue's job does; `confirm_payment` calls it for a freshly authorised order, which saves the
/// order a trip through this queue. `Ok(None)` when another run holds the lock, `Err` only
/// when Redis could not be asked.
pub async fn run_now(app: &App, args: &Args) -> Result<Option<Result<(), JobError>>, JobError> {
    let key = format!("{}:lock:payment:{}", app.config.redis.key_prefix, args.order_id);
    // The lease outlives a run cut off by the queue's timeout only briefly.
    let lease = crate::app::handler_timeout(&app.config.queue(QUEUE))
        .clamp(Duration::from_secs(30), Duration::from_secs(600));
    let mut conn = app.conn.clone();
    let Some(token) = limiter::try_lock(&mut conn, &key, lease)
        .await
        .map_err(JobError::retry)?
    else {
        return Ok(None);
    };
    let result = adjust(app, args.order_id, args.authorised_minor).await;
    // A lock left behind (Redis unreachable now) frees itself when its lease ends.
    let _ = limiter::unlock(&mut conn, &key, &token).await;
    Ok(Some(result))
}

async fn adjust(app: &App, order_id: i64, authorised_minor: Option<i64>) -> Result<(), JobError> {
    let Some((order, target)) = app.batches.target.call(order_id).await.map_err(db)? else {
        return Err(JobError::abort(format!("order {order_id} does not exist")));
    };
    if order.status == "received" {
        // Not authorised yet: confirm_payment decides first.
        return Ok(());
    }
    let Some((shipping, returned)) = target else {
        return Ok(()); // a sub-order still waits for stock; its reservation will call again
    };
    let target = shipping - returned;
    // The view the decision starts from: for a freshly authorised order, the authorisation
    // confirm_payment has just seen (no need to read it again); otherwise the provider's
    // state now. Only a capture goes out on that first view. Its idempotency key names the
    // amount, so if an earlier run made this capture the provider answers it again; any other
    // refusal (the payment moved on meanwhile) sends the run to the provider's state.
    let fresh = order.status == "authorised" && order.captured_minor == 0 && order.refunded_minor == 0;
    let mut first = authorised_minor.filter(|_| fresh).map(|amount| ProviderView {
        status: IntentStatus::RequiresCapture,
        amount,
        amount_received: 0,
        amount_refunded: 0,
    });
    // A capture is recorded with the hand-over below (one transaction for both): a capture
    // means a positive target, so something ships and the hand-over is reached.
    let mut capture = None;
    let (view, action) = loop {
        let guessed = first.is_some();
        let view = match first.take() {
            Some(view) => view,
            None => app
                .payments
                .retrieve(&order.payment_id)
                .await
                .map_err(provider_error)?,
        };
        let action = reconcile(&order.storefront_order_id, target, &view);
        let PaymentAction::Capture {
            amount,
            idempotency_key,
        } = &action
        else {
            if guessed {
                continue;
            }
            break (view, action);
        };
        match app
            .payments
            .capture(&order.payment_id, *amount, idempotency_key)
            .await
        {
            Ok(after) => {
                capture = Some(Capture {
                    idempotency_key: idempotency_key.clone(),
                    amount_minor: *amount,
                    captured_minor: after.amount_received,
                    refunded_minor: after.amount_refunded,
                    payment_status: status_name(after.status),
                    data: json!({"amount_minor": amount, "authorised_minor": view.amount}),
                });
                break (view, action);
            }
            Err(ProviderError::Refused(why)) if guessed => {
                tracing::info!(order_id, %why, "capture refused; deciding from the payment's state");
            }
            Err(e) => return Err(provider_error(e)),
        }
    };
    match &action {
        // Made above.
        PaymentAction::Capture { .. } => {}
        PaymentAction::None => {
            // The provider's amounts are already right. If the order's record disagrees, an
            // earlier run's call succeeded and it stopped before recording it: record it now
            // (without this the order would show nothing captured, for good).
            if order.captured_minor != view.amount_received || order.refunded_minor != view.amount_refunded {
                let event = if view.amount_received > order.captured_minor && order.captured_minor == 0 {
                    Some((
                        "order.captured",
                        json!({"amount_minor": view.amount_received, "authorised_minor": view.amount, "recovered": true}),
                    ))
                } else if view.amount_refunded > order.refunded_minor {
                    Some((
                        "order.refunded",
                        json!({"amount_minor": view.amount_refunded - order.refunded_minor, "recovered": true}),
                    ))
                } else {
                    None
                };
                orders::record_payment(
                    &app.pool,
                    order.id,
                    "sync",
                    None,
                    None,
                    "ok",
                    view.amount_received,
                    view.amount_refunded,
                    &status_name(view.status),
                    event,
                )
                .await
                .map_err(db)?;
            }
        }
        PaymentAction::Cancel { idempotency_key } => {
            let after = app
                .payments
                .cancel(&order.payment_id, idempotency_key)
                .await
                .map_err(provider_error)?;
            orders::record_payment(
                &app.pool,
                order.id,
                "cancel",
                Some(idempotency_key),
                None,
                "ok",
                0,
                0,
                &status_name(after.status),
                Some(("order.payment_released", json!({"authorised_minor": view.amount}))),
            )
            .await
            .map_err(db)?;
        }
        PaymentAction::Refund {
            amount,
            idempotency_key,
        } => {
            app.payments
                .refund(&order.payment_id, *amount, idempotency_key)
                .await
                .map_err(provider_error)?;
            orders::record_payment(
                &app.pool,
                order.id,
                "refund",
                Some(idempotency_key),
                Some(*amount),
                "ok",
                view.amount_received,
                view.amount_refunded + amount,
                &status_name(view.status),
                Some(("order.refunded", json!({"amount_minor": amount}))),
            )
            .await
            .map_err(db)?;
        }
    }
    if view.status == IntentStatus::Succeeded {
        // The charge now matches what is kept: received returns are refunded.
        for return_id in after_sales::mark_refunded(&app.pool, order.id)
            .await
            .map_err(db)?
        {
            app.push_once(
                reverse_payout::QUEUE,
                &format!("reverse:{return_id}"),
                &reverse_payout::Args { return_id },
                None,
            )
            .await?;
        }
    }
    if shipping == 0 {
        if order.status != "cancelled" {
            intake_storefront::cancel(
                app,
                order.id,
                "souk:stock",
                "nothing in the order could be reserved",
            )
            .await?;
        }
        return Ok(());
    }
    // The capture recorded, `authorised` → `captured`, and the reserved sub-orders to their
    // merchants, in one batch.
    hand_to_merchants(app, order.id, target, capture).await
}

/// Moves the order on and its reserved sub-orders to their merchants (webhook + deadline),
/// idempotently.
async fn hand_to_merchants(
    app: &App,
    order_id: i64,
    charged_minor: i64,
    capture: Option<Capture>,
) -> Result<(), JobError> {
    let req = HandOver {
        order_id,
        charged_minor,
        capture,
    };
    let next = app.batches.hand_over.call(req).await.map_err(db)?;
    // Push (idempotently) what handing over needs, also for sub-orders an earlier run handed:
    // each queue's jobs in one call.
    let deadlines: Vec<_> = next
        .awaiting
        .into_iter()
        .map(|(sub, at)| {
            (
                format!("expire:{sub}"),
                expire_acceptance::Args { sub_order_id: sub },
                Some(at.timestamp_millis()),
            )
        })
        .collect();
    app.push_once_many(expire_acceptance::QUEUE, &deadlines).await?;
    notify_merchant::push_many(app, next.pending_deliveries).await
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
