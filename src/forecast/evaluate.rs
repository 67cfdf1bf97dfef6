//! `souk forecast evaluate`: souk's forecast of every series of a long CSV (`series,date,y`,
//! one row per series and day, missing days counting 0) from all but its last `horizon` days,
//! written as CSV for a side-by-side comparison with other tools (bench/accuracy/). The same
//! [`forecast_series`] as the nightly job, without stock, calendar or censoring.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::NaiveDate;

use crate::domain::forecast::{forecast_series, Settings};

/// Reads the panel: series id → (first day, values by day).
pub fn read_panel(text: &str) -> anyhow::Result<BTreeMap<String, (NaiveDate, Vec<f64>)>> {
    let mut rows: BTreeMap<String, Vec<(NaiveDate, f64)>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split(',');
        let (Some(id), Some(d), Some(y)) = (f.next(), f.next(), f.next()) else {
            anyhow::bail!("line {}: expected series,date,y", i + 1);
        };
        let day = NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
            .with_context(|| format!("line {}: date {d:?}", i + 1))?;
        let y: f64 = y
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("line {}: y {y:?} is not a number ≥ 0", i + 1))?;
        rows.entry(id.to_owned()).or_default().push((day, y));
    }
    Ok(rows
        .into_iter()
        .map(|(id, mut r)| {
            r.sort_by_key(|x| x.0);
            let first = r[0].0;
            let len = (r[r.len() - 1].0 - first).num_days() as usize + 1;
            let mut y = vec![0.0; len];
            for (d, v) in r {
                y[(d - first).num_days() as usize] += v;
            }
            (id, (first, y))
        })
        .collect())
}

/// The forecast of each series from all but its last `horizon` days, as CSV rows
/// `series,date,mean,p50,p90,p95,model` (with a header).
pub fn evaluate(text: &str, horizon: usize, settings: &Settings) -> anyhow::Result<String> {
    let panel = read_panel(text)?;
    let s = Settings {
        horizon,
        ..settings.clone()
    };
    let mut out = String::from("series,date,mean,p50,p90,p95,model\n");
    for (id, (first, y)) in panel {
        if y.len() <= horizon {
            continue;
        }
        let train = &y[..y.len() - horizon];
        let f = forecast_series(train, &s);
        for d in 0..horizon {
            let day = first + chrono::Duration::days((train.len() + d) as i64);
            out.push_str(&format!(
                "{id},{day},{},{},{},{},{}\n",
                f.mean[d], f.p50[d], f.p90[d], f.p95[d], f.model
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_is_forecast_from_all_but_its_last_days() {
        let mut csv = String::from("series,date,y\n");
        for d in 0..120 {
            let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(d);
            if d % 2 == 0 {
                csv.push_str(&format!("a,{day},4\n"));
            }
            csv.push_str(&format!("b,{day},1\n"));
        }
        let out = evaluate(&csv, 28, &Settings::default()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * 28);
        // Series a's last day is day 118 (its zeros after are not known): 91 days fitted.
        assert!(lines[1].starts_with("a,2026-04-02,"), "{}", lines[1]);
        assert!(lines[29].starts_with("b,2026-04-03,"), "{}", lines[29]);
        let mean: f64 = lines[29].split(',').nth(2).unwrap().parse().unwrap();
        assert!((mean - 1.0).abs() < 1e-9);
        assert!(evaluate("series,date,y\na,2026-01-01,-1\n", 28, &Settings::default()).is_err());
    }
}
