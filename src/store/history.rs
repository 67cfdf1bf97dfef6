//! SQL of imported sales history (`crate::forecast::import`): rows of source `imported` in
//! `sku_daily_demand`, written and removed in short transactions.

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
