//! Complaints: opened by the customer, answered by the merchant within its reply deadline, every
//! message kept, escalated to the platform when unanswered, closed with a resolution.

use serde_json::json;
use sqlx::PgPool;

use super::{add_message, complaint_delivery_id, refused, tell, Case};
use crate::{
    domain::{after_sales::Author, order::Rejection},
    store::orders::Tx,
};

const COMPLAINT_CASE: &str = "SELECT c.id, c.order_id, c.sub_order_id, c.merchant_id, o.storefront_order_id,
            c.storefront_complaint_id AS storefront_id, c.status
     FROM complaints c JOIN orders o ON o.id = c.order_id";

async fn complaint_case(tx: &mut Tx<'_>, storefront_complaint_id: &str) -> Result<Option<Case>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{COMPLAINT_CASE} WHERE c.storefront_complaint_id = $1 FOR UPDATE OF c"
    ))
    .bind(storefront_complaint_id)
    .fetch_optional(&mut **tx)
    .await
}

/// A complaint as the storefront opened it.
pub struct NewComplaint<'a> {
    pub complaint_id: &'a str,
    pub storefront_order_id: &'a str,
    pub merchant_id: &'a str,
    pub subject: &'a str,
    pub message: &'a str,
}

/// Opens a complaint (once per storefront complaint id), routed to the sub-order's merchant with
/// a reply deadline `reply_s` away. Returns the order id.
pub async fn open_complaint(
    pool: &PgPool,
    job_id: &str,
    n: &NewComplaint<'_>,
    reply_s: u64,
) -> Result<Result<i64, Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let sub: Option<(i64, i64)> = sqlx::query_as(
        "SELECT s.id, s.order_id FROM sub_orders s JOIN orders o ON o.id = s.order_id
         WHERE o.storefront_order_id = $1 AND s.merchant_id = $2",
    )
    .bind(n.storefront_order_id)
    .bind(n.merchant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((sub, order_id)) = sub else {
        return Ok(Err(refused(
            "unknown_sub_order",
            format!(
                "no sub-order of {:?} for merchant {:?}",
                n.storefront_order_id, n.merchant_id
            ),
        )));
    };
    let inserted: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "INSERT INTO complaints (storefront_complaint_id, order_id, sub_order_id, merchant_id, subject, reply_by)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
         ON CONFLICT (storefront_complaint_id) DO NOTHING RETURNING id, reply_by",
    )
    .bind(n.complaint_id)
    .bind(order_id)
    .bind(sub)
    .bind(n.merchant_id)
    .bind(n.subject)
    .bind(reply_s as f64)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, reply_by)) = inserted else {
        let other: i64 =
            sqlx::query_scalar("SELECT sub_order_id FROM complaints WHERE storefront_complaint_id = $1")
                .bind(n.complaint_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        return Ok(if other == sub {
            Ok(order_id)
        } else {
            Err(refused(
                "duplicate_complaint_id",
                format!(
                    "complaint id {:?} is already used for another sub-order",
                    n.complaint_id
                ),
            ))
        });
    };
    add_message(
        &mut tx,
        Some(id),
        None,
        "customer",
        "message",
        n.message,
        Some(job_id),
    )
    .await?;
    let c = Case {
        id,
        order_id,
        sub_order_id: sub,
        merchant_id: n.merchant_id.to_owned(),
        storefront_order_id: n.storefront_order_id.to_owned(),
        storefront_id: n.complaint_id.to_owned(),
        status: "open".into(),
    };
    tell(
        &mut tx,
        &c,
        Some(&complaint_delivery_id(id, "opened")),
        "complaint.opened",
        "customer",
        None,
        json!({"complaint_id": n.complaint_id, "subject": n.subject, "message": n.message, "reply_by": reply_by}),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(order_id))
}

/// A message on a complaint. The merchant's reply answers it; the customer writing again reopens
/// an answered case with a new deadline; the platform's word changes no status. Messages for the
/// merchant (customer's, platform's) go to it as webhooks. Returns the order id.
pub async fn complaint_message(
    pool: &PgPool,
    job_id: &str,
    storefront_complaint_id: &str,
    author: Author,
    message: &str,
    reply_s: u64,
) -> Result<Result<i64, Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(c) = complaint_case(&mut tx, storefront_complaint_id).await? else {
        return Ok(Err(refused(
            "unknown_complaint",
            format!("no complaint {storefront_complaint_id:?}"),
        )));
    };
    if c.status == "closed" {
        return Ok(Err(refused("complaint_closed", "the complaint is closed".into())));
    }
    let Some(msg_id) = add_message(
        &mut tx,
        Some(c.id),
        None,
        author.as_str(),
        "message",
        message,
        Some(job_id),
    )
    .await?
    else {
        tx.commit().await?;
        return Ok(Ok(c.order_id)); // this message was recorded before
    };
    match (author, c.status.as_str()) {
        (Author::Merchant, "open") => {
            sqlx::query("UPDATE complaints SET status = 'answered', updated_at = now() WHERE id = $1")
                .bind(c.id)
                .execute(&mut *tx)
                .await?;
        }
        (Author::Customer, "answered") => {
            sqlx::query(
                "UPDATE complaints SET status = 'open', reply_by = now() + make_interval(secs => $2), updated_at = now()
                 WHERE id = $1",
            )
            .bind(c.id)
            .bind(reply_s as f64)
            .execute(&mut *tx)
            .await?;
        }
        _ => {}
    }
    let delivery = (author != Author::Merchant).then(|| complaint_delivery_id(c.id, &format!("m{msg_id}")));
    tell(
        &mut tx,
        &c,
        delivery.as_deref(),
        "complaint.message",
        author.as_str(),
        None,
        json!({"complaint_id": storefront_complaint_id, "author": author.as_str(), "message": message}),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(c.order_id))
}

/// Closes a complaint with its resolution (the merchant told). Returns the order id.
pub async fn close_complaint(
    pool: &PgPool,
    job_id: &str,
    storefront_complaint_id: &str,
    by: Author,
    resolution: &str,
) -> Result<Result<i64, Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(c) = complaint_case(&mut tx, storefront_complaint_id).await? else {
        return Ok(Err(refused(
            "unknown_complaint",
            format!("no complaint {storefront_complaint_id:?}"),
        )));
    };
    if c.status == "closed" {
        tx.commit().await?;
        return Ok(Ok(c.order_id));
    }
    sqlx::query(
        "UPDATE complaints SET status = 'closed', closed_at = now(), resolution = $2, updated_at = now() WHERE id = $1",
    )
    .bind(c.id)
    .bind(resolution)
    .execute(&mut *tx)
    .await?;
    add_message(
        &mut tx,
        Some(c.id),
        None,
        by.as_str(),
        "decision",
        &format!("closed: {resolution}"),
        Some(job_id),
    )
    .await?;
    tell(
        &mut tx,
        &c,
        Some(&complaint_delivery_id(c.id, "closed")),
        "complaint.closed",
        by.as_str(),
        Some(resolution),
        json!({"complaint_id": storefront_complaint_id, "by": by.as_str(), "resolution": resolution}),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(c.order_id))
}

/// Escalates complaints still waiting for the merchant past their deadline to the platform
/// (an outcome event for the platform's team, a webhook for the merchant); returns the order ids.
pub async fn escalate_overdue(pool: &PgPool, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<Case> = sqlx::query_as(&format!(
        "{COMPLAINT_CASE} WHERE c.id IN (SELECT id FROM complaints WHERE status = 'open' AND reply_by < now()
                                       ORDER BY reply_by LIMIT $1 FOR UPDATE SKIP LOCKED)"
    ))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for c in &due {
        let reply_by: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "UPDATE complaints SET status = 'escalated', escalated_at = now(), updated_at = now()
             WHERE id = $1 RETURNING reply_by",
        )
        .bind(c.id)
        .fetch_one(&mut *tx)
        .await?;
        let why = format!("no reply from the merchant by {}", reply_by.to_rfc3339());
        add_message(
            &mut tx,
            Some(c.id),
            None,
            "souk",
            "decision",
            &format!("escalated to the platform: {why}"),
            None,
        )
        .await?;
        tell(
            &mut tx,
            c,
            Some(&complaint_delivery_id(c.id, "escalated")),
            "complaint.escalated",
            "souk:deadline",
            Some(&why),
            json!({"complaint_id": c.storefront_id}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(due.into_iter().map(|c| c.order_id).collect())
}
