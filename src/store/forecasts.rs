//! SQL of demand forecasting: daily demand, runs and their merchants, forecasts, stock advice,
//! accuracy. Bulk writes go through `UNNEST` of arrays (one statement per few thousand rows).

pub use super::forecast_settings::*;
use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;

use super::orders::Tx;

/// A run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub run_key: String,
    pub as_of: NaiveDate,
    pub horizon_days: i32,
    pub status: String,
    pub merchants_total: i32,
}

/// Opens the run named `key` (creating it once) with a row per merchant (all merchants, or the
/// ones listed). Returns the run; merchants already in it are left as they are.
pub async fn open_run(
    pool: &PgPool,
    key: &str,
    as_of: NaiveDate,
    horizon: i32,
    only: Option<&[String]>,
) -> Result<Run, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO forecast_runs (run_key, as_of, horizon_days) VALUES ($1, $2, $3) ON CONFLICT (run_key) DO NOTHING",
    )
    .bind(key)
    .bind(as_of)
    .bind(horizon)
    .execute(&mut *tx)
    .await?;
    let run: Run = sqlx::query_as(
        "SELECT id, run_key, as_of, horizon_days, status, merchants_total FROM forecast_runs WHERE run_key = $1 FOR UPDATE",
    )
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    let added = sqlx::query(
        "INSERT INTO forecast_run_merchants (run_id, merchant_id)
         SELECT $1, id FROM merchants WHERE $2::text[] IS NULL OR id = ANY($2)
         ON CONFLICT DO NOTHING",
    )
    .bind(run.id)
    .bind(only)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added > 0 {
        sqlx::query(
            "UPDATE forecast_runs SET merchants_total = (SELECT count(*) FROM forecast_run_merchants WHERE run_id = $1),
                    status = 'running', finished_at = NULL
             WHERE id = $1",
        )
        .bind(run.id)
        .execute(&mut *tx)
        .await?;
    }
    let run = sqlx::query_as(
        "SELECT id, run_key, as_of, horizon_days, status, merchants_total FROM forecast_runs WHERE id = $1",
    )
    .bind(run.id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(run)
}

pub async fn run(pool: &PgPool, id: i64) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, run_key, as_of, horizon_days, status, merchants_total FROM forecast_runs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Merchants of a run still to do (pending or failed), in id order.
pub async fn pending_merchants(pool: &PgPool, run_id: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT merchant_id FROM forecast_run_merchants WHERE run_id = $1 AND status <> 'done' ORDER BY merchant_id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// Marks the start of an attempt; `false` when the merchant is already done in this run.
pub async fn start_merchant(pool: &PgPool, run_id: i64, merchant: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE forecast_run_merchants SET attempts = attempts + 1, started_at = now()
         WHERE run_id = $1 AND merchant_id = $2 AND status <> 'done'",
    )
    .bind(run_id)
    .bind(merchant)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Records a failed attempt (the queue retries it).
pub async fn fail_merchant(
    pool: &PgPool,
    run_id: i64,
    merchant: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE forecast_run_merchants SET status = 'failed', error = $3
         WHERE run_id = $1 AND merchant_id = $2 AND status <> 'done'",
    )
    .bind(run_id)
    .bind(merchant)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Rebuilds a merchant's `orders` demand rows over `[from, to]` (days in the merchant's time
/// zone, so setting one re-buckets souk's own history at the next run) from its order lines: sub-orders
/// that were reserved (or went further), and those that found their SKU out of stock, which are
/// demand the merchant could not serve: their day is marked out of stock (`in_stock = false`),
/// so the forecast treats it as censored. Pending, rejected and cancelled sub-orders are not
/// demand.
pub async fn refresh_demand_from_orders(
    pool: &PgPool,
    merchant: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "DELETE FROM sku_daily_demand WHERE merchant_id = $1 AND source = 'orders' AND day BETWEEN $2 AND $3",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query(
        "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor, in_stock)
         SELECT s.merchant_id, l.sku, (o.placed_at AT TIME ZONE m.time_zone)::date AS day, 'orders',
                sum(l.quantity), sum(l.quantity::bigint * l.unit_price_minor),
                CASE WHEN bool_or(s.status = 'out_of_stock') THEN false END
         FROM sub_orders s
         JOIN merchants m ON m.id = s.merchant_id
         JOIN orders o ON o.id = s.order_id
         JOIN order_lines l ON l.sub_order_id = s.id
         WHERE s.merchant_id = $1
           AND s.status NOT IN ('pending', 'rejected', 'cancelled')
           AND (o.placed_at AT TIME ZONE m.time_zone)::date BETWEEN $2 AND $3
         GROUP BY 1, 2, 3",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// A day's units, grouped by (SKU, day): the merchant's imported figure when it sent one (it
/// counts every sale of that day, souk's own orders among them), else souk's order rows. So an
/// import that overlaps souk's history never counts a day twice.
pub const DAY_UNITS: &str =
    "(CASE WHEN bool_or(source = 'imported') THEN sum(units) FILTER (WHERE source = 'imported')
      ELSE sum(units) END)::bigint";

/// A merchant SKU's demand days (non-zero only) and what it has in stock.
#[derive(Debug, Clone, Default)]
pub struct SkuInput {
    pub sku: String,
    /// (day, units, units whose revenue is known, that revenue) in day order.
    pub days: Vec<(NaiveDate, i64, i64, i64)>,
    /// The days it was out of stock (its sales then are a lower bound on demand), in order.
    pub out_of_stock: Vec<NaiveDate>,
    /// The days with an imported row, in order: in a weekly merchant's week that has one, only
    /// the imported units count (a weekly import is one row on the week's Monday).
    pub imported: Vec<NaiveDate>,
    /// Units on hand less reserved; `None` when souk has no stock row for the SKU (its stock is
    /// unknown, not zero: such a SKU gets a forecast and no stock advice).
    pub available: Option<i64>,
    pub lead_time_days: Option<i32>,
}

/// A merchant's own forecast settings: lead time and stock-out threshold (NULL: the defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct MerchantSettings {
    pub lead_time_days: Option<i32>,
    pub warn_probability: Option<f64>,
    pub period: crate::domain::forecast::Period,
}

/// Everything the forecast of one merchant reads: its settings, and demand over `[from, to]`
/// and stock, for every SKU with either.
pub async fn merchant_inputs(
    pool: &PgPool,
    merchant: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(MerchantSettings, Vec<SkuInput>), sqlx::Error> {
    let settings = sqlx::query_as::<_, (Option<i32>, Option<f64>, String)>(
        "SELECT lead_time_days, forecast_warn_probability, forecast_period FROM merchants WHERE id = $1",
    )
    .bind(merchant)
    .fetch_optional(pool)
    .await?
    .map(|(lead_time_days, warn_probability, period)| MerchantSettings {
        lead_time_days,
        warn_probability,
        period: crate::domain::forecast::Period::parse(&period).unwrap_or_default(),
    })
    .unwrap_or_default();
    // One row per SKU with its stored rows as parallel arrays (in no particular order): far
    // fewer rows to decode than one per SKU-day, and no aggregate per day in SQL; the day rules
    // are applied by `merge_days`.
    type Arrays = (
        String,
        Vec<NaiveDate>,
        Vec<bool>,
        Vec<i32>,
        Vec<Option<i64>>,
        Vec<Option<bool>>,
    );
    let rows: Vec<Arrays> = sqlx::query_as(
        "SELECT sku, array_agg(day), array_agg(source = 'imported'), array_agg(units), array_agg(revenue_minor),
                array_agg(in_stock)
         FROM sku_daily_demand WHERE merchant_id = $1 AND day BETWEEN $2 AND $3 GROUP BY sku",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let stock: Vec<(String, i32, i32, Option<i32>)> = sqlx::query_as(
        "SELECT sku, on_hand, reserved, lead_time_days FROM stock WHERE merchant_id = $1 ORDER BY sku",
    )
    .bind(merchant)
    .fetch_all(pool)
    .await?;
    let mut by_sku: std::collections::BTreeMap<String, SkuInput> = Default::default();
    for (sku, day, imported, units, revenue, in_stock) in rows {
        let stored: Vec<Stored> = (0..day.len())
            .map(|i| Stored {
                day: day[i],
                imported: imported[i],
                units: i64::from(units[i]),
                revenue: revenue[i],
                in_stock: in_stock[i],
            })
            .collect();
        by_sku.insert(sku.clone(), merge_days(sku, stored));
    }
    for (sku, on_hand, reserved, lt) in stock {
        let e = by_sku.entry(sku.clone()).or_insert_with(|| SkuInput {
            sku,
            ..Default::default()
        });
        e.available = Some(i64::from(on_hand - reserved).max(0));
        e.lead_time_days = lt;
    }
    Ok((settings, by_sku.into_values().collect()))
}

/// One stored row of a SKU's demand (`sku_daily_demand`).
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub day: NaiveDate,
    /// Source `imported` (else `orders`; the key allows one row of each a day).
    pub imported: bool,
    pub units: i64,
    pub revenue: Option<i64>,
    pub in_stock: Option<bool>,
}

/// A SKU's stored rows made into its demand days: a day's units by the rule of [`DAY_UNITS`]
/// (an imported day counts its imported units only); its price from the imported revenue when
/// the import has one, else from souk's order rows (their line prices); out of stock by the
/// merchant's imported flag when its row for the day says, else by whether one of souk's own
/// sub-orders found the SKU out of stock that day.
pub fn merge_days(sku: String, mut rows: Vec<Stored>) -> SkuInput {
    rows.sort_unstable_by_key(|r| (r.day, r.imported));
    let mut out = SkuInput {
        sku,
        ..Default::default()
    };
    for day in rows.chunk_by(|a, b| a.day == b.day) {
        let (orders, import) = match day {
            [a, b] => (Some(a), Some(b)),
            [a] if a.imported => (None, Some(a)),
            [a] => (Some(a), None),
            _ => unreachable!("one row per source and day"),
        };
        let d = day[0].day;
        let units = import.or(orders).map_or(0, |r| r.units);
        let (priced, revenue) = match (import, orders) {
            (Some(i), _) if i.revenue.is_some() => (i.units, i.revenue.unwrap_or(0)),
            (_, Some(o)) => (o.units, o.revenue.unwrap_or(0)),
            _ => (0, 0),
        };
        let out_of_stock = match (import, orders) {
            (
                Some(Stored {
                    in_stock: Some(s), ..
                }),
                _,
            ) => !s,
            (_, Some(o)) => o.in_stock == Some(false),
            _ => false,
        };
        out.days.push((d, units, priced, revenue));
        if out_of_stock {
            out.out_of_stock.push(d);
        }
        if import.is_some() {
            out.imported.push(d);
        }
    }
    out
}

/// One SKU's computed results, ready to store.
#[derive(Debug, Clone)]
pub struct SkuResult {
    pub sku: String,
    pub model: &'static str,
    pub fallback: Option<String>,
    pub class: &'static str,
    pub adi: Option<f64>,
    pub cv2: f64,
    pub history_days: i32,
    pub validation_rmsse: Option<f64>,
    pub dispersion: f64,
    pub mean: Vec<f64>,
    pub p50: Vec<f64>,
    pub p90: Vec<f64>,
    pub p95: Vec<f64>,
    pub available: i32,
    pub lead_time_days: i32,
    pub lead_time_demand: f64,
    pub stockout_probability: f64,
    pub reorder_point: i32,
    pub order_up_to: i32,
    pub suggested_order: i32,
    pub expected_shortfall: f64,
    pub days_of_cover: Option<i32>,
    pub unit_price_minor: Option<i64>,
    pub value_at_risk_minor: i64,
    pub at_risk: bool,
    /// Whether the SKU's stock is known; only such SKUs get a `stock_advice` row.
    pub stock_known: bool,
    /// The last day of the history fitted (a weekly merchant's: the Sunday ending its last
    /// complete week); the forecast starts the day after.
    pub series_end: NaiveDate,
    /// Days per forecast value: 1, or 7 for a weekly merchant.
    pub period_days: i16,
}

/// A past forecast whose horizon has passed and that has no accuracy yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueForecast {
    pub id: i64,
    pub sku: String,
    pub as_of: NaiveDate,
    pub mean: Vec<f64>,
    pub p90: Vec<f64>,
    /// Days per value: 1, or 7 for a weekly forecast.
    pub period_days: i16,
}

pub async fn due_for_accuracy(
    pool: &PgPool,
    merchant: &str,
    as_of: NaiveDate,
) -> Result<Vec<DueForecast>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.id, f.sku, f.as_of, f.mean, f.p90, f.period_days FROM sku_forecasts f
         WHERE f.merchant_id = $1 AND f.as_of + cardinality(f.mean) * f.period_days <= $2
           AND NOT EXISTS (SELECT 1 FROM forecast_accuracy a WHERE a.forecast_id = f.id)
         ORDER BY f.id LIMIT 100000",
    )
    .bind(merchant)
    .bind(as_of)
    .fetch_all(pool)
    .await
}

/// The accuracy of one past forecast.
#[derive(Debug, Clone)]
pub struct Accuracy {
    pub forecast_id: i64,
    pub sku: String,
    pub as_of: NaiveDate,
    pub days: i32,
    pub actual_units: f64,
    pub forecast_units: f64,
    pub rmsse: Option<f64>,
    pub pinball_p90: Option<f64>,
    pub coverage_p90: f64,
}

/// Stores a merchant's results and marks it done in the run, in one transaction: a crash before
/// the commit leaves nothing, a rerun after it finds the merchant done. Replaces rows a previous
/// uncommitted-then-retried attempt cannot have left, so reruns never duplicate. Returns the
/// run's status after this merchant.
pub async fn store_merchant(
    pool: &PgPool,
    run: &Run,
    merchant: &str,
    results: &[SkuResult],
    accuracy: &[Accuracy],
    digest: Option<(&str, &serde_json::Value)>,
) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let state: Option<String> = sqlx::query_scalar(
        "SELECT status FROM forecast_run_merchants WHERE run_id = $1 AND merchant_id = $2 FOR UPDATE",
    )
    .bind(run.id)
    .bind(merchant)
    .fetch_optional(&mut *tx)
    .await?;
    if state.as_deref() == Some("done") {
        tx.rollback().await?;
        return Ok(run.status.clone());
    }
    for chunk in results.chunks(2_000) {
        insert_forecasts(&mut tx, run, merchant, chunk).await?;
        let advised: Vec<SkuResult> = chunk.iter().filter(|r| r.stock_known).cloned().collect();
        insert_advice(&mut tx, run, merchant, &advised).await?;
    }
    for chunk in accuracy.chunks(5_000) {
        insert_accuracy(&mut tx, merchant, chunk).await?;
    }
    if let Some((id, payload)) = digest {
        super::orders::insert_delivery(&mut tx, id, merchant, None, None, "forecast.stock_risk", payload)
            .await?;
    }
    let at_risk = results.iter().filter(|r| r.at_risk).count() as i32;
    sqlx::query(
        "UPDATE forecast_run_merchants SET status = 'done', error = NULL, finished_at = now(), skus = $3, at_risk = $4
         WHERE run_id = $1 AND merchant_id = $2",
    )
    .bind(run.id)
    .bind(merchant)
    .bind(results.len() as i32)
    .bind(at_risk)
    .execute(&mut *tx)
    .await?;
    let status: String = sqlx::query_scalar(
        "UPDATE forecast_runs SET
            status = CASE WHEN EXISTS (SELECT 1 FROM forecast_run_merchants WHERE run_id = $1 AND status <> 'done')
                          THEN 'running' ELSE 'finished' END,
            finished_at = CASE WHEN EXISTS (SELECT 1 FROM forecast_run_merchants WHERE run_id = $1 AND status <> 'done')
                          THEN NULL ELSE now() END
         WHERE id = $1 RETURNING status",
    )
    .bind(run.id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(status)
}

/// Postgres has no array of arrays of varying shape in UNNEST, so the daily vectors go in as
/// JSON arrays and are turned back into `float8[]` in SQL.
fn json_rows(rows: &[SkuResult], f: impl Fn(&SkuResult) -> &Vec<f64>) -> Vec<serde_json::Value> {
    rows.iter().map(|r| serde_json::json!(f(r))).collect()
}

async fn insert_forecasts(
    tx: &mut Tx<'_>,
    run: &Run,
    merchant: &str,
    rows: &[SkuResult],
) -> Result<(), sqlx::Error> {
    let sku: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
    let model: Vec<&str> = rows.iter().map(|r| r.model).collect();
    let fallback: Vec<Option<&str>> = rows.iter().map(|r| r.fallback.as_deref()).collect();
    let class: Vec<&str> = rows.iter().map(|r| r.class).collect();
    let adi: Vec<Option<f64>> = rows.iter().map(|r| r.adi).collect();
    let cv2: Vec<f64> = rows.iter().map(|r| r.cv2).collect();
    let hist: Vec<i32> = rows.iter().map(|r| r.history_days).collect();
    let vr: Vec<Option<f64>> = rows.iter().map(|r| r.validation_rmsse).collect();
    let disp: Vec<f64> = rows.iter().map(|r| r.dispersion).collect();
    let end: Vec<NaiveDate> = rows.iter().map(|r| r.series_end).collect();
    let per: Vec<i16> = rows.iter().map(|r| r.period_days).collect();
    sqlx::query(
        "INSERT INTO sku_forecasts (run_id, merchant_id, sku, as_of, model, fallback, demand_class, adi, cv2,
                history_days, validation_rmsse, dispersion, mean, p50, p90, p95, period_days)
         SELECT $1, $2, u.sku, u.end_day, u.model, u.fallback, u.class, u.adi, u.cv2, u.hist, u.vr, u.disp,
                ARRAY(SELECT jsonb_array_elements_text(u.mean)::float8),
                ARRAY(SELECT jsonb_array_elements_text(u.p50)::float8),
                ARRAY(SELECT jsonb_array_elements_text(u.p90)::float8),
                ARRAY(SELECT jsonb_array_elements_text(u.p95)::float8), u.per
         FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::float8[], $9::float8[], $10::int[],
                     $11::float8[], $12::float8[], $13::jsonb[], $14::jsonb[], $15::jsonb[], $16::jsonb[],
                     $3::date[], $17::int2[])
              AS u(sku, model, fallback, class, adi, cv2, hist, vr, disp, mean, p50, p90, p95, end_day, per)
         ON CONFLICT (run_id, merchant_id, sku) DO NOTHING",
    )
    .bind(run.id)
    .bind(merchant)
    .bind(&end)
    .bind(&sku)
    .bind(&model)
    .bind(&fallback)
    .bind(&class)
    .bind(&adi)
    .bind(&cv2)
    .bind(&hist)
    .bind(&vr)
    .bind(&disp)
    .bind(json_rows(rows, |r| &r.mean))
    .bind(json_rows(rows, |r| &r.p50))
    .bind(json_rows(rows, |r| &r.p90))
    .bind(json_rows(rows, |r| &r.p95))
    .bind(&per)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_advice(
    tx: &mut Tx<'_>,
    run: &Run,
    merchant: &str,
    rows: &[SkuResult],
) -> Result<(), sqlx::Error> {
    let col_i = |f: fn(&SkuResult) -> i32| rows.iter().map(f).collect::<Vec<i32>>();
    let col_f = |f: fn(&SkuResult) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let sku: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
    let cover: Vec<Option<i32>> = rows.iter().map(|r| r.days_of_cover).collect();
    let price: Vec<Option<i64>> = rows.iter().map(|r| r.unit_price_minor).collect();
    let var: Vec<i64> = rows.iter().map(|r| r.value_at_risk_minor).collect();
    let risk: Vec<bool> = rows.iter().map(|r| r.at_risk).collect();
    sqlx::query(
        "INSERT INTO stock_advice (run_id, merchant_id, sku, as_of, available, lead_time_days, lead_time_demand,
                stockout_probability, reorder_point, order_up_to, suggested_order, expected_shortfall, days_of_cover,
                unit_price_minor, value_at_risk_minor, at_risk)
         SELECT $1, $2, u.sku, $3, u.available, u.lt, u.ltd, u.p, u.rop, u.out, u.sug, u.short, u.cover,
                u.price, u.var, u.risk
         FROM UNNEST($4::text[], $5::int[], $6::int[], $7::float8[], $8::float8[], $9::int[],
                     $10::int[], $11::int[], $12::float8[], $13::int[], $14::int8[], $15::int8[], $16::bool[])
              AS u(sku, available, lt, ltd, p, rop, out, sug, short, cover, price, var, risk)
         ON CONFLICT DO NOTHING",
    )
    .bind(run.id)
    .bind(merchant)
    .bind(run.as_of)
    .bind(&sku)
    .bind(col_i(|r| r.available))
    .bind(col_i(|r| r.lead_time_days))
    .bind(col_f(|r| r.lead_time_demand))
    .bind(col_f(|r| r.stockout_probability))
    .bind(col_i(|r| r.reorder_point))
    .bind(col_i(|r| r.order_up_to))
    .bind(col_i(|r| r.suggested_order))
    .bind(col_f(|r| r.expected_shortfall))
    .bind(&cover)
    .bind(&price)
    .bind(&var)
    .bind(&risk)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_accuracy(tx: &mut Tx<'_>, merchant: &str, rows: &[Accuracy]) -> Result<(), sqlx::Error> {
    let id: Vec<i64> = rows.iter().map(|r| r.forecast_id).collect();
    let sku: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
    let as_of: Vec<NaiveDate> = rows.iter().map(|r| r.as_of).collect();
    let days: Vec<i32> = rows.iter().map(|r| r.days).collect();
    let actual: Vec<f64> = rows.iter().map(|r| r.actual_units).collect();
    let fc: Vec<f64> = rows.iter().map(|r| r.forecast_units).collect();
    let rmsse: Vec<Option<f64>> = rows.iter().map(|r| r.rmsse).collect();
    let pin: Vec<Option<f64>> = rows.iter().map(|r| r.pinball_p90).collect();
    let cov: Vec<f64> = rows.iter().map(|r| r.coverage_p90).collect();
    sqlx::query(
        "INSERT INTO forecast_accuracy (forecast_id, merchant_id, sku, as_of, days, actual_units, forecast_units,
                rmsse, pinball_p90, coverage_p90)
         SELECT u.id, $1, u.sku, u.as_of, u.days, u.actual, u.fc, u.rmsse, u.pin, u.cov
         FROM UNNEST($2::int8[], $3::text[], $4::date[], $5::int[], $6::float8[], $7::float8[], $8::float8[],
                     $9::float8[], $10::float8[]) AS u(id, sku, as_of, days, actual, fc, rmsse, pin, cov)
         ON CONFLICT (forecast_id) DO NOTHING",
    )
    .bind(merchant)
    .bind(&id)
    .bind(&sku)
    .bind(&as_of)
    .bind(&days)
    .bind(&actual)
    .bind(&fc)
    .bind(&rmsse)
    .bind(&pin)
    .bind(&cov)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The latest stored forecast and advice of a merchant's SKUs, riskiest first (see
/// [`crate::forecast::risk_rank`]).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AdviceRow {
    pub run_id: i64,
    pub sku: String,
    pub as_of: NaiveDate,
    pub model: String,
    pub fallback: Option<String>,
    pub demand_class: String,
    pub validation_rmsse: Option<f64>,
    pub dispersion: f64,
    pub available: i32,
    pub lead_time_days: i32,
    pub lead_time_demand: f64,
    pub stockout_probability: f64,
    pub reorder_point: i32,
    pub suggested_order: i32,
    pub days_of_cover: Option<i32>,
    pub value_at_risk_minor: i64,
    pub at_risk: bool,
    pub mean: Vec<f64>,
    pub p50: Vec<f64>,
    pub p90: Vec<f64>,
    pub p95: Vec<f64>,
    /// The last day of the history the forecast fitted: its values start the day after.
    pub series_end: NaiveDate,
    /// Days per forecast value: 1, or 7 for a weekly merchant.
    pub period_days: i16,
}

/// The advice of a merchant's latest run that has it (optionally one SKU), riskiest first.
pub async fn latest_advice(
    pool: &PgPool,
    merchant: &str,
    sku: Option<&str>,
) -> Result<Vec<AdviceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.run_id, a.sku, a.as_of, f.model, f.fallback, f.demand_class, f.validation_rmsse, f.dispersion, a.available,
                a.lead_time_days, a.lead_time_demand, a.stockout_probability, a.reorder_point, a.suggested_order,
                a.days_of_cover, a.value_at_risk_minor, a.at_risk, f.mean, f.p50, f.p90, f.p95,
                f.as_of AS series_end, f.period_days
         FROM stock_advice a
         JOIN sku_forecasts f ON f.run_id = a.run_id AND f.merchant_id = a.merchant_id AND f.sku = a.sku
         WHERE a.merchant_id = $1 AND ($2::text IS NULL OR a.sku = $2)
           AND a.run_id = (SELECT max(run_id) FROM forecast_run_merchants WHERE merchant_id = $1 AND status = 'done')
         ORDER BY a.stockout_probability * (a.value_at_risk_minor + 1) DESC, a.stockout_probability DESC, a.sku",
    )
    .bind(merchant)
    .bind(sku)
    .fetch_all(pool)
    .await
}

/// Daily units of one SKU over `[from, to]` ([`DAY_UNITS`]), zero days filled.
pub async fn daily_units(
    pool: &PgPool,
    merchant: &str,
    sku: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<f64>, sqlx::Error> {
    let rows: Vec<(NaiveDate, i64)> = sqlx::query_as(&format!(
        "SELECT day, {DAY_UNITS} FROM sku_daily_demand WHERE merchant_id = $1 AND sku = $2 AND day BETWEEN $3 AND $4
         GROUP BY day"
    ))
    .bind(merchant)
    .bind(sku)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let n = (to - from).num_days().max(-1) + 1;
    let mut out = vec![0.0; n as usize];
    for (d, u) in rows {
        let i = (d - from).num_days();
        if (0..n).contains(&i) {
            out[i as usize] = u as f64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
