//! SQL of the calendars of unusual days: merchants' own (`demand_calendar`) and countries'
//! (`country_calendar`, for every merchant whose `country` is set): holidays and promotions,
//! read by the forecast (`crate::forecast`) and written by `souk forecast calendar`.

use chrono::NaiveDate;
use sqlx::PgPool;

use crate::domain::forecast::calendar::Period;

/// The SQL of one owner's calendar: how to clear it and how to add days to it. Both take the
/// owner as `$1`; adding takes the periods' kinds, first and last days, SKUs and names as
/// arrays `$2..$6`, one day per row, a day and kind given again keeping the newer name.
struct CalendarSql {
    clear: &'static str,
    add: &'static str,
}

const MERCHANT: CalendarSql = CalendarSql {
    clear: "DELETE FROM demand_calendar WHERE merchant_id = $1",
    add: "INSERT INTO demand_calendar (merchant_id, day, kind, sku, name)
          SELECT DISTINCT ON (d, k, s) $1, d::date, k, s, n
          FROM UNNEST($2::text[], $3::date[], $4::date[], $5::text[], $6::text[]) AS p(k, f, t, s, n),
               generate_series(f, t, interval '1 day') AS d
          ORDER BY d, k, s
          ON CONFLICT (merchant_id, day, kind, sku) DO UPDATE SET name = EXCLUDED.name",
};

/// A country's periods name no SKU (`parse_country_calendar` refuses one): `$5` goes unused.
const COUNTRY: CalendarSql = CalendarSql {
    clear: "DELETE FROM country_calendar WHERE country = $1",
    add: "INSERT INTO country_calendar (country, day, kind, name)
          SELECT DISTINCT ON (d, k) $1, d::date, k, n
          FROM UNNEST($2::text[], $3::date[], $4::date[], $5::text[], $6::text[]) AS p(k, f, t, s, n),
               generate_series(f, t, interval '1 day') AS d
          ORDER BY d, k
          ON CONFLICT (country, day, kind) DO UPDATE SET name = EXCLUDED.name",
};

/// Writes a merchant's calendar periods as days in one transaction, after removing its whole
/// calendar when `replace`; a day and kind given again for the same SKU keeps the newer name.
/// Returns the days written.
pub async fn write(
    pool: &PgPool,
    merchant: &str,
    periods: &[Period],
    replace: bool,
) -> Result<u64, sqlx::Error> {
    write_days(pool, &MERCHANT, merchant, periods, replace).await
}

/// [`write`] for a country's calendar (ISO 3166-1 alpha-2 code).
pub async fn write_country(
    pool: &PgPool,
    country: &str,
    periods: &[Period],
    replace: bool,
) -> Result<u64, sqlx::Error> {
    write_days(pool, &COUNTRY, country, periods, replace).await
}

async fn write_days(
    pool: &PgPool,
    sql: &CalendarSql,
    owner: &str,
    periods: &[Period],
    replace: bool,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if replace {
        sqlx::query(sql.clear).bind(owner).execute(&mut *tx).await?;
    }
    let kind: Vec<&str> = periods.iter().map(|p| p.kind.as_str()).collect();
    let from: Vec<NaiveDate> = periods.iter().map(|p| p.from).collect();
    let to: Vec<NaiveDate> = periods.iter().map(|p| p.to).collect();
    let sku: Vec<&str> = periods.iter().map(|p| p.sku.as_str()).collect();
    let name: Vec<Option<&str>> = periods.iter().map(|p| p.name.as_deref()).collect();
    let n = sqlx::query(sql.add)
        .bind(owner)
        .bind(&kind)
        .bind(&from)
        .bind(&to)
        .bind(&sku)
        .bind(&name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Sets (or with `None` clears) the country whose calendar a merchant's forecasts also use;
/// false when there is no such merchant.
pub async fn set_country(pool: &PgPool, merchant: &str, country: Option<&str>) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE merchants SET country = $2 WHERE id = $1")
        .bind(merchant)
        .bind(country)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

/// A merchant's unusual days over `[from, to]`, its own and its country's: `(day, kind, sku)`,
/// sku empty for all its SKUs.
pub async fn days(
    pool: &PgPool,
    merchant: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<(NaiveDate, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT day, kind, sku FROM demand_calendar WHERE merchant_id = $1 AND day BETWEEN $2 AND $3
         UNION
         SELECT c.day, c.kind, '' FROM country_calendar c JOIN merchants m ON m.country = c.country
         WHERE m.id = $1 AND c.day BETWEEN $2 AND $3
         ORDER BY 1",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}
