//! SQL of after-sales: returns and complaints (migrations/0007_after_sales.sql).
//!
//! Like the rest of the store, every change is a compare-and-set inside one transaction that
//! also appends the order's event, the case's message and the merchant's webhook delivery (its
//! id fixed per case and event), so a command applied twice changes nothing the second time.
//! The caller pushes what the order's state then says is outstanding (`enqueue::follow_ups`).
//!
//! Here: what returns and complaints share (their case, messages, the merchant's webhook) and
//! the order story's after-sales part; `returns` and `complaints` hold each one's steps.

mod complaints;
mod returns;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::PgPool;

pub use self::complaints::{
    close_complaint, complaint_message, escalate_overdue, open_complaint, NewComplaint,
};
pub use self::returns::{
    decide_return, expire_return_requests, mark_received, mark_refunded, receive, request_return,
    shippable_return, ReturnRequest,
};
use super::orders::{add_event, insert_delivery, Tx};
use crate::domain::{
    after_sales::{commission_share, plan_return, refund_of, ItemLine},
    order::Rejection,
};

fn refused(code: &'static str, message: String) -> Rejection {
    Rejection { code, message }
}

/// The webhook id of a return's event.
pub fn return_delivery_id(return_id: i64, event: &str) -> String {
    crate::domain::ids::return_webhook_id(return_id, event)
}

/// The webhook id of a complaint's event.
pub fn complaint_delivery_id(complaint_id: i64, event: &str) -> String {
    crate::domain::ids::complaint_webhook_id(complaint_id, event)
}

/// What a return or complaint is about.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Case {
    id: i64,
    order_id: i64,
    sub_order_id: i64,
    merchant_id: String,
    storefront_order_id: String,
    /// The storefront's id of the return or complaint.
    storefront_id: String,
    status: String,
}

async fn add_message(
    tx: &mut Tx<'_>,
    complaint: Option<i64>,
    ret: Option<i64>,
    author: &str,
    kind: &str,
    body: &str,
    source: Option<&str>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO case_messages (complaint_id, return_id, author, kind, body, source_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source_id) DO NOTHING RETURNING id",
    )
    .bind(complaint)
    .bind(ret)
    .bind(author)
    .bind(kind)
    .bind(body)
    .bind(source)
    .fetch_optional(&mut **tx)
    .await
}

/// Appends the order event and creates the merchant's webhook delivery of a case event.
#[allow(clippy::too_many_arguments)]
async fn tell(
    tx: &mut Tx<'_>,
    c: &Case,
    delivery_id: Option<&str>,
    event: &str,
    actor: &str,
    reason: Option<&str>,
    data: Value,
) -> Result<(), sqlx::Error> {
    add_event(
        tx,
        Some(c.order_id),
        Some(c.sub_order_id),
        Some(&c.storefront_order_id),
        event,
        actor,
        reason,
        data.clone(),
    )
    .await?;
    if let Some(id) = delivery_id {
        let payload = json!({"storefront_order_id": c.storefront_order_id, "sub_order_id": c.sub_order_id,
                             "merchant_id": c.merchant_id, "details": data});
        insert_delivery(
            tx,
            id,
            &c.merchant_id,
            Some(c.order_id),
            Some(c.sub_order_id),
            event,
            &payload,
        )
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Returns

/// Returns and complaints of an order with their lines and messages, for `souk orders show`.
pub async fn story(pool: &PgPool, order_id: i64) -> Result<(Vec<Value>, Vec<Value>), sqlx::Error> {
    let returns: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('id', r.storefront_return_id, 'sub_order_id', r.sub_order_id, 'merchant_id', r.merchant_id,
                'status', r.status, 'reason', r.reason, 'refund_minor', r.refund_minor, 'respond_by', r.respond_by,
                'decided_by', r.decided_by, 'received_at', r.received_at, 'refunded_at', r.refunded_at,
                'restocked_at', r.restocked_at, 'after_settlement', r.after_settlement,
                'lines', (SELECT json_agg(json_build_object('sku', l.sku, 'quantity', l.quantity, 'unit_price_minor', l.unit_price_minor) ORDER BY l.sku)
                          FROM return_lines l WHERE l.return_id = r.id),
                'messages', (SELECT coalesce(json_agg(json_build_object('at', m.created_at, 'author', m.author, 'kind', m.kind, 'body', m.body) ORDER BY m.id), '[]')
                             FROM case_messages m WHERE m.return_id = r.id))
         FROM returns r WHERE r.order_id = $1 ORDER BY r.id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    let complaints: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('id', c.storefront_complaint_id, 'sub_order_id', c.sub_order_id, 'merchant_id', c.merchant_id,
                'subject', c.subject, 'status', c.status, 'reply_by', c.reply_by, 'escalated_at', c.escalated_at,
                'closed_at', c.closed_at, 'resolution', c.resolution,
                'messages', (SELECT coalesce(json_agg(json_build_object('at', m.created_at, 'author', m.author, 'kind', m.kind, 'body', m.body) ORDER BY m.id), '[]')
                             FROM case_messages m WHERE m.complaint_id = c.id))
         FROM complaints c WHERE c.order_id = $1 ORDER BY c.id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok((returns, complaints))
}
