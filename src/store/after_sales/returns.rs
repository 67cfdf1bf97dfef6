//! Returns: requested by the customer, approved or refused by the merchant (or by the default at
//! the deadline), the parcel sent back, received (restocked when sellable), refunded once the
//! charge matches, and the payout reversed when the sub-order was already paid out.

use super::*;

const RETURN_CASE: &str = "SELECT r.id, r.order_id, r.sub_order_id, r.merchant_id, o.storefront_order_id,
            r.storefront_return_id AS storefront_id, r.status
     FROM returns r JOIN orders o ON o.id = r.order_id";

async fn return_case(tx: &mut Tx<'_>, storefront_return_id: &str) -> Result<Option<Case>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{RETURN_CASE} WHERE r.storefront_return_id = $1 FOR UPDATE OF r"
    ))
    .bind(storefront_return_id)
    .fetch_optional(&mut **tx)
    .await
}

/// A sub-order as a return request needs it.
#[derive(sqlx::FromRow)]
struct Returnable {
    id: i64,
    order_id: i64,
    status: String,
    shipped: bool,
    window_closed: bool,
    subtotal_minor: i64,
    commission_minor: i64,
}

/// A received return, once the charge no longer includes it.
#[derive(sqlx::FromRow)]
struct DueRefund {
    #[sqlx(flatten)]
    case: Case,
    refund_minor: i64,
    commission_minor: i64,
    currency: String,
    settled: bool,
    payout_status: Option<String>,
}

/// A return request as the storefront sent it.
pub struct ReturnRequest<'a> {
    pub return_id: &'a str,
    pub storefront_order_id: &'a str,
    pub merchant_id: &'a str,
    pub lines: &'a [ItemLine],
    pub reason: Option<&'a str>,
}

/// Records a return request (once per storefront return id) against a shipped sub-order, within
/// the return window after delivery; the merchant is to answer within `response_s`. Returns the
/// order id (whose pending webhooks the caller pushes).
pub async fn request_return(
    pool: &PgPool,
    job_id: &str,
    r: &ReturnRequest<'_>,
    window_s: u64,
    response_s: u64,
) -> Result<Result<i64, Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The sub-order's row lock serialises requests against the same goods.
    let sub: Option<Returnable> = sqlx::query_as(
        "SELECT s.id, s.order_id, s.status, s.shipped_at IS NOT NULL AS shipped,
                    coalesce(s.delivered_at < now() - make_interval(secs => $3), false) AS window_closed,
                    s.subtotal_minor, s.commission_minor
             FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id = $1 AND s.merchant_id = $2 FOR UPDATE OF s",
    )
    .bind(r.storefront_order_id)
    .bind(r.merchant_id)
    .bind(window_s as f64)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Returnable {
        id: sub,
        order_id,
        status,
        shipped,
        window_closed,
        subtotal_minor: subtotal,
        commission_minor: commission,
    }) = sub
    else {
        return Ok(Err(refused(
            "unknown_sub_order",
            format!(
                "no sub-order of {:?} for merchant {:?}",
                r.storefront_order_id, r.merchant_id
            ),
        )));
    };
    let existing: Option<(i64, i64)> =
        sqlx::query_as("SELECT id, sub_order_id FROM returns WHERE storefront_return_id = $1")
            .bind(r.return_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((_, other)) = existing {
        tx.commit().await?;
        return Ok(if other == sub {
            Ok(order_id) // the same request again
        } else {
            Err(refused(
                "duplicate_return_id",
                format!(
                    "return id {:?} is already used for another sub-order",
                    r.return_id
                ),
            ))
        });
    }
    if !matches!(status.as_str(), "accepted" | "completed") || !shipped {
        return Ok(Err(refused(
            "not_returnable",
            format!(
                "the sub-order is {status}{}; only shipped goods can be returned",
                if shipped { "" } else { " and not shipped" }
            ),
        )));
    }
    if window_closed {
        return Ok(Err(refused(
            "return_window_closed",
            format!("delivered more than {} days ago", window_s / 86_400),
        )));
    }
    let ordered: BTreeMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i32, i64)>(
        "SELECT sku, quantity, unit_price_minor FROM order_lines WHERE sub_order_id = $1",
    )
    .bind(sub)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(s, q, p)| (s, (q as i64, p)))
    .collect();
    let claimed: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT l.sku, sum(l.quantity)::bigint FROM return_lines l JOIN returns r ON r.id = l.return_id
         WHERE r.sub_order_id = $1 AND r.status <> 'refused' GROUP BY l.sku",
    )
    .bind(sub)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let commission_given: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(commission_minor), 0)::bigint FROM returns WHERE sub_order_id = $1 AND status <> 'refused'",
    )
    .bind(sub)
    .fetch_one(&mut *tx)
    .await?;
    let lines = match plan_return(r.lines, &ordered, &claimed) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let refund = refund_of(&lines);
    let share = commission_share(commission, subtotal, refund, commission - commission_given);
    let (id, respond_by): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "INSERT INTO returns (storefront_return_id, order_id, sub_order_id, merchant_id, reason, refund_minor,
                commission_minor, respond_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8)) RETURNING id, respond_by",
    )
    .bind(r.return_id)
    .bind(order_id)
    .bind(sub)
    .bind(r.merchant_id)
    .bind(r.reason)
    .bind(refund)
    .bind(share)
    .bind(response_s as f64)
    .fetch_one(&mut *tx)
    .await?;
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let qty: Vec<i32> = lines.iter().map(|l| l.quantity as i32).collect();
    let price: Vec<i64> = lines.iter().map(|l| l.unit_price_minor).collect();
    sqlx::query(
        "INSERT INTO return_lines (return_id, sku, quantity, unit_price_minor)
         SELECT $1, u.sku, u.q, u.p FROM UNNEST($2::text[], $3::int4[], $4::int8[]) AS u(sku, q, p)",
    )
    .bind(id)
    .bind(&skus)
    .bind(&qty)
    .bind(&price)
    .execute(&mut *tx)
    .await?;
    add_message(
        &mut tx,
        None,
        Some(id),
        "customer",
        "message",
        r.reason.unwrap_or("return requested"),
        Some(job_id),
    )
    .await?;
    let c = Case {
        id,
        order_id,
        sub_order_id: sub,
        merchant_id: r.merchant_id.to_owned(),
        storefront_order_id: r.storefront_order_id.to_owned(),
        storefront_id: r.return_id.to_owned(),
        status: "requested".into(),
    };
    let lines_json: Vec<Value> = lines
        .iter()
        .map(|l| json!({"sku": l.sku, "quantity": l.quantity, "unit_price_minor": l.unit_price_minor}))
        .collect();
    tell(
        &mut tx,
        &c,
        Some(&return_delivery_id(id, "requested")),
        "return.requested",
        "customer",
        r.reason,
        json!({"return_id": r.return_id, "lines": lines_json, "refund_minor": refund, "respond_by": respond_by}),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(order_id))
}

async fn apply_return_decision(
    tx: &mut Tx<'_>,
    c: &Case,
    approve: bool,
    actor: &str,
    reason: Option<&str>,
    tell_merchant: bool,
) -> Result<(), sqlx::Error> {
    let to = if approve { "approved" } else { "refused" };
    sqlx::query(
        "UPDATE returns SET status = $2, decided_by = $3, decided_at = now(), decision_reason = $4, updated_at = now()
         WHERE id = $1 AND status = 'requested'",
    )
    .bind(c.id)
    .bind(to)
    .bind(actor)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    let author = if actor.starts_with("souk") {
        "souk"
    } else {
        "merchant"
    };
    add_message(
        tx,
        None,
        Some(c.id),
        author,
        "decision",
        &format!("{to}{}", reason.map(|r| format!(": {r}")).unwrap_or_default()),
        None,
    )
    .await?;
    let event = format!("return.{to}");
    let delivery = tell_merchant.then(|| return_delivery_id(c.id, to));
    tell(
        tx,
        c,
        delivery.as_deref(),
        &event,
        actor,
        reason,
        json!({"return_id": c.storefront_id}),
    )
    .await
}

/// The merchant's answer to a return request. Returns the order id.
pub async fn decide_return(
    pool: &PgPool,
    storefront_return_id: &str,
    approve: bool,
    reason: Option<&str>,
) -> Result<Result<i64, Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(c) = return_case(&mut tx, storefront_return_id).await? else {
        return Ok(Err(refused(
            "unknown_return",
            format!("no return {storefront_return_id:?}"),
        )));
    };
    let wanted = if approve { "approved" } else { "refused" };
    if c.status != "requested" {
        tx.commit().await?;
        return Ok(if c.status == wanted {
            Ok(c.order_id)
        } else {
            Err(refused(
                "decision_refused",
                format!("the return is {}; it cannot be {wanted} now", c.status),
            ))
        });
    }
    let actor = format!("merchant:{}", c.merchant_id);
    apply_return_decision(&mut tx, &c, approve, &actor, reason, false).await?;
    tx.commit().await?;
    Ok(Ok(c.order_id))
}

/// Applies `after_sales.return_default` to requests past their deadline (merchant told);
/// returns the order ids touched.
pub async fn expire_return_requests(
    pool: &PgPool,
    approve: bool,
    limit: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<Case> = sqlx::query_as(&format!(
        "{RETURN_CASE} WHERE r.id IN (SELECT id FROM returns WHERE status = 'requested' AND respond_by < now()
                                    ORDER BY respond_by LIMIT $1 FOR UPDATE SKIP LOCKED)"
    ))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for c in &due {
        apply_return_decision(
            &mut tx,
            c,
            approve,
            "souk:deadline",
            Some("no answer from the merchant by the deadline"),
            true,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(due.into_iter().map(|c| c.order_id).collect())
}

/// Whether a return may be shipped back, and what the parcel's shipment needs:
/// (return id, sub-order id, merchant).
pub async fn shippable_return(
    pool: &PgPool,
    storefront_return_id: &str,
) -> Result<Result<(i64, i64, String), Rejection>, sqlx::Error> {
    let row: Option<(i64, i64, String, String)> = sqlx::query_as(
        "SELECT id, sub_order_id, merchant_id, status FROM returns WHERE storefront_return_id = $1",
    )
    .bind(storefront_return_id)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Err(refused(
            "unknown_return",
            format!("no return {storefront_return_id:?}"),
        )),
        Some((id, sub, m, status))
            if status == "approved" || status == "received" || status == "refunded" =>
        {
            Ok((id, sub, m))
        }
        Some((_, _, _, status)) => Err(refused(
            "return_not_approved",
            format!("the return is {status}; only an approved return is sent back"),
        )),
    })
}

/// Marks an approved return received (once) with its event, and the order's charge due for
/// adjustment (the refund of what came back); true if it changed now.
pub async fn mark_received(
    tx: &mut Tx<'_>,
    return_id: i64,
    actor: &str,
    how: &str,
) -> Result<bool, sqlx::Error> {
    let c: Option<Case> = sqlx::query_as(&format!("{RETURN_CASE} WHERE r.id = $1 FOR UPDATE OF r"))
        .bind(return_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(c) = c else { return Ok(false) };
    if c.status != "approved" {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE returns SET status = 'received', received_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(return_id)
    .execute(&mut **tx)
    .await?;
    crate::store::follow_ups::mark_adjust_due(tx, c.order_id).await?;
    tell(
        tx,
        &c,
        Some(&return_delivery_id(c.id, "received")),
        "return.received",
        actor,
        Some(how),
        json!({"return_id": c.storefront_id}),
    )
    .await?;
    Ok(true)
}

/// The merchant has the goods back: the return is received (approving a request still open, since
/// the merchant took the goods), and the units go back into stock once when sellable. Returns
/// the order id.
pub async fn receive(
    pool: &PgPool,
    job_id: &str,
    storefront_return_id: &str,
    sellable: bool,
    note: Option<&str>,
) -> Result<Result<i64, Rejection>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(c) = return_case(&mut tx, storefront_return_id).await? else {
        return Ok(Err(refused(
            "unknown_return",
            format!("no return {storefront_return_id:?}"),
        )));
    };
    let actor = format!("merchant:{}", c.merchant_id);
    match c.status.as_str() {
        "refused" => {
            return Ok(Err(refused(
                "return_not_approved",
                "the return was refused; nothing is received against it".into(),
            )))
        }
        "requested" => {
            apply_return_decision(&mut tx, &c, true, &actor, Some("goods received"), false).await?
        }
        _ => {}
    }
    mark_received(&mut tx, c.id, &actor, "the merchant confirmed receipt").await?;
    let body = format!(
        "received; {}{}",
        if sellable { "sellable" } else { "not sellable" },
        note.map(|n| format!(": {n}")).unwrap_or_default()
    );
    add_message(
        &mut tx,
        None,
        Some(c.id),
        "merchant",
        "decision",
        &body,
        Some(job_id),
    )
    .await?;
    if sellable {
        let restocked = sqlx::query(
            "UPDATE returns SET restocked_at = now(), updated_at = now() WHERE id = $1 AND restocked_at IS NULL",
        )
        .bind(c.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if restocked {
            // Locked in SKU order like every other stock change, then put back.
            sqlx::query(
                "SELECT 1 FROM stock WHERE merchant_id = $1 AND sku IN (SELECT sku FROM return_lines WHERE return_id = $2)
                 ORDER BY sku FOR UPDATE",
            )
            .bind(&c.merchant_id)
            .bind(c.id)
            .fetch_all(&mut *tx)
            .await?;
            let back: Vec<(String, i32)> = sqlx::query_as(
                "UPDATE stock s SET on_hand = s.on_hand + l.quantity, updated_at = now()
                 FROM return_lines l WHERE l.return_id = $1 AND s.merchant_id = $2 AND s.sku = l.sku
                 RETURNING s.sku, l.quantity",
            )
            .bind(c.id)
            .bind(&c.merchant_id)
            .fetch_all(&mut *tx)
            .await?;
            let lines: Vec<Value> = back
                .iter()
                .map(|(s, q)| json!({"sku": s, "quantity": q}))
                .collect();
            tell(
                &mut tx,
                &c,
                None,
                "return.restocked",
                &actor,
                None,
                json!({"return_id": storefront_return_id, "lines": lines}),
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Ok(c.order_id))
}

/// After the payment was reconciled (the provider's net take ≤ the charge target, which already
/// excludes received returns): every received return of the order is refunded. A return whose
/// sub-order was already settled takes its refund back from the merchant's payable (journal
/// `return:<id>`) and, when the sub-order was paid out, from the payout (a reversal to make).
/// Returns the return ids that need a payout reversal.
pub async fn mark_refunded(pool: &PgPool, order_id: i64) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<DueRefund> = sqlx::query_as(
        "SELECT r.id, r.order_id, r.sub_order_id, r.merchant_id, o.storefront_order_id,
                r.storefront_return_id AS storefront_id, r.status, r.refund_minor, r.commission_minor, o.currency,
                s.status = 'completed' AS settled, p.status AS payout_status
         FROM returns r JOIN orders o ON o.id = r.order_id JOIN sub_orders s ON s.id = r.sub_order_id
         LEFT JOIN payouts p ON p.sub_order_id = r.sub_order_id
         WHERE r.order_id = $1 AND r.status = 'received' ORDER BY r.id FOR UPDATE OF r, s",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut reversals = Vec::new();
    for d in &due {
        let (c, refund, commission, settled) = (&d.case, d.refund_minor, d.commission_minor, d.settled);
        sqlx::query(
            "UPDATE returns SET status = 'refunded', refunded_at = now(), after_settlement = $2, updated_at = now()
             WHERE id = $1",
        )
        .bind(c.id)
        .bind(settled)
        .execute(&mut *tx)
        .await?;
        if settled {
            let back = refund - commission;
            crate::store::settlement::post_return(
                &mut tx,
                c.id,
                &c.merchant_id,
                c.order_id,
                c.sub_order_id,
                &d.currency,
                refund,
                commission,
            )
            .await?;
            if d.payout_status.is_some() && back > 0 {
                sqlx::query(
                    "INSERT INTO payout_reversals (return_id, sub_order_id, merchant_id, amount_minor, currency)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (return_id) DO NOTHING",
                )
                .bind(c.id)
                .bind(c.sub_order_id)
                .bind(&c.merchant_id)
                .bind(back)
                .bind(&d.currency)
                .execute(&mut *tx)
                .await?;
                reversals.push(c.id);
            }
        }
        tell(
            &mut tx,
            c,
            Some(&return_delivery_id(c.id, "refunded")),
            "return.refunded",
            "souk:payment",
            None,
            json!({"return_id": c.storefront_id, "refund_minor": refund, "after_settlement": settled}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(reversals)
}

// ---------------------------------------------------------------------------------------------
// Complaints
