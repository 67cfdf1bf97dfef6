//! SQL of settlement: ledger journals (append-only, balanced: enforced by the database, see
//! migrations/0005_settlement.sql) and payouts.

use sqlx::PgPool;

use super::orders::Tx;

/// One journal line: account, signed amount.
type Line = (String, i64);

/// Where a journal belongs.
struct About<'a> {
    merchant: &'a str,
    order_id: i64,
    sub_order_id: i64,
    currency: &'a str,
}

async fn post_journal(
    tx: &mut Tx<'_>,
    journal: &str,
    about: &About<'_>,
    memo: &str,
    lines: &[Line],
) -> Result<bool, sqlx::Error> {
    debug_assert_eq!(
        lines.iter().map(|l| l.1).sum::<i64>(),
        0,
        "journal {journal} must balance"
    );
    let accounts: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    let amounts: Vec<i64> = lines.iter().map(|l| l.1).collect();
    let n = sqlx::query(
        "INSERT INTO ledger_entries (journal, account, merchant_id, order_id, sub_order_id, amount_minor, currency, memo)
         SELECT $1, a, $2, $3, $4, x, $5, $6 FROM UNNEST($7::text[], $8::int8[]) AS u(a, x)
         ON CONFLICT (journal, account) DO NOTHING",
    )
    .bind(journal)
    .bind(about.merchant)
    .bind(about.order_id)
    .bind(about.sub_order_id)
    .bind(about.currency)
    .bind(memo)
    .bind(&accounts)
    .bind(&amounts)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Settles a completed sub-order (once): the customer's money for it leaves clearing, the
/// platform keeps the commission, the merchant is owed the rest; a payout is queued when the
/// merchant has a payout account and is owed something. Goods returned and refunded before
/// completion are left out, with their share of the commission. Returns whether a payout row
/// was created.
pub async fn settle_sub_order(tx: &mut Tx<'_>, sub_order_id: i64) -> Result<bool, sqlx::Error> {
    let (order_id, merchant, subtotal, commission, currency, sf, account): (
        i64,
        String,
        i64,
        i64,
        String,
        String,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT s.order_id, s.merchant_id,
                s.subtotal_minor - coalesce(r.refund, 0), s.commission_minor - coalesce(r.commission, 0),
                o.currency, o.storefront_order_id, m.payout_account
         FROM sub_orders s JOIN orders o ON o.id = s.order_id JOIN merchants m ON m.id = s.merchant_id
         LEFT JOIN LATERAL (SELECT sum(refund_minor)::bigint AS refund, sum(commission_minor)::bigint AS commission
                            FROM returns WHERE sub_order_id = s.id AND status = 'refunded') r ON true
         WHERE s.id = $1",
    )
    .bind(sub_order_id)
    .fetch_one(&mut **tx)
    .await?;
    let payable = subtotal - commission;
    post_journal(
        tx,
        &format!("settle:{sub_order_id}"),
        &About {
            merchant: &merchant,
            order_id,
            sub_order_id,
            currency: &currency,
        },
        "sub-order completed: commission kept, the rest owed to the merchant",
        &[
            ("clearing".to_owned(), -subtotal),
            ("platform_commission".to_owned(), commission),
            (format!("merchant_payable:{merchant}"), payable),
        ],
    )
    .await?;
    let Some(destination) = account.filter(|_| payable > 0) else {
        return Ok(false);
    };
    let n = sqlx::query(
        "INSERT INTO payouts (sub_order_id, merchant_id, order_id, amount_minor, currency, destination, transfer_group)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sub_order_id) DO NOTHING",
    )
    .bind(sub_order_id)
    .bind(&merchant)
    .bind(order_id)
    .bind(payable)
    .bind(&currency)
    .bind(&destination)
    .bind(&sf)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A return refunded after its sub-order was settled: the refund leaves the platform again
/// (clearing), the platform gives back its commission share, the merchant's payable bears the
/// rest (journal `return:<id>`, once).
#[allow(clippy::too_many_arguments)]
pub async fn post_return(
    tx: &mut Tx<'_>,
    return_id: i64,
    merchant: &str,
    order_id: i64,
    sub_order_id: i64,
    currency: &str,
    refund: i64,
    commission: i64,
) -> Result<bool, sqlx::Error> {
    post_journal(
        tx,
        &format!("return:{return_id}"),
        &About {
            merchant,
            order_id,
            sub_order_id,
            currency,
        },
        "goods returned after settlement: refund taken back from the merchant, commission share given back",
        &[
            ("clearing".to_owned(), refund),
            ("platform_commission".to_owned(), -commission),
            (format!("merchant_payable:{merchant}"), commission - refund),
        ],
    )
    .await
}

/// A payout reversal to make: what, from which transfer, and where things stand.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reversal {
    pub return_id: i64,
    pub sub_order_id: i64,
    pub merchant_id: String,
    pub order_id: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub payout_status: String,
    pub transfer_id: Option<String>,
}

pub async fn reversal(pool: &PgPool, return_id: i64) -> Result<Option<Reversal>, sqlx::Error> {
    sqlx::query_as(
        "SELECT v.return_id, v.sub_order_id, v.merchant_id, p.order_id, v.amount_minor, v.currency, v.status,
                p.status AS payout_status, p.provider_transfer_id AS transfer_id
         FROM payout_reversals v JOIN payouts p ON p.sub_order_id = v.sub_order_id WHERE v.return_id = $1",
    )
    .bind(return_id)
    .fetch_optional(pool)
    .await
}

pub async fn pending_reversals(pool: &PgPool, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT return_id FROM payout_reversals WHERE status = 'pending' ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records a reversal made: done, and its journal (payouts → payable), once.
pub async fn mark_reversed(pool: &PgPool, r: &Reversal, reversal_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE payout_reversals SET status = 'done', provider_reversal_id = $2, done_at = now(), error = NULL
         WHERE return_id = $1 AND status <> 'done'",
    )
    .bind(r.return_id)
    .bind(reversal_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        post_journal(
            &mut tx,
            &format!("reversal:{}", r.return_id),
            &About {
                merchant: &r.merchant_id,
                order_id: r.order_id,
                sub_order_id: r.sub_order_id,
                currency: &r.currency,
            },
            reversal_id,
            &[
                ("payouts".to_owned(), -r.amount_minor),
                (format!("merchant_payable:{}", r.merchant_id), r.amount_minor),
            ],
        )
        .await?;
    }
    tx.commit().await
}

/// A reversal that cannot be made (the payout it would take from was never made, or the
/// provider refused): recorded with why; the merchant's payable keeps the debt.
pub async fn reversal_failed(pool: &PgPool, return_id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payout_reversals SET status = 'failed', error = $2 WHERE return_id = $1 AND status = 'pending'")
        .bind(return_id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Payout {
    pub sub_order_id: i64,
    pub merchant_id: String,
    pub order_id: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub destination: String,
    pub transfer_group: String,
    pub status: String,
}

pub async fn payout(pool: &PgPool, sub_order_id: i64) -> Result<Option<Payout>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sub_order_id, merchant_id, order_id, amount_minor, currency, destination, transfer_group, status
         FROM payouts WHERE sub_order_id = $1",
    )
    .bind(sub_order_id)
    .fetch_optional(pool)
    .await
}

pub async fn pending_payouts(pool: &PgPool, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT sub_order_id FROM payouts WHERE status = 'pending' ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records a payout made: the payout paid and its journal (payable → payouts), once.
pub async fn mark_paid(pool: &PgPool, p: &Payout, transfer_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE payouts SET status = 'paid', provider_transfer_id = $2, paid_at = now(), error = NULL
         WHERE sub_order_id = $1 AND status <> 'paid'",
    )
    .bind(p.sub_order_id)
    .bind(transfer_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        post_journal(
            &mut tx,
            &format!("payout:{}", p.sub_order_id),
            &About {
                merchant: &p.merchant_id,
                order_id: p.order_id,
                sub_order_id: p.sub_order_id,
                currency: &p.currency,
            },
            transfer_id,
            &[
                (format!("merchant_payable:{}", p.merchant_id), -p.amount_minor),
                ("payouts".to_owned(), p.amount_minor),
            ],
        )
        .await?;
    }
    tx.commit().await
}

pub async fn mark_failed(pool: &PgPool, sub_order_id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payouts SET status = 'failed', error = $2 WHERE sub_order_id = $1 AND status = 'pending'",
    )
    .bind(sub_order_id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets (or clears) a merchant's payout account; `false` for an unknown merchant.
pub async fn set_payout_account(
    pool: &PgPool,
    merchant: &str,
    account: Option<&str>,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("UPDATE merchants SET payout_account = $2, updated_at = now() WHERE id = $1")
            .bind(merchant)
            .bind(account)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}
