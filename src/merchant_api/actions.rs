//! What a merchant does through the API. Order, stock, return and complaint actions are
//! storefront commands naming the caller's merchant, checked here as the stream checks them,
//! enqueued on the storefront stream (in their groups' order behind whatever the storefront
//! sent before) and waited for up to `merchant_api.action_wait_ms`: 200 when applied, 409 with
//! the service's refusal code, 202 with an operation to poll otherwise. Webhook replays and the
//! secret rotation act at once.

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body::Body, keys::Caller, IdempotencyKey, Problem, Who};
use crate::{
    app::App,
    domain::{
        after_sales::{Author, ItemLine, ReturnDecision},
        order::{parse_command, Decision, StorefrontCommand},
    },
    enqueue,
    store::merchant_api::{self as sql, Case},
};

/// The storefront order id of one of the caller's sub-orders.
async fn own_sub_order(app: &App, who: &Caller, id: &str) -> Result<String, Problem> {
    let Some(id) = id.parse::<i64>().ok().filter(|n| *n > 0) else {
        return Err(Problem::not_found("sub-order"));
    };
    sql::own_sub_order(&app.pool, &who.merchant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("sub-order"))
}

async fn own_case(app: &App, who: &Caller, case: Case, id: &str) -> Result<(), Problem> {
    let what = match case {
        Case::Return => "return",
        Case::Complaint => "complaint",
    };
    match sql::case_merchant(&app.pool, case, id).await? {
        Some(m) if m == who.merchant_id => Ok(()),
        _ => Err(Problem::not_found(what)),
    }
}

/// What became of an enqueued command.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pending,
    Applied,
    Refused { code: String, reason: String },
    Failed { error: String },
}

/// Reads an entry's outcome: on the grouped storefront queue an entry is in the stream until
/// it is read, then in `gkeys` until it is settled (retries and waits keep it there), and
/// both go in the script that settles it. Settled: refused when a rejection names it, failed
/// when it is a dead letter, else applied.
pub async fn outcome(app: &App, entry: &str) -> Result<Outcome, Problem> {
    let keys = app.producer.keys(enqueue::STOREFRONT);
    let mut conn = app.conn.clone();
    let (in_stream, in_group): (Vec<Value>, bool) = redis::pipe()
        .atomic()
        .cmd("XRANGE")
        .arg(&keys.stream)
        .arg(entry)
        .arg(entry)
        .cmd("HEXISTS")
        .arg(&keys.gkeys)
        .arg(entry)
        .query_async::<(Vec<redis::Value>, bool)>(&mut conn)
        .await
        .map(|(s, g)| (s.into_iter().map(|_| Value::Null).collect(), g))
        .map_err(|e| Problem::unavailable(&e))?;
    if !in_stream.is_empty() || in_group {
        return Ok(Outcome::Pending);
    }
    let refused = sql::refusal(&app.pool, entry).await?;
    if let Some((code, reason)) = refused {
        return Ok(Outcome::Refused { code, reason });
    }
    // Dead letters are few (a bug or a constraint souk did not expect): the newest suffice.
    let dead = crate::queue::dead::list(&mut conn, &keys, 500)
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    if let Some(d) = dead.into_iter().find(|d| d.job_id == entry) {
        return Ok(Outcome::Failed { error: d.error });
    }
    Ok(Outcome::Applied)
}

fn operation_json(
    entry: &str,
    command: &str,
    created_at: chrono::DateTime<chrono::Utc>,
    o: &Outcome,
) -> Value {
    let mut v = json!({
        "id": entry,
        "command": command,
        "created_at": created_at,
        "url": format!("/merchant/v1/operations/{entry}"),
    });
    match o {
        Outcome::Pending => v["status"] = json!("pending"),
        Outcome::Applied => v["status"] = json!("applied"),
        Outcome::Refused { code, reason } => {
            v["status"] = json!("refused");
            v["code"] = json!(code);
            v["reason"] = json!(reason);
        }
        Outcome::Failed { .. } => v["status"] = json!("failed"),
    }
    v
}

/// The answer for an operation in its current state.
fn answer(entry: &str, command: &str, created_at: chrono::DateTime<chrono::Utc>, o: &Outcome) -> Response {
    let op = operation_json(entry, command, created_at, o);
    match o {
        Outcome::Applied => (StatusCode::OK, Json(json!({"operation": op}))).into_response(),
        Outcome::Pending => {
            let mut r = (StatusCode::ACCEPTED, Json(json!({"operation": op}))).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/merchant/v1/operations/{entry}")) {
                r.headers_mut().insert("location", v);
            }
            r
        }
        Outcome::Refused { code, reason } => Problem::new(StatusCode::CONFLICT, code, reason)
            .with(json!({"operation": op}))
            .into_response(),
        Outcome::Failed { error } => {
            tracing::error!(entry, %error, "a merchant API command was dead-lettered");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "command_failed",
                "souk could not apply this command; the operator has it in the dead letters",
            )
            .with(json!({"operation": op}))
            .into_response()
        }
    }
}

/// Checks, enqueues (once per Idempotency-Key) and waits for a command.
async fn act(
    app: &App,
    who: &Caller,
    idem: Option<&IdempotencyKey>,
    cmd: StorefrontCommand,
    name: &str,
) -> Result<Response, Problem> {
    let raw = serde_json::to_string(&cmd).map_err(|e| Problem::internal(&e))?;
    // The checks the stream makes (ids, ranges, text): refused before anything is enqueued.
    parse_command(&raw).map_err(|r| Problem::invalid(r.code, &r.message))?;
    let entry = match idem {
        Some(k) => {
            // The same key within a day finds its first entry, even after a crash between the
            // enqueue and the answer.
            let key = format!("merchant-api:{}:{}", who.merchant_id, k.0);
            app.producer
                .push_raw_once(enqueue::STOREFRONT, &key, &raw, Duration::from_secs(24 * 3600))
                .await
                .map_err(|e| Problem::unavailable(&e))?
                .1
        }
        None => app
            .producer
            .push_raw(enqueue::STOREFRONT, &raw)
            .await
            .map_err(|e| Problem::unavailable(&e))?,
    };
    let created_at = sql::record_operation(&app.pool, &who.merchant_id, &who.key_id, &entry, name).await?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(app.config.merchant_api.action_wait_ms);
    let mut pause = Duration::from_millis(10);
    loop {
        let o = outcome(app, &entry).await?;
        if o != Outcome::Pending || tokio::time::Instant::now() >= deadline {
            return Ok(answer(&entry, name, created_at, &o));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /merchant/v1/sub-orders/{id}/accept`.
pub async fn accept(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
    b: Body<ReasonBody>,
) -> Result<Response, Problem> {
    let reason = b.or_default().reason;
    decide(app, who, idem, id, Decision::Accept, reason).await
}

/// `POST /merchant/v1/sub-orders/{id}/reject` `{"reason": …}`.
pub async fn reject(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
    b: Body<ReasonBody>,
) -> Result<Response, Problem> {
    let reason = b.required()?.reason;
    decide(app, who, idem, id, Decision::Reject, reason).await
}

async fn decide(
    app: App,
    who: Caller,
    idem: Option<Extension<IdempotencyKey>>,
    id: String,
    decision: Decision,
    reason: Option<String>,
) -> Result<Response, Problem> {
    let sf = own_sub_order(&app, &who, &id).await?;
    let cmd = StorefrontCommand::MerchantDecision {
        version: 1,
        storefront_order_id: sf,
        merchant_id: who.merchant_id.clone(),
        decision,
        reason,
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "merchant.decision").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipBody {
    pub tracking_number: String,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub lines: Option<Vec<ItemLine>>,
}

/// `POST /merchant/v1/sub-orders/{id}/shipments`: a parcel, with everything left to ship or
/// the `lines` it carries.
pub async fn ship(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
    b: Body<ShipBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    let sf = own_sub_order(&app, &who, &id).await?;
    let cmd = StorefrontCommand::ShipmentCreated {
        version: 1,
        storefront_order_id: sf,
        merchant_id: who.merchant_id.clone(),
        tracking_number: b.tracking_number,
        carrier: b.carrier,
        lines: b.lines,
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "shipment.created").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnDecisionBody {
    pub decision: ReturnDecision,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /merchant/v1/returns/{id}/decision` `{"decision": "approve" | "refuse", "reason": …}`.
pub async fn return_decision(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
    b: Body<ReturnDecisionBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    own_case(&app, &who, Case::Return, &id).await?;
    let cmd = StorefrontCommand::ReturnDecision {
        version: 1,
        return_id: id,
        decision: b.decision,
        reason: b.reason,
        merchant_id: Some(who.merchant_id.clone()),
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "return.decision").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub sellable: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /merchant/v1/returns/{id}/receipt` `{"sellable": bool, "note": …}`: the goods are back.
pub async fn return_receipt(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
    b: Body<ReceiptBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    own_case(&app, &who, Case::Return, &id).await?;
    let cmd = StorefrontCommand::ReturnReceived {
        version: 1,
        return_id: id,
        sellable: b.sellable,
        note: b.note,
        merchant_id: Some(who.merchant_id.clone()),
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "return.received").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    pub message: String,
}

/// `POST /merchant/v1/complaints/{id}/messages` `{"message": …}`: the merchant's reply.
pub async fn complaint_message(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
    b: Body<MessageBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    own_case(&app, &who, Case::Complaint, &id).await?;
    let cmd = StorefrontCommand::ComplaintMessage {
        version: 1,
        complaint_id: id,
        author: Author::Merchant,
        message: b.message,
        merchant_id: Some(who.merchant_id.clone()),
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "complaint.message").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockSetBody {
    pub on_hand: i64,
}

/// `PUT /merchant/v1/stock/{sku}` `{"on_hand": n}` (creates the SKU).
pub async fn stock_set(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(sku): Path<String>,
    b: Body<StockSetBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    let cmd = StorefrontCommand::InventorySet {
        version: 1,
        merchant_id: who.merchant_id.clone(),
        sku,
        on_hand: b.on_hand,
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "inventory.set").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustBody {
    pub delta: i64,
}

/// `POST /merchant/v1/stock/{sku}/adjustments` `{"delta": n}`: send an Idempotency-Key, or a
/// retry after a lost answer adjusts twice.
pub async fn stock_adjust(
    State(app): State<App>,
    Extension(who): Who,
    idem: Option<Extension<IdempotencyKey>>,
    Path(sku): Path<String>,
    b: Body<StockAdjustBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    let cmd = StorefrontCommand::InventoryAdjust {
        version: 1,
        merchant_id: who.merchant_id.clone(),
        sku,
        delta: b.delta,
    };
    act(&app, &who, idem.as_ref().map(|e| &e.0), cmd, "inventory.adjust").await
}

/// `GET /merchant/v1/operations/{id}`: an action's outcome.
pub async fn operation(
    State(app): State<App>,
    Extension(who): Who,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let row = sql::operation(&app.pool, &who.merchant_id, &id).await?;
    let Some((command, created_at)) = row else {
        return Err(Problem::not_found("operation"));
    };
    let o = outcome(&app, &id).await?;
    Ok(Json(operation_json(&id, &command, created_at, &o)).into_response())
}

async fn endpoint_enabled(app: &App, merchant: &str) -> Result<(), Problem> {
    let disabled = sql::endpoint_disabled(&app.pool, merchant).await?;
    match disabled {
        Some(why) => Err(Problem::new(
            StatusCode::CONFLICT,
            "endpoint_disabled",
            &format!("your webhook endpoint is disabled ({why}); the operator re-enables it with a new URL"),
        )),
        None => Ok(()),
    }
}

async fn push_replays(app: &App, ids: &[String]) -> Result<(), Problem> {
    let jobs: Vec<enqueue::NotifyMerchant> = ids
        .iter()
        .map(|id| enqueue::NotifyMerchant {
            delivery_id: id.clone(),
        })
        .collect();
    // Not deduplicated on the delivery id as the first sends are: this is a new send. A lost
    // push is found by the sweep of unsent deliveries (replayed_at).
    app.producer
        .push_many(enqueue::NOTIFY_MERCHANT, &jobs)
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    Ok(())
}

/// `POST /merchant/v1/webhooks/deliveries/{id}/replay`: sent again, with its `webhook-id`.
pub async fn replay_one(
    State(app): State<App>,
    Extension(who): Who,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    endpoint_enabled(&app, &who.merchant_id).await?;
    match sql::replay_one(&app.pool, &who.merchant_id, &id).await? {
        None => return Err(Problem::not_found("webhook delivery")),
        Some(false) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "delivery_pending",
                "this delivery is still being sent; it cannot be replayed until it ends",
            ))
        }
        Some(true) => {}
    }
    push_replays(&app, std::slice::from_ref(&id)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": [id]}))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    pub since: chrono::DateTime<chrono::Utc>,
}

/// At most this many deliveries are replayed per call (the answer says whether more remain).
const REPLAY_MAX: i64 = 1000;

/// `POST /merchant/v1/webhooks/replay` `{"since": RFC 3339}`: every failed delivery created
/// since then, sent again.
pub async fn replay_failed(
    State(app): State<App>,
    Extension(who): Who,
    b: Body<ReplayBody>,
) -> Result<Response, Problem> {
    let b = b.required()?;
    endpoint_enabled(&app, &who.merchant_id).await?;
    let ids = sql::replay_failed(&app.pool, &who.merchant_id, b.since, REPLAY_MAX).await?;
    push_replays(&app, &ids).await?;
    let more = ids.len() as i64 == REPLAY_MAX;
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": ids, "more": more}))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    pub drop_old: bool,
}

/// `POST /merchant/v1/webhooks/secret/rotate` `{"drop_old": false}`: a new signing secret; the
/// previous ones keep signing until `drop_old`.
pub async fn rotate_secret(
    State(app): State<App>,
    Extension(who): Who,
    b: Body<RotateBody>,
) -> Result<Response, Problem> {
    let drop_old = b.or_default().drop_old;
    let secret = crate::admin::rotate_secret(&app, &who.merchant_id, drop_old)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(json!({"signing_secret": secret, "previous_secret_kept": !drop_old})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    #[serde(default)]
    pub event_type: Option<String>,
}

/// `POST /merchant/v1/webhooks/test` `{"event_type": …}`: a signed example of that event type
/// (or of every one) sent to your endpoint now, with what it answered.
pub async fn test_webhook(
    State(app): State<App>,
    Extension(who): Who,
    b: Body<TestBody>,
) -> Result<Response, Problem> {
    let only = b.or_default().event_type;
    let sent = super::test_webhook::run(&app, &who.merchant_id, only.as_deref())
        .await
        .map_err(|e| match e {
            crate::admin::AdminError::Invalid(m) => Problem::invalid("unknown_event_type", &m),
            e => Problem::internal(&e),
        })?;
    Ok(Json(super::test_webhook::report(&sent)).into_response())
}
