//! Follow-up work recorded in the state (migration 0014): the order's adjustment mark, what an
//! order's state says must still be pushed, and what the sweep finds outstanding for too long.
//! See docs/queue.md, "Follow-up work no crash can lose".

use sqlx::PgPool;

use super::orders::Tx;

/// Marks the order's charge as due for adjustment, inside the transaction that changed what
/// ships (migration 0014). Each mark is later than the one before, so an adjustment that read
/// an older mark (and the target of that moment) cannot clear this one.
pub async fn mark_adjust_due(tx: &mut Tx<'_>, order_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET adjust_due_at = greatest(clock_timestamp(),
                coalesce(adjust_due_at, '-infinity'::timestamptz) + interval '1 microsecond')
         WHERE id = $1",
    )
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Clears the mark `seen`, which the adjustment read together with the target it has now made
/// the charge match; a mark set since stays for the next run.
pub async fn clear_adjust_due(
    pool: &PgPool,
    order_id: i64,
    seen: chrono::DateTime<chrono::Utc>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE orders SET adjust_due_at = NULL WHERE id = $1 AND adjust_due_at = $2")
        .bind(order_id)
        .bind(seen)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// What an order's state says must still be pushed: the deadline job of every sub-order
/// awaiting its merchant, the job of every webhook not yet delivered, and the adjustment of the
/// charge when one is due. Reading it after a commit (and again on every rerun) is what makes a
/// crash between a commit and its pushes harmless: the pushes are idempotent by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outstanding {
    pub order_id: i64,
    /// Sub-orders awaiting their merchant's decision, with the deadline.
    pub awaiting: Vec<(i64, chrono::DateTime<chrono::Utc>)>,
    /// Webhook deliveries of the order still pending.
    pub pending_deliveries: Vec<String>,
    /// The order's adjustment mark, when the charge must still follow what ships.
    pub adjust_due: Option<chrono::DateTime<chrono::Utc>>,
}

/// [`Outstanding`] of one order, in one statement.
pub async fn outstanding(pool: &PgPool, order_id: i64) -> Result<Outstanding, sqlx::Error> {
    type Row = (
        Option<i64>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT NULL::bigint, NULL::timestamptz, NULL::text, adjust_due_at FROM orders WHERE id = $1
         UNION ALL
         SELECT id, accept_by, NULL, NULL FROM sub_orders
         WHERE order_id = $1 AND status = 'awaiting_acceptance' AND accept_by IS NOT NULL
         UNION ALL
         SELECT NULL, NULL, id, NULL FROM webhook_deliveries WHERE order_id = $1 AND status = 'pending'",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    let mut out = Outstanding {
        order_id,
        ..Default::default()
    };
    for (sub, at, delivery, due) in rows {
        match (sub, at, delivery, due) {
            (Some(sub), Some(at), _, _) => out.awaiting.push((sub, at)),
            (_, _, Some(d), _) => out.pending_deliveries.push(d),
            (_, _, _, Some(due)) => out.adjust_due = Some(due),
            _ => {}
        }
    }
    out.awaiting.sort_unstable();
    out.pending_deliveries.sort_unstable();
    Ok(out)
}

/// Orders whose adjustment mark is older than `grace_s` (its job lost, or still retrying),
/// oldest first, with the mark.
pub async fn adjust_overdue(
    pool: &PgPool,
    grace_s: u64,
    limit: i64,
) -> Result<Vec<(i64, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, adjust_due_at FROM orders
         WHERE adjust_due_at IS NOT NULL AND adjust_due_at < now() - make_interval(secs => $1)
         ORDER BY adjust_due_at LIMIT $2",
    )
    .bind(grace_s as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Sub-orders still awaiting a decision `grace_s` past their deadline (their deadline job lost).
pub async fn decisions_overdue(pool: &PgPool, grace_s: u64, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM sub_orders
         WHERE status = 'awaiting_acceptance' AND accept_by < now() - make_interval(secs => $1)
         ORDER BY accept_by LIMIT $2",
    )
    .bind(grace_s as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}
