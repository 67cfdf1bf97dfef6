//! The payment service: makes an order's charge match what will ship, then hands reserved
//! sub-orders to their merchants.
//!
//! Runs once every sub-order has its stock decision, and again whenever a sub-order stops
//! shipping (merchant rejection, deadline, cancellation) or returned goods are received back:
//! those mark the order's charge due for adjustment in their own transaction
//! (`orders.adjust_due_at`), and a run that brings the charge in line clears the mark it read.
//! Each run asks the provider for the payment's current state and makes at most one call
//! (capture, cancel or refund) decided by `domain::payment::reconcile`, whose idempotency keys
//! make a rerun repeat the same call. The first run, which `confirm_payment` makes itself
//! ([`run_now`]; the `adjust_payment` job only when it cannot), skips the question: that job
//! has just read the authorisation and passes its amount (`authorised_minor`), so a freshly
//! authorised order is captured at once; a refusal sends the run back to the provider's state.
//!
//! Runs for one order take turns (a fleet-wide lock in Redis), so two of them never refund the
//! same excess twice. The lock's lease is the queue's reclaim bound (`claim_idle_ms`) and the
//! holder renews it while it runs, as the queue renews its entries: a crashed holder's lock is
//! free within that bound, not after the handler timeout. A holder that fails to renew (its
//! lease ran out: paused, cut off from Redis) stops before it records anything more, and the
//! lock's token fences what it writes: a payment record carries the token and is refused in
//! the database when a newer holder has written the order since (`orders.payment_fence`).

use std::time::Duration;

use serde_json::json;

use crate::{
    app::App,
    domain::ids::{OrderId, ReturnId, SubOrderId},
    domain::{
        payment::{reconcile, IntentStatus, PaymentAction, ProviderView},
        status::{nothing_ships, OrderStatus},
    },
    enqueue::{self, AdjustPayment},
    faults::crash_point,
    integrations::payment::ProviderError,
    queue::{limiter, JobError},
    store::{
        after_sales, follow_ups, orders,
        pipeline::{Capture, HandOver},
    },
};

fn db(e: sqlx::Error) -> JobError {
    JobError::retry(e)
}

/// Maps a provider failure to the job outcome.
pub fn provider_error(e: ProviderError) -> JobError {
    match e {
        ProviderError::RateLimited(d) => JobError::retry_after(d, "payment provider rate limit"),
        other => JobError::retry(other),
    }
}

fn status_name(s: crate::domain::payment::IntentStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The Redis key of an order's payment lock.
pub fn lock_key(prefix: &str, order_id: i64) -> String {
    format!("{prefix}:lock:payment:{order_id}")
}

/// Takes the order's fleet-wide lock and runs the adjustment of `args` under it, as the
/// `adjust_payment` job does; `confirm_payment` calls it for a freshly authorised order, which
/// saves the order a trip through that queue. `Ok(None)` when another run holds the lock, `Err`
/// only when Redis could not be asked.
pub async fn run_now(app: &App, args: &AdjustPayment) -> Result<Option<Result<(), JobError>>, JobError> {
    let key = lock_key(&app.config.redis.key_prefix, args.order_id.0);
    // The lease is the queue's reclaim bound: a crashed holder's lock is free again as soon as
    // its queue entry would be taken over (15 s by default, not the 5-minute handler timeout),
    // and the holder renews it at a third of that while it runs.
    let lease = app.config.queue(enqueue::ADJUST_PAYMENT).claim_idle();
    let mut conn = app.conn.clone();
    let Some(fence) = limiter::try_lock_fenced(&mut conn, &key, lease)
        .await
        .map_err(JobError::retry)?
    else {
        return Ok(None);
    };
    let token = fence.to_string();
    crash_point("adjust.locked");
    let renewal = async {
        let mut conn = app.conn.clone();
        let mut held_until = tokio::time::Instant::now() + lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            match limiter::renew(&mut conn, &key, &token, lease).await {
                Ok(true) => held_until = tokio::time::Instant::now() + lease,
                Ok(false) => return JobError::retry("the payment lock's lease ran out"),
                Err(e) if tokio::time::Instant::now() >= held_until => {
                    return JobError::retry(format!("the payment lock could not be renewed: {e}"))
                }
                Err(_) => {}
            }
        }
    };
    // A run whose lease could not be kept stops where it is (a provider call repeats with the
    // same idempotency key; an unfinished transaction rolls back) and is retried.
    let result = tokio::select! {
        r = adjust(app, args.order_id.0, args.authorised_minor, fence) => r,
        e = renewal => Err(e),
    };
    // A lock left behind (Redis unreachable now) frees itself when its lease ends.
    let _ = limiter::unlock(&mut conn, &key, &token).await;
    Ok(Some(result))
}

/// Stops a run whose payment record was refused: a newer holder of the order's payment lock
/// wrote it since (this one was paused past its lease), so what it saw is out of date.
fn stale(order_id: i64) -> JobError {
    tracing::warn!(
        order_id,
        "payment record refused: a newer run holds the order's payment lock"
    );
    JobError::retry("stale payment run: a newer holder of the payment lock wrote the order")
}

/// Records `r`, or stops the run if a newer lock holder wrote the order since ([`stale`]).
async fn record(app: &App, r: orders::PaymentRecord<'_>) -> Result<(), JobError> {
    if orders::record_payment(&app.pool, &r).await.map_err(db)? {
        Ok(())
    } else {
        Err(stale(r.order_id))
    }
}

async fn adjust(app: &App, order_id: i64, authorised_minor: Option<i64>, fence: i64) -> Result<(), JobError> {
    let Some((order, target)) = app.batches.target.call(order_id).await.map_err(db)? else {
        return Err(JobError::abort(format!("order {order_id} does not exist")));
    };
    let status = OrderStatus::parse(&order.status).map_err(JobError::abort)?;
    if status == OrderStatus::Received {
        // Not authorised yet: confirm_payment decides first.
        return Ok(());
    }
    let Some(t) = target else {
        return Ok(()); // a sub-order still waits for stock; its reservation will call again
    };
    // The adjustment mark read with this target: cleared once the charge matches it.
    let due = order.adjust_due_at;
    let target = t.shipping - t.returned;
    // The view the decision starts from: for a freshly authorised order, the authorisation
    // confirm_payment has just seen (no need to read it again); otherwise the provider's
    // state now. Only a capture goes out on that first view. Its idempotency key names the
    // amount, so if an earlier run made this capture the provider answers it again; any other
    // refusal (the payment moved on meanwhile) sends the run to the provider's state.
    let fresh = status == OrderStatus::Authorised && order.captured_minor == 0 && order.refunded_minor == 0;
    let mut first = authorised_minor.filter(|_| fresh).map(|amount| ProviderView {
        status: IntentStatus::RequiresCapture,
        amount,
        amount_received: 0,
        amount_refunded: 0,
        amount_capturable: amount,
        // Checked against the order by confirm_payment, which read it; not needed here.
        currency: crate::domain::payment::Currency::UNKNOWN,
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
                    fence,
                });
                break (view, action);
            }
            Err(ProviderError::Refused(why)) if guessed => {
                tracing::info!(order_id, %why, "capture refused; deciding from the payment's state");
            }
            Err(e) => return Err(provider_error(e)),
        }
    };
    if view.status.is_pending() {
        // Cancelled (or otherwise changed) while the payment is still processing: nothing can
        // be released or refunded until the provider decides, so look again later; the mark
        // stays, and the sweep pushes this again if the job is lost.
        return Err(JobError::Snooze(Duration::from_millis(
            app.config.marketplace.payment_recheck_ms,
        )));
    }
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
                record(
                    app,
                    orders::PaymentRecord {
                        order_id: order.id,
                        kind: "sync",
                        idempotency_key: None,
                        amount_minor: None,
                        outcome: "ok",
                        captured_minor: view.amount_received,
                        refunded_minor: view.amount_refunded,
                        payment_status: &status_name(view.status),
                        event,
                        fence,
                    },
                )
                .await?;
            }
        }
        PaymentAction::Cancel { idempotency_key } => {
            let after = app
                .payments
                .cancel(&order.payment_id, idempotency_key)
                .await
                .map_err(provider_error)?;
            record(
                app,
                orders::PaymentRecord {
                    order_id: order.id,
                    kind: "cancel",
                    idempotency_key: Some(idempotency_key),
                    amount_minor: None,
                    outcome: "ok",
                    captured_minor: 0,
                    refunded_minor: 0,
                    payment_status: &status_name(after.status),
                    event: Some(("order.payment_released", json!({"authorised_minor": view.amount}))),
                    fence,
                },
            )
            .await?;
        }
        PaymentAction::Refund {
            amount,
            idempotency_key,
        } => {
            app.payments
                .refund(&order.payment_id, *amount, idempotency_key)
                .await
                .map_err(provider_error)?;
            crash_point("adjust.refunded");
            record(
                app,
                orders::PaymentRecord {
                    order_id: order.id,
                    kind: "refund",
                    idempotency_key: Some(idempotency_key),
                    amount_minor: Some(*amount),
                    outcome: "ok",
                    captured_minor: view.amount_received,
                    refunded_minor: view.amount_refunded + amount,
                    payment_status: &status_name(view.status),
                    event: Some(("order.refunded", json!({"amount_minor": amount}))),
                    fence,
                },
            )
            .await?;
        }
    }
    if view.status == IntentStatus::Succeeded {
        // The charge now matches what is kept: received returns are refunded.
        for return_id in after_sales::mark_refunded(&app.pool, order.id)
            .await
            .map_err(db)?
        {
            enqueue::reverse_payout(app, ReturnId(return_id)).await?;
        }
    }
    if t.live == 0 {
        clear_due(app, order.id, due).await?;
        if status != OrderStatus::Cancelled {
            let ended = orders::ended_sub_orders(&app.pool, order.id).await.map_err(db)?;
            let why = nothing_ships(&ended);
            super::cancel(app, OrderId(order.id), why.actor, why.code, &why.reason).await?;
        }
        return Ok(());
    }
    // The capture recorded, `authorised` → `captured`, and the reserved sub-orders to their
    // merchants, in one batch.
    hand_to_merchants(app, order.id, target, capture).await?;
    clear_due(app, order.id, due).await
}

/// Clears the adjustment mark this run read, now that the charge matches what it saw.
async fn clear_due(
    app: &App,
    order_id: i64,
    due: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), JobError> {
    if let Some(seen) = due {
        follow_ups::clear_adjust_due(&app.pool, order_id, seen)
            .await
            .map_err(db)?;
    }
    Ok(())
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
    crash_point("hand_over.committed");
    // Push (idempotently) what handing over needs, also for sub-orders an earlier run handed:
    // each queue's jobs in one call. A crash before these pushes is repaired by the rerun of
    // whichever job ran this (confirm_payment reads the same follow-ups from the state).
    let awaiting: Vec<_> = next.awaiting.iter().map(|&(s, at)| (SubOrderId(s), at)).collect();
    enqueue::expire_acceptance(app, &awaiting).await?;
    enqueue::notify_merchants(app, next.pending_deliveries).await
}

/// Releases an intent that backs no order (the payment of an order message refused as
/// `order_conflict`): an authorisation is cancelled, a payment received is refunded in full.
/// An intent some order uses is left alone, as is one the provider will not touch (already
/// cancelled, or refused). Says what it did, for the refusal's reason.
pub async fn release_unbacked(app: &App, provider: &str, payment_id: &str) -> Result<&'static str, JobError> {
    if orders::payment_in_use(&app.pool, provider, payment_id)
        .await
        .map_err(db)?
    {
        return Ok("its payment backs an order and is left alone");
    }
    let view = match app.payments.retrieve(payment_id).await {
        Ok(v) => v,
        Err(ProviderError::Refused(_)) => return Ok("its payment is unknown to the provider"),
        Err(e) => return Err(provider_error(e)),
    };
    let key = format!("souk:unbacked:{payment_id}");
    let done = match view.status {
        IntentStatus::Canceled => return Ok("its payment was already cancelled"),
        IntentStatus::Succeeded => {
            let net = view.amount_received - view.amount_refunded;
            if net <= 0 {
                return Ok("its payment has nothing left to refund");
            }
            app.payments
                .refund(payment_id, net, &format!("{key}:refund"))
                .await
                .map(|_| "its payment was refunded")
        }
        _ => app
            .payments
            .cancel(payment_id, &format!("{key}:cancel"))
            .await
            .map(|_| "its payment was released"),
    };
    match done {
        Ok(what) => {
            tracing::info!(payment_id, what, "payment backing no order released");
            Ok(what)
        }
        Err(ProviderError::Refused(why)) => {
            tracing::info!(payment_id, %why, "the provider refused to release a payment backing no order");
            Ok("the provider refused to release its payment")
        }
        Err(e) => Err(provider_error(e)),
    }
}
