//! The storefront commands (`souk.storefront.v1`; docs/storefront.md): each is validated,
//! refused with a recorded reason and code, made to wait while its order or SKU is not yet in
//! the state it needs (holding its place in its message group), or applied through the order,
//! shipping and after-sales services. Malformed JSON is recorded as refused too.

use crate::{
    app::App,
    domain::ids::{OrderId, ShipmentId, SubOrderId},
    domain::status::{wait_for_state, SubOrderStatus},
    domain::{
        after_sales::{ItemLine, ReturnDecision, MAX_MESSAGE, MAX_SUBJECT},
        order::{self, parse_command, plan_order, Catalogue, Rejection, StorefrontCommand},
    },
    enqueue,
    faults::crash_point,
    queue::{Delivery, JobError},
    store::{
        after_sales,
        merchant_api::{self, Case},
        merchants, orders,
        orders::Intake,
        Fault,
    },
};

/// A database error caused by the message's content (`store::Fault::Input`): carried out of
/// the command as a retry and turned into a recorded refusal by [`apply`].
#[derive(Debug, thiserror::Error)]
#[error("{code}: the database refused a value of the message: {message}")]
struct BadInput {
    code: &'static str,
    message: String,
}

fn db(e: sqlx::Error) -> JobError {
    match crate::store::fault(&e) {
        Some(Fault::Input(code)) => JobError::Retry(Box::new(BadInput {
            code,
            message: e.to_string(),
        })),
        Some(Fault::Bug) => {
            tracing::error!(error = %e, "a status or kind constraint refused a write: a bug in souk");
            JobError::abort(e)
        }
        None => JobError::retry(e),
    }
}

/// Applies one storefront command (the raw `payload` of an entry of `souk.storefront.v1`):
/// refused with a recorded reason, waiting for its state, or applied through the services.
/// A database error caused by the message's values (after the batcher has rerun its batch
/// one request at a time, so it is this message's own) is a refusal too, not a retry.
pub async fn apply(app: &App, d: &Delivery, raw: &str) -> Result<(), JobError> {
    match apply_checked(app, d, raw).await {
        Err(JobError::Retry(e)) if e.downcast_ref::<BadInput>().is_some() => {
            let bad = e.downcast_ref::<BadInput>().expect("checked above");
            let r = Rejection {
                code: bad.code,
                message: format!("the database refused a value of the message: {}", bad.message),
            };
            refuse(app, d, raw, order::storefront_order_id(raw).as_deref(), r).await
        }
        other => other,
    }
}

async fn apply_checked(app: &App, d: &Delivery, raw: &str) -> Result<(), JobError> {
    if d.invalid_utf8 {
        // Read with replacement characters: acting on it could store an order under an id the
        // storefront never sent.
        let r = Rejection {
            code: "invalid_utf8",
            message: "the entry's bytes are not valid UTF-8".into(),
        };
        return refuse(app, d, raw, None, r).await;
    }
    let cmd = match parse_command(raw) {
        Ok(c) => c,
        Err(r) => return refuse(app, d, raw, order::storefront_order_id(raw).as_deref(), r).await,
    };
    match cmd {
        StorefrontCommand::OrderPlaced { order, .. } => {
            crash_point("intake.received");
            let pairs = order
                .lines
                .iter()
                .map(|l| (l.merchant_id.clone(), l.sku.clone()))
                .collect();
            let (m, s) = app.batches.catalogue.call(pairs).await.map_err(db)?;
            let providers = [app.config.payment.provider.as_str()];
            let cat = Catalogue {
                currency: &app.config.marketplace.currency,
                merchants: &m,
                skus: &s,
                providers: &providers,
                now: chrono::Utc::now(),
            };
            let plan = match plan_order(&order, &cat) {
                Ok(p) => p,
                Err(r) if r.code == "unknown_sku" => {
                    // Its SKU may be created by an `inventory.set` sent just before it, which is
                    // in another group (cross-aggregate order is not kept: docs/storefront.md).
                    if let Some(w) = wait(app, d) {
                        return Err(w);
                    }
                    return refuse(app, d, raw, Some(&order.id), r).await;
                }
                Err(r) => return refuse(app, d, raw, Some(&order.id), r).await,
            };
            let sf = order.id.clone();
            let payment = order.payment.clone();
            let stored = app
                .batches
                .insert_orders
                .call(crate::store::pipeline::NewOrder {
                    order,
                    plan,
                    enqueued_at_ms: d.enqueued_at_ms,
                })
                .await
                .map_err(db)?;
            match stored.intake {
                Intake::Created => {}
                Intake::Duplicate => {
                    tracing::info!(storefront_order_id = %sf, order_id = stored.order_id, "duplicate order message; already stored");
                }
                Intake::Conflict => {
                    // Its own intent, when it names one no order uses, is released so the
                    // customer's money is not held for an order souk will not run.
                    let released =
                        super::payment::release_unbacked(app, &payment.provider, &payment.payment_id).await?;
                    let r = Rejection {
                        code: "order_conflict",
                        message: format!(
                            "order {sf:?} was stored before with different lines, prices, currency, payment or customer; \
                             this message is ignored ({released})"
                        ),
                    };
                    return refuse(app, d, raw, Some(&sf), r).await;
                }
                Intake::PaymentUsed => {
                    // The intent backs the order stored first: left alone.
                    let r = Rejection {
                        code: "payment_already_used",
                        message: format!(
                            "payment {:?} already backs another order; one payment backs one order",
                            payment.payment_id
                        ),
                    };
                    return refuse(app, d, raw, Some(&sf), r).await;
                }
            }
            crash_point("intake.stored");
            // Also on a duplicate: the first run may have stopped before this push.
            enqueue::confirm_payment(app, OrderId(stored.order_id)).await
        }
        StorefrontCommand::InventorySet {
            merchant_id,
            sku,
            on_hand,
            ..
        } => inventory(app, d, raw, &merchant_id, &sku, Some(on_hand), None).await,
        StorefrontCommand::InventoryAdjust {
            merchant_id,
            sku,
            delta,
            ..
        } => inventory(app, d, raw, &merchant_id, &sku, None, Some(delta)).await,
        StorefrontCommand::MerchantDecision {
            storefront_order_id,
            merchant_id,
            decision,
            reason,
            ..
        } => {
            let Some(sub) = orders::sub_order_by_storefront(&app.pool, &storefront_order_id, &merchant_id)
                .await
                .map_err(db)?
            else {
                let r = Rejection {
                    code: "unknown_sub_order",
                    message: format!("no sub-order of {storefront_order_id:?} for merchant {merchant_id:?}"),
                };
                return refuse(app, d, raw, Some(&storefront_order_id), r).await;
            };
            decide(
                app,
                d,
                raw,
                sub,
                decision == order::Decision::Accept,
                &format!("merchant:{merchant_id}"),
                reason.as_deref(),
            )
            .await
        }
        StorefrontCommand::ShipmentCreated {
            storefront_order_id,
            merchant_id,
            tracking_number,
            carrier,
            lines,
            ..
        } => {
            ship(
                app,
                d,
                raw,
                &storefront_order_id,
                &merchant_id,
                &tracking_number,
                carrier.as_deref(),
                lines.as_deref(),
            )
            .await
        }
        StorefrontCommand::ReturnRequested {
            return_id,
            storefront_order_id,
            merchant_id,
            lines,
            reason,
            ..
        } => {
            if let Some(Err(r)) = reason.as_deref().map(|t| text_ok("reason", t, MAX_MESSAGE)) {
                return refuse(app, d, raw, Some(&storefront_order_id), r).await;
            }
            let req = after_sales::ReturnRequest {
                return_id: &return_id,
                storefront_order_id: &storefront_order_id,
                merchant_id: &merchant_id,
                lines: &lines,
                reason: reason.as_deref(),
            };
            let c = &app.config.after_sales;
            let outcome = after_sales::request_return(
                &app.pool,
                &d.job_id,
                &req,
                c.return_window_s,
                c.return_response_s,
            )
            .await
            .map_err(db)?;
            after_sales_done(app, d, raw, outcome).await
        }
        StorefrontCommand::ReturnDecision {
            return_id,
            decision,
            reason,
            merchant_id,
            ..
        } => {
            if let Some(r) = not_theirs(app, Case::Return, &return_id, merchant_id.as_deref()).await? {
                return refuse(app, d, raw, None, r).await;
            }
            let approve = decision == ReturnDecision::Approve;
            let outcome = after_sales::decide_return(&app.pool, &return_id, approve, reason.as_deref())
                .await
                .map_err(db)?;
            after_sales_done(app, d, raw, outcome).await
        }
        StorefrontCommand::ReturnShipped {
            return_id,
            tracking_number,
            carrier,
            ..
        } => match after_sales::shippable_return(&app.pool, &return_id)
            .await
            .map_err(db)?
        {
            Ok((rid, sub, merchant)) => {
                track(
                    app,
                    d,
                    raw,
                    None,
                    sub,
                    &merchant,
                    &tracking_number,
                    carrier.as_deref(),
                    None,
                    Some(rid),
                )
                .await
            }
            Err(r) => refuse(app, d, raw, None, r).await,
        },
        StorefrontCommand::ReturnReceived {
            return_id,
            sellable,
            note,
            merchant_id,
            ..
        } => {
            if let Some(r) = not_theirs(app, Case::Return, &return_id, merchant_id.as_deref()).await? {
                return refuse(app, d, raw, None, r).await;
            }
            let outcome = after_sales::receive(&app.pool, &d.job_id, &return_id, sellable, note.as_deref())
                .await
                .map_err(db)?;
            // The refund follows from the order's adjustment mark, set with the receipt.
            after_sales_done(app, d, raw, outcome).await
        }
        StorefrontCommand::ComplaintOpened {
            complaint_id,
            storefront_order_id,
            merchant_id,
            subject,
            message,
            ..
        } => {
            if let Err(r) =
                text_ok("subject", &subject, MAX_SUBJECT).and(text_ok("message", &message, MAX_MESSAGE))
            {
                return refuse(app, d, raw, Some(&storefront_order_id), r).await;
            }
            let n = after_sales::NewComplaint {
                complaint_id: &complaint_id,
                storefront_order_id: &storefront_order_id,
                merchant_id: &merchant_id,
                subject: &subject,
                message: &message,
            };
            let outcome = after_sales::open_complaint(
                &app.pool,
                &d.job_id,
                &n,
                app.config.after_sales.complaint_reply_s,
            )
            .await
            .map_err(db)?;
            after_sales_done(app, d, raw, outcome).await
        }
        StorefrontCommand::ComplaintMessage {
            complaint_id,
            author,
            message,
            merchant_id,
            ..
        } => {
            if let Some(r) = not_theirs(app, Case::Complaint, &complaint_id, merchant_id.as_deref()).await? {
                return refuse(app, d, raw, None, r).await;
            }
            if let Err(r) = text_ok("message", &message, MAX_MESSAGE) {
                return refuse(app, d, raw, None, r).await;
            }
            let outcome = after_sales::complaint_message(
                &app.pool,
                &d.job_id,
                &complaint_id,
                author,
                &message,
                app.config.after_sales.complaint_reply_s,
            )
            .await
            .map_err(db)?;
            after_sales_done(app, d, raw, outcome).await
        }
        StorefrontCommand::ComplaintClosed {
            complaint_id,
            by,
            resolution,
            merchant_id,
            ..
        } => {
            if let Some(r) = not_theirs(app, Case::Complaint, &complaint_id, merchant_id.as_deref()).await? {
                return refuse(app, d, raw, None, r).await;
            }
            if let Err(r) = text_ok("resolution", &resolution, MAX_MESSAGE) {
                return refuse(app, d, raw, None, r).await;
            }
            let outcome = after_sales::close_complaint(&app.pool, &d.job_id, &complaint_id, by, &resolution)
                .await
                .map_err(db)?;
            after_sales_done(app, d, raw, outcome).await
        }
        StorefrontCommand::OrderCancel {
            storefront_order_id,
            reason,
            ..
        } => {
            let Some(order_id) = orders::order_id_by_storefront_id(&app.pool, &storefront_order_id)
                .await
                .map_err(db)?
            else {
                let r = Rejection {
                    code: "unknown_order",
                    message: format!("no order {storefront_order_id:?}"),
                };
                return refuse(app, d, raw, Some(&storefront_order_id), r).await;
            };
            let why = reason.unwrap_or_else(|| "cancelled by the storefront".to_owned());
            super::cancel(
                app,
                OrderId(order_id),
                "storefront",
                "cancelled_by_storefront",
                &why,
            )
            .await
        }
    }
}

/// A refusal when a command names a merchant (`merchant_id`) that is not the case's: one
/// merchant never acts on another's return or complaint. An unknown case is left to the
/// service, which refuses it with its usual code.
async fn not_theirs(
    app: &App,
    case: Case,
    id: &str,
    merchant: Option<&str>,
) -> Result<Option<Rejection>, JobError> {
    let Some(merchant) = merchant else {
        return Ok(None);
    };
    let owner = merchant_api::case_merchant(&app.pool, case, id)
        .await
        .map_err(db)?;
    Ok(match owner {
        Some(o) if o != merchant => Some(Rejection {
            code: "not_your_case",
            message: format!("{id:?} is not a case of merchant {merchant:?}"),
        }),
        _ => None,
    })
}

/// Sets (`on_hand`) or adjusts (`delta`) a merchant's stock of a SKU, once per stream entry;
/// refused with its reason when the SKU or the result is not allowed.
async fn inventory(
    app: &App,
    d: &Delivery,
    raw: &str,
    merchant: &str,
    sku: &str,
    on_hand: Option<i64>,
    delta: Option<i64>,
) -> Result<(), JobError> {
    match merchants::apply_inventory(&app.pool, &d.job_id, merchant, sku, on_hand, delta)
        .await
        .map_err(db)?
    {
        Ok(_) => Ok(()),
        // An `inventory.set` sent before this for the same SKU is in its message group, so it
        // has been applied: `unknown_sku` here is final.
        Err(merchants::StockRefusal { code, message }) => {
            refuse(app, d, raw, None, Rejection { code, message }).await
        }
    }
}

/// Records a merchant's shipment of its sub-order, or of some of its lines (accepted ones
/// only), and starts tracking it.
#[allow(clippy::too_many_arguments)]
async fn ship(
    app: &App,
    d: &Delivery,
    raw: &str,
    sf: &str,
    merchant: &str,
    number: &str,
    carrier: Option<&str>,
    lines: Option<&[ItemLine]>,
) -> Result<(), JobError> {
    let Some(sub) = orders::sub_order_by_storefront(&app.pool, sf, merchant)
        .await
        .map_err(db)?
    else {
        let r = Rejection {
            code: "unknown_sub_order",
            message: format!("no sub-order of {sf:?} for merchant {merchant:?}"),
        };
        return refuse(app, d, raw, Some(sf), r).await;
    };
    let status = orders::sub_order_status(&app.pool, sub).await.map_err(db)?;
    if status != SubOrderStatus::Accepted.as_str() {
        if SubOrderStatus::parse(&status).is_ok_and(SubOrderStatus::before_hand_over) {
            if let Some(w) = wait(app, d) {
                return Err(w);
            }
        }
        let r = Rejection {
            code: "not_shippable",
            message: format!("the sub-order is {status}; only accepted sub-orders ship"),
        };
        return refuse(app, d, raw, Some(sf), r).await;
    }
    track(app, d, raw, Some(sf), sub, merchant, number, carrier, lines, None).await
}

/// Creates a parcel's shipment (once per tracking number) and starts tracking it. The carrier,
/// when not given, is the surest candidate detected from the number's format; an ambiguous or
/// unknown number is left to the tracking provider. `return_id`: a customer's return parcel.
#[allow(clippy::too_many_arguments)]
async fn track(
    app: &App,
    d: &Delivery,
    raw: &str,
    sf: Option<&str>,
    sub: i64,
    merchant: &str,
    number: &str,
    carrier: Option<&str>,
    lines: Option<&[ItemLine]>,
    return_id: Option<i64>,
) -> Result<(), JobError> {
    use crate::domain::tracking::carrier::{detect, normalise, Confidence};
    let number = normalise(number);
    if number.is_empty() || number.len() > 64 || !number.chars().all(|c| c.is_ascii_alphanumeric()) {
        let r = Rejection {
            code: "invalid_tracking_number",
            message: format!("tracking numbers are 1–64 letters and digits; got {number:?}"),
        };
        return refuse(app, d, raw, sf, r).await;
    }
    let candidates = detect(&number);
    let chosen = match carrier {
        Some(c) => Some(c.trim().to_ascii_lowercase()),
        None => match candidates.as_slice() {
            [only] => Some(only.carrier.slug().to_owned()),
            [first, second, ..] if first.confidence > second.confidence => {
                Some(first.carrier.slug().to_owned())
            }
            [first, ..] if first.confidence == Confidence::CheckDigit => {
                Some(first.carrier.slug().to_owned())
            }
            _ => None,
        },
    };
    let candidates = serde_json::to_value(&candidates).unwrap_or_default();
    let n = crate::store::shipments::NewShipment {
        sub_order_id: sub,
        merchant,
        tracking_number: &number,
        carrier: chosen.as_deref(),
        candidates: &candidates,
        provider: &app.config.tracking.provider,
        lines,
        return_id,
    };
    let id = match crate::store::shipments::create(&app.pool, &n).await.map_err(db)? {
        Ok((id, _)) => id,
        Err(r) => return refuse(app, d, raw, sf, r).await,
    };
    enqueue::track_shipment(app, ShipmentId(id)).await
}

/// The end of an after-sales command: refused with its reason, or applied (what the order's
/// state says is outstanding pushed: the merchant's webhooks, also those an earlier run of this
/// command created, and a refund when one is due).
async fn after_sales_done(
    app: &App,
    d: &Delivery,
    raw: &str,
    outcome: Result<i64, Rejection>,
) -> Result<(), JobError> {
    match outcome {
        Ok(order_id) => {
            crash_point("after_sales.committed");
            enqueue::follow_ups(app, OrderId(order_id)).await
        }
        Err(r) => refuse(app, d, raw, order::storefront_order_id(raw).as_deref(), r).await,
    }
}

/// Refuses free text over `max` characters or empty.
fn text_ok(field: &'static str, s: &str, max: usize) -> Result<(), Rejection> {
    let n = s.chars().count();
    if n == 0 || n > max {
        return Err(Rejection {
            code: "invalid_text",
            message: format!("{field} must be 1–{max} characters; got {n}"),
        });
    }
    Ok(())
}

/// Applies a merchant decision (from the storefront channel or the admin API); a rejection
/// releases stock and refunds that share. Refused, with a recorded reason, when the sub-order
/// is no longer awaiting one.
pub async fn decide(
    app: &App,
    d: &Delivery,
    raw: &str,
    sub: i64,
    accept: bool,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), JobError> {
    match super::decide(app, SubOrderId(sub), accept, actor, reason).await? {
        super::Decided::Applied => Ok(()),
        super::Decided::Refused(status) => {
            if SubOrderStatus::parse(&status).is_ok_and(SubOrderStatus::before_hand_over) {
                if let Some(w) = wait(app, d) {
                    return Err(w);
                }
            }
            let wanted = if accept { "accepted" } else { "rejected" };
            let r = Rejection {
                code: "decision_refused",
                message: format!("the sub-order is {status}; it cannot be {wanted} now"),
            };
            refuse(app, d, raw, order::storefront_order_id(raw).as_deref(), r).await
        }
    }
}

/// A command whose order or SKU has not reached the state it needs waits: a snooze, which in
/// this grouped queue keeps its place ahead of later commands about the same order or SKU,
/// until `marketplace.command_wait_s` after it was sent; `None` once that has passed.
fn wait(app: &App, d: &Delivery) -> Option<JobError> {
    let age = chrono::Utc::now().timestamp_millis() - d.enqueued_at_ms;
    wait_for_state(
        std::time::Duration::from_millis(age.max(0) as u64),
        std::time::Duration::from_secs(app.config.marketplace.command_wait_s),
    )
    .map(JobError::Snooze)
}

async fn refuse(app: &App, d: &Delivery, raw: &str, sf: Option<&str>, r: Rejection) -> Result<(), JobError> {
    tracing::info!(entry_id = %d.entry_id, code = r.code, reason = %r.message, "storefront message refused");
    orders::record_rejection(&app.pool, &d.job_id, sf, r.code, &r.message, raw)
        .await
        .map_err(db)
}
