//! The forecast chapter's own-history part: a merchant's sales history and calendar imported
//! from sample files, as `souk forecast import` and `souk forecast calendar` take them, so the
//! demo shows a stock-out counted as lost demand and a promotion ahead moving the forecast.

use std::path::PathBuf;

use chrono::{Duration, NaiveDate};

use crate::{app::App, domain::forecast::calendar::parse_calendar, forecast::import};

/// The SKU the sample files are about.
pub const SKU: &str = "LAMP-IMPORTED";

/// What was imported, for the chapter to print.
pub struct Imported {
    pub merchant: String,
    pub history: PathBuf,
    pub rows: u64,
    pub calendar: PathBuf,
    pub days: u64,
    /// The first day of the promotion ahead (the run's horizon starts the day after `as_of`).
    pub promotion_ahead: NaiveDate,
}

/// Writes the sample files to a folder of the demo's and imports them for `merchant`: 121 days
/// of 4 a day up to `as_of`, 12 a day in three past 3-day promotions, and the
/// last 14 days out of stock (nothing sold, `in_stock` false); a calendar naming the three
/// promotions and one 3-day promotion 10 days ahead.
pub async fn import_samples(
    app: &App,
    merchant: &str,
    as_of: NaiveDate,
    dir: PathBuf,
) -> anyhow::Result<Imported> {
    std::fs::create_dir_all(&dir)?;
    let first = as_of - Duration::days(120);
    let promotions: Vec<NaiveDate> = [30, 60, 90].iter().map(|d| first + Duration::days(*d)).collect();
    let promotion_ahead = as_of + Duration::days(10);
    let mut csv = String::from("sku,date,units,in_stock\n");
    for i in 0..=120 {
        let day = first + Duration::days(i);
        let on_sale = promotions
            .iter()
            .any(|p| day >= *p && day < *p + Duration::days(3));
        let (units, in_stock) = match () {
            _ if day > as_of - Duration::days(14) => (0, false),
            _ if on_sale => (12, true),
            _ => (4, true),
        };
        csv.push_str(&format!("{SKU},{day},{units},{in_stock}\n"));
    }
    let history = dir.join("history.csv");
    std::fs::write(&history, csv)?;
    let out = import::import(
        &app.pool,
        merchant,
        &import::Source::File(history.clone()),
        import::Format::Csv,
        false,
        |_, _| {},
    )
    .await?;
    anyhow::ensure!(out.error_count == 0, "the sample history was refused");
    let mut cal = String::from("kind,from,to,sku,name\n");
    for (i, p) in promotions.iter().chain([&promotion_ahead]).enumerate() {
        cal.push_str(&format!(
            "promotion,{p},{},{SKU},Lamp week {}\n",
            *p + Duration::days(2),
            i + 1
        ));
    }
    let calendar = dir.join("calendar.csv");
    std::fs::write(&calendar, &cal)?;
    let periods =
        parse_calendar(&cal).map_err(|e| anyhow::anyhow!("the sample calendar was refused: {e:?}"))?;
    let days = crate::store::calendar::write(&app.pool, merchant, &periods, false).await?;
    Ok(Imported {
        merchant: merchant.to_owned(),
        history,
        rows: out.rows,
        calendar,
        days,
        promotion_ahead,
    })
}
