//! SQL of imported sales history (`crate::forecast::import`, and the generated panel of
//! `crate::forecast::generate`): rows of source `imported` in `sku_daily_demand`, written and
//! removed in short transactions.

use chrono::NaiveDate;
use sqlx::PgPool;

use crate::domain::forecast::history::HistoryRow;

/// Writes one chunk of a merchant's history in one transaction; a SKU-day imported before is
/// replaced (an import of the same file again changes nothing).
pub async fn upsert_imported(pool: &PgPool, merchant: &str, rows: &[HistoryRow]) -> Result<u64, sqlx::Error> {
    let sku: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
    let day: Vec<chrono::NaiveDate> = rows.iter().map(|r| r.day).collect();
    let units: Vec<i32> = rows.iter().map(|r| r.units).collect();
    let revenue: Vec<Option<i64>> = rows.iter().map(|r| r.revenue_minor).collect();
    let in_stock: Vec<Option<bool>> = rows.iter().map(|r| r.in_stock).collect();
    let on_hand: Vec<Option<i32>> = rows.iter().map(|r| r.on_hand).collect();
    let n = sqlx::query(
        "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor, in_stock, on_hand)
         SELECT $1, s, d, 'imported', u, r, i, h
         FROM UNNEST($2::text[], $3::date[], $4::int[], $5::int8[], $6::bool[], $7::int[]) AS x(s, d, u, r, i, h)
         ON CONFLICT (merchant_id, sku, day, source) DO UPDATE
         SET units = EXCLUDED.units, revenue_minor = EXCLUDED.revenue_minor,
             in_stock = EXCLUDED.in_stock, on_hand = EXCLUDED.on_hand",
    )
    .bind(merchant)
    .bind(&sku)
    .bind(&day)
    .bind(&units)
    .bind(&revenue)
    .bind(&in_stock)
    .bind(&on_hand)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Removes up to `limit` of a merchant's imported rows; 0 when none is left.
pub async fn delete_imported(pool: &PgPool, merchant: &str, limit: i64) -> Result<u64, sqlx::Error> {
    let n = sqlx::query(
        "DELETE FROM sku_daily_demand WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM sku_daily_demand WHERE merchant_id = $1 AND source = 'imported' LIMIT $2))",
    )
    .bind(merchant)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Loads generated or imported history: `(merchant, sku, day, units, revenue)` rows, as source
/// `imported` (replacing what was there for those keys).
pub async fn import_demand(
    pool: &PgPool,
    rows: &[(String, String, NaiveDate, i32, i64)],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(20_000) {
        let m: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
        let s: Vec<&str> = chunk.iter().map(|r| r.1.as_str()).collect();
        let d: Vec<NaiveDate> = chunk.iter().map(|r| r.2).collect();
        let u: Vec<i32> = chunk.iter().map(|r| r.3).collect();
        let v: Vec<i64> = chunk.iter().map(|r| r.4).collect();
        sqlx::query(
            "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor)
             SELECT m, s, d, 'imported', u, v FROM UNNEST($1::text[], $2::text[], $3::date[], $4::int[], $5::int8[]) AS x(m, s, d, u, v)
             ON CONFLICT (merchant_id, sku, day, source) DO UPDATE SET units = EXCLUDED.units, revenue_minor = EXCLUDED.revenue_minor",
        )
        .bind(&m)
        .bind(&s)
        .bind(&d)
        .bind(&u)
        .bind(&v)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Sets on-hand stock of many SKUs (never below what is reserved), for generated worlds.
pub async fn import_stock(pool: &PgPool, merchant: &str, rows: &[(String, i32)]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(20_000) {
        let s: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
        let q: Vec<i32> = chunk.iter().map(|r| r.1.max(0)).collect();
        sqlx::query(
            "INSERT INTO stock (merchant_id, sku, on_hand)
             SELECT $1, s, q FROM UNNEST($2::text[], $3::int[]) AS x(s, q)
             ON CONFLICT (merchant_id, sku) DO UPDATE SET on_hand = GREATEST(stock.reserved, EXCLUDED.on_hand), updated_at = now()",
        )
        .bind(merchant)
        .bind(&s)
        .bind(&q)
        .execute(pool)
        .await?;
    }
    Ok(())
}
