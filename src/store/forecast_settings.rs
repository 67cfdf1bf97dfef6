//! SQL of a merchant's forecast settings: stock-out threshold, time zone, period (days or
//! weeks) and lead times. NULL settings mean the configured defaults.

use sqlx::PgPool;

use crate::domain::forecast::Period;

/// Sets whether a merchant's history and forecasts are daily or weekly; false when there is no
/// such merchant. Its next run reads its history by that period.
pub async fn set_period(pool: &PgPool, merchant: &str, period: Period) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE merchants SET forecast_period = $2, updated_at = now() WHERE id = $1")
        .bind(merchant)
        .bind(period.as_str())
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// A merchant's period (`None`: no such merchant).
pub async fn period(pool: &PgPool, merchant: &str) -> Result<Option<Period>, sqlx::Error> {
    let p: Option<String> = sqlx::query_scalar("SELECT forecast_period FROM merchants WHERE id = $1")
        .bind(merchant)
        .fetch_optional(pool)
        .await?;
    Ok(p.map(|p| Period::parse(&p).unwrap_or_default()))
}

/// Sets (or with `None` clears) a merchant's stock-out threshold; false if no such merchant.
pub async fn set_warn_probability(
    pool: &PgPool,
    merchant: &str,
    p: Option<f64>,
) -> Result<bool, sqlx::Error> {
    let n =
        sqlx::query("UPDATE merchants SET forecast_warn_probability = $2, updated_at = now() WHERE id = $1")
            .bind(merchant)
            .bind(p)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// What setting a merchant's time zone came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSet {
    Set,
    NoMerchant,
    /// Not a name PostgreSQL knows (`pg_timezone_names`).
    UnknownZone,
}

/// Sets a merchant's time zone (an IANA name such as `Asia/Shanghai`; `UTC` is the default).
pub async fn set_time_zone(pool: &PgPool, merchant: &str, zone: &str) -> Result<ZoneSet, sqlx::Error> {
    // PostgreSQL text cannot hold U+0000, and no zone name is long.
    if zone.is_empty() || zone.len() > 64 || zone.contains('\0') {
        return Ok(ZoneSet::UnknownZone);
    }
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
        .bind(zone)
        .fetch_one(pool)
        .await?;
    if !known {
        return Ok(ZoneSet::UnknownZone);
    }
    let n = sqlx::query("UPDATE merchants SET time_zone = $2, updated_at = now() WHERE id = $1")
        .bind(merchant)
        .bind(zone)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(if n == 1 { ZoneSet::Set } else { ZoneSet::NoMerchant })
}

/// Sets (or clears, with `None`) the lead time of a merchant, or of one of its SKUs. `false`
/// when the merchant or the SKU's stock row does not exist.
pub async fn set_lead_time(
    pool: &PgPool,
    merchant: &str,
    sku: Option<&str>,
    days: Option<i32>,
) -> Result<bool, sqlx::Error> {
    let n = match sku {
        None => sqlx::query("UPDATE merchants SET lead_time_days = $2, updated_at = now() WHERE id = $1")
            .bind(merchant)
            .bind(days)
            .execute(pool)
            .await?
            .rows_affected(),
        Some(sku) => sqlx::query("UPDATE stock SET lead_time_days = $3 WHERE merchant_id = $1 AND sku = $2")
            .bind(merchant)
            .bind(sku)
            .bind(days)
            .execute(pool)
            .await?
            .rows_affected(),
    };
    Ok(n == 1)
}
