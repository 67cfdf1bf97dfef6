//! SQL of merchants and their stock.

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::orders::{add_event, mark_applied, Tx};

/// A merchant as `souk merchants list` and the admin API show it (secrets never included).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    /// Shown redacted (user info and query values masked): merchants put tokens there.
    #[serde(serialize_with = "redacted")]
    pub webhook_url: String,
    pub acceptance_mode: String,
    pub acceptance_default: String,
    pub acceptance_deadline_s: i32,
    pub commission_bps: i32,
    pub secrets: i32,
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    pub endpoint_disabled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub endpoint_disabled_reason: Option<String>,
    pub webhook_version: i16,
}

/// Fields to create or change a merchant.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantInput {
    pub name: Option<String>,
    pub webhook_url: Option<String>,
    pub acceptance_mode: Option<String>,
    pub acceptance_default: Option<String>,
    pub acceptance_deadline_s: Option<i32>,
    pub commission_bps: Option<i32>,
    /// The webhook body version, 1 or 2 (docs/webhooks.md); new merchants get 2.
    #[serde(default)]
    pub webhook_version: Option<i16>,
}

const SELECT: &str = "SELECT id, name, webhook_url, acceptance_mode, acceptance_default, acceptance_deadline_s,
        commission_bps, cardinality(signing_secrets) AS secrets, failing_since, endpoint_disabled_at, endpoint_disabled_reason,
        webhook_version
        FROM merchants";

pub async fn list(pool: &PgPool) -> Result<Vec<Merchant>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} ORDER BY id"))
        .fetch_all(pool)
        .await
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Merchant>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Creates a merchant with its first signing secret; false if the id exists.
pub async fn create(
    pool: &PgPool,
    id: &str,
    input: &MerchantInput,
    secret: &str,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO merchants (id, name, webhook_url, signing_secrets, acceptance_mode, acceptance_default,
                                acceptance_deadline_s, commission_bps, webhook_version)
         VALUES ($1, $2, $3, ARRAY[$4], coalesce($5, 'manual'), coalesce($6, 'accept'), coalesce($7, 86400), coalesce($8, 1000),
                 coalesce($9, 2))
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(input.name.as_deref().unwrap_or(id))
    .bind(input.webhook_url.as_deref().unwrap_or_default())
    .bind(secret)
    .bind(&input.acceptance_mode)
    .bind(&input.acceptance_default)
    .bind(input.acceptance_deadline_s)
    .bind(input.commission_bps)
    .bind(input.webhook_version)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Changes the given fields; a new URL re-enables a disabled endpoint. False if no such merchant.
pub async fn update(pool: &PgPool, id: &str, input: &MerchantInput) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE merchants SET name = coalesce($2, name), webhook_url = coalesce($3, webhook_url),
                acceptance_mode = coalesce($4, acceptance_mode), acceptance_default = coalesce($5, acceptance_default),
                acceptance_deadline_s = coalesce($6, acceptance_deadline_s), commission_bps = coalesce($7, commission_bps),
                webhook_version = coalesce($8, webhook_version),
                endpoint_disabled_at = CASE WHEN $3 IS NULL THEN endpoint_disabled_at END,
                endpoint_disabled_reason = CASE WHEN $3 IS NULL THEN endpoint_disabled_reason END,
                failing_since = CASE WHEN $3 IS NULL THEN failing_since END,
                updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&input.name)
    .bind(&input.webhook_url)
    .bind(&input.acceptance_mode)
    .bind(&input.acceptance_default)
    .bind(input.acceptance_deadline_s)
    .bind(input.commission_bps)
    .bind(input.webhook_version)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Puts a new secret first; keeps the previous one (both sign during the rotation) unless
/// `drop_old`, which leaves only the new one.
pub async fn rotate_secret(
    pool: &PgPool,
    id: &str,
    secret: &str,
    drop_old: bool,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE merchants SET signing_secrets = CASE WHEN $3 THEN ARRAY[$2] ELSE ARRAY[$2, signing_secrets[1]] END,
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(secret)
    .bind(drop_old)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

fn redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::domain::address::redact_webhook_url(url))
}

/// A SKU's stock after an inventory command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    pub on_hand: i32,
    pub reserved: i32,
}

/// Why an inventory command was not applied: a stable code (docs/storefront.md) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRefusal {
    pub code: &'static str,
    pub message: String,
}

fn refusal(code: &'static str, message: String) -> StockRefusal {
    StockRefusal { code, message }
}

/// Sets a SKU's stock on hand (creating it); never below what is reserved. `on_hand` must be
/// in the column's range (0 to 2^31 − 1): values outside it are refused, never clamped.
pub async fn set_stock(
    tx: &mut Tx<'_>,
    merchant: &str,
    sku: &str,
    on_hand: i64,
) -> Result<Result<StockLevel, StockRefusal>, sqlx::Error> {
    let Ok(on_hand) = i32::try_from(on_hand)
        .map_err(drop)
        .and_then(|v| if v < 0 { Err(()) } else { Ok(v) })
    else {
        return Ok(Err(refusal(
            "quantity_out_of_range",
            format!("on_hand {on_hand} is outside 0..={}", i32::MAX),
        )));
    };
    let r: Option<(i32, i32)> = sqlx::query_as(
        "INSERT INTO stock (merchant_id, sku, on_hand) VALUES ($1, $2, $3)
         ON CONFLICT (merchant_id, sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()
         WHERE stock.reserved <= EXCLUDED.on_hand RETURNING on_hand, reserved",
    )
    .bind(merchant)
    .bind(sku)
    .bind(on_hand)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match r {
        Some((on_hand, reserved)) => Ok(StockLevel { on_hand, reserved }),
        None => Err(refusal(
            "below_reserved",
            format!("on_hand {on_hand} would fall below the stock already reserved"),
        )),
    })
}

/// Adds `delta` to a SKU's stock on hand: refused when the SKU does not exist, when the result
/// would fall below what is reserved, or leave the column's range (computed in 64 bits, so
/// nothing wraps or clamps).
pub async fn adjust_stock(
    tx: &mut Tx<'_>,
    merchant: &str,
    sku: &str,
    delta: i64,
) -> Result<Result<StockLevel, StockRefusal>, sqlx::Error> {
    let row: Option<(i32, i32)> =
        sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE merchant_id = $1 AND sku = $2 FOR UPDATE")
            .bind(merchant)
            .bind(sku)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((on_hand, reserved)) = row else {
        return Ok(Err(refusal(
            "unknown_sku",
            format!("merchant {merchant:?} has no SKU {sku:?}; create it with inventory.set"),
        )));
    };
    let Some(next) = i64::from(on_hand).checked_add(delta) else {
        return Ok(Err(refusal(
            "quantity_out_of_range",
            format!("delta {delta} is out of range"),
        )));
    };
    if next < i64::from(reserved) {
        return Ok(Err(refusal(
            "below_reserved",
            format!("on_hand {on_hand} + {delta} = {next} would fall below the {reserved} reserved"),
        )));
    }
    let Ok(next) = i32::try_from(next) else {
        return Ok(Err(refusal(
            "quantity_out_of_range",
            format!("on_hand {on_hand} + {delta} = {next} is over {}", i32::MAX),
        )));
    };
    sqlx::query("UPDATE stock SET on_hand = $3, updated_at = now() WHERE merchant_id = $1 AND sku = $2")
        .bind(merchant)
        .bind(sku)
        .bind(next)
        .execute(&mut **tx)
        .await?;
    Ok(Ok(StockLevel {
        on_hand: next,
        reserved,
    }))
}

/// Applies an inventory command once per job id, with its outcome event (`inventory.set` /
/// `inventory.adjusted`, carrying the resulting on-hand and reserved) in the same transaction.
/// `Ok(None)`: applied before.
pub async fn apply_inventory(
    pool: &PgPool,
    job_id: &str,
    merchant: &str,
    sku: &str,
    set: Option<i64>,
    delta: Option<i64>,
) -> Result<Result<Option<StockLevel>, StockRefusal>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM merchants WHERE id = $1")
        .bind(merchant)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(Err(refusal(
            "unknown_merchant",
            format!("merchant {merchant:?} is not known"),
        )));
    }
    if !mark_applied(&mut tx, job_id).await? {
        return Ok(Ok(None));
    }
    let (kind, res) = match (set, delta) {
        (Some(v), _) => ("inventory.set", set_stock(&mut tx, merchant, sku, v).await?),
        (_, Some(d)) => (
            "inventory.adjusted",
            adjust_stock(&mut tx, merchant, sku, d).await?,
        ),
        _ => return Ok(Ok(None)),
    };
    match res {
        Ok(level) => {
            add_event(
                &mut tx,
                None,
                None,
                None,
                kind,
                "storefront",
                None,
                json!({"merchant_id": merchant, "sku": sku, "on_hand": level.on_hand,
                       "reserved": level.reserved, "delta": delta}),
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(Some(level)))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// (on hand, reserved) of a SKU.
pub async fn stock(pool: &PgPool, merchant: &str, sku: &str) -> Result<Option<(i32, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE merchant_id = $1 AND sku = $2")
        .bind(merchant)
        .bind(sku)
        .fetch_optional(pool)
        .await
}
