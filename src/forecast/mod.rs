//! Demand forecasting's shell: runs, one merchant at a time. Loads daily demand from Postgres
//! (rebuilding the part that comes from order lines), runs the pure
//! [`crate::domain::forecast`] math off the async threads, and stores forecasts, stock advice,
//! the accuracy of past forecasts and the merchant's at-risk digest in one transaction.
//!
//! A run is one row per merchant ([`store::forecasts`]); a merchant marked done is never redone,
//! so a run interrupted anywhere (a worker killed, a deploy) finishes by doing the rest. The
//! nightly cron job and `souk forecast run --enqueue` spread merchants over the fleet as
//! `souk.forecast_merchant.v1` jobs; `souk forecast run` works through them in its own process.

pub mod backtest;
pub mod evaluate;
pub mod generate;
pub mod import;

use std::collections::HashMap;

use anyhow::Context;
use chrono::{Duration, NaiveDate, Utc};
use serde_json::json;

use crate::{
    app::App,
    config::ForecastConfig,
    domain::forecast::{
        calendar::{apply, set_aside_by, DayKind},
        censor::{uncensored, unconstrain_by},
        forecast_series,
        inventory::advise,
        metrics::{covered, naive_scales, rmsse, scaled_pinball},
        Period,
    },
    store::forecasts::{self as store, Accuracy, DueForecast, Run, SkuInput, SkuResult},
};

/// Opens a forecast run (default: the day's, for every merchant) and pushes one
/// `souk.forecast_merchant.v1` job per merchant still to do; returns the run and how many were
/// pushed. Safe to run twice: the run is keyed, merchants done are skipped, pushes are
/// idempotent.
pub async fn plan(
    app: &App,
    as_of: Option<NaiveDate>,
    run_key: Option<String>,
    merchants: Option<&[String]>,
) -> Result<(Run, usize), crate::queue::JobError> {
    use crate::queue::JobError;
    let as_of = as_of.unwrap_or_else(|| default_as_of(Utc::now()));
    let key = run_key.unwrap_or_else(|| daily_key(as_of));
    let run = open_run(app, &key, as_of, merchants)
        .await
        .map_err(|e| JobError::retry(format!("{e:#}")))?;
    let pending = store::pending_merchants(&app.pool, run.id)
        .await
        .map_err(JobError::retry)?;
    for m in &pending {
        crate::enqueue::forecast_merchant(app, run.id, m).await?;
    }
    Ok((run, pending.len()))
}

/// One merchant's part of run `run_id` (the job `souk.forecast_merchant.v1`); a merchant
/// already done is skipped. An unknown run is a dead letter; a failure is retried.
pub async fn process_run_merchant(
    app: &App,
    run_id: i64,
    merchant: &str,
) -> Result<(), crate::queue::JobError> {
    use crate::queue::JobError;
    let Some(run) = store::run(&app.pool, run_id).await.map_err(JobError::retry)? else {
        return Err(JobError::abort(format!("no forecast run {run_id}")));
    };
    process_merchant(app, &run, merchant)
        .await
        .map(|_| ())
        .map_err(|e| JobError::retry(format!("{e:#}")))
}

/// The last full day (UTC) before `now`: the default end of a run's history.
pub fn default_as_of(now: chrono::DateTime<Utc>) -> NaiveDate {
    (now - Duration::days(1)).date_naive()
}

/// The run key of the scheduled run for `as_of`.
pub fn daily_key(as_of: NaiveDate) -> String {
    format!("daily:{as_of}")
}

/// Opens (once) the run `key` for all merchants or the ones listed.
pub async fn open_run(
    app: &App,
    key: &str,
    as_of: NaiveDate,
    only: Option<&[String]>,
) -> anyhow::Result<Run> {
    store::open_run(
        &app.pool,
        key,
        as_of,
        app.config.forecast.horizon_days as i32,
        only,
    )
    .await
    .with_context(|| format!("opening forecast run {key}"))
}

/// Where one merchant's time went (`souk bench forecast --through-db` sums them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Rebuilding its demand from order lines and loading demand, stock, past forecasts and
    /// calendar.
    pub read: std::time::Duration,
    /// Forecasts, advice and accuracy, off the async threads.
    pub fit: std::time::Duration,
    /// The one transaction that stores them, and the digest's push.
    pub write: std::time::Duration,
}

impl Phases {
    pub fn add(&mut self, o: &Phases) {
        self.read += o.read;
        self.fit += o.fit;
        self.write += o.write;
    }
}

/// What happened to one merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantOutcome {
    /// Already done in this run: nothing was computed.
    pub skipped: bool,
    pub skus: usize,
    pub at_risk: usize,
    /// The run's status after this merchant (`finished` when it was the last).
    pub run_status: String,
    /// The digest webhook created, if any SKU is at risk.
    pub digest: Option<String>,
    pub phases: Phases,
}

/// How SKUs at risk are ranked (digest and `souk forecast show`): stock-out probability times
/// the expected lost sales value (+1 so that risk still orders SKUs without a known price).
pub fn risk_rank(r: &SkuResult) -> f64 {
    r.stockout_probability * (r.value_at_risk_minor as f64 + 1.0)
}

/// The webhook id of a merchant's digest in a run: stable, so reruns find the same delivery.
pub fn digest_id(run_id: i64, merchant: &str) -> String {
    crate::domain::ids::digest_webhook_id(run_id, merchant)
}

/// Forecasts one merchant of a run; safe to call again (a done merchant is skipped, an
/// interrupted one starts over with nothing of it stored).
pub async fn process_merchant(app: &App, run: &Run, merchant: &str) -> anyhow::Result<MerchantOutcome> {
    let started = store::start_merchant(&app.pool, run.id, merchant).await?;
    if !started {
        return Ok(MerchantOutcome {
            skipped: true,
            skus: 0,
            at_risk: 0,
            run_status: store::run(&app.pool, run.id)
                .await?
                .map_or_else(String::new, |r| r.status),
            digest: None,
            phases: Phases::default(),
        });
    }
    match compute_and_store(app, run, merchant).await {
        Ok(o) => Ok(o),
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = store::fail_merchant(&app.pool, run.id, merchant, &msg).await;
            Err(e)
        }
    }
}

async fn compute_and_store(app: &App, run: &Run, merchant: &str) -> anyhow::Result<MerchantOutcome> {
    let cfg = app.config.forecast.clone();
    let mut phases = Phases::default();
    let started = std::time::Instant::now();
    let period = store::period(&app.pool, merchant)
        .await?
        .with_context(|| format!("no merchant {merchant}"))?;
    let w = Window::new(run.as_of, cfg.history_days, period);
    store::refresh_demand_from_orders(&app.pool, merchant, w.from, w.end())
        .await
        .context("rebuilding daily demand from order lines")?;
    let (settings, inputs) = store::merchant_inputs(&app.pool, merchant, w.from, w.end())
        .await
        .context("loading daily demand and stock")?;
    let due = store::due_for_accuracy(&app.pool, merchant, w.end())
        .await
        .context("loading past forecasts")?;
    let horizon = cfg.settings_for(period).horizon;
    let last = w.end() + Duration::days((horizon * period.days()) as i64);
    let calendar = Calendar::new(
        crate::store::calendar::days(&app.pool, merchant, w.from, last)
            .await
            .context("loading the merchant's calendar")?,
    );
    phases.read = started.elapsed();
    let started = std::time::Instant::now();
    let (results, accuracy) = tokio::task::spawn_blocking(move || {
        let results: Vec<SkuResult> = inputs
            .iter()
            .map(|i| forecast_sku(&cfg, i, w, settings, &calendar))
            .collect();
        let accuracy = score_past(&inputs, &due, w.from);
        (results, accuracy)
    })
    .await
    .context("forecast computation panicked")?;

    let at_risk: Vec<&SkuResult> = {
        let mut v: Vec<&SkuResult> = results.iter().filter(|r| r.at_risk).collect();
        v.sort_by(|a, b| risk_rank(b).total_cmp(&risk_rank(a)).then(a.sku.cmp(&b.sku)));
        v
    };
    let digest = (!at_risk.is_empty()).then(|| {
        let id = digest_id(run.id, merchant);
        let skus: Vec<_> = at_risk
            .iter()
            .take(app.config.forecast.digest_max_skus)
            .map(|r| {
                json!({
                    "sku": r.sku,
                    "stockout_probability": (r.stockout_probability * 1000.0).round() / 1000.0,
                    "available": r.available,
                    "lead_time_days": r.lead_time_days,
                    "lead_time_demand": (r.lead_time_demand * 10.0).round() / 10.0,
                    "days_of_cover": r.days_of_cover,
                    "reorder_point": r.reorder_point,
                    "suggested_order": r.suggested_order,
                    "value_at_risk_minor": r.value_at_risk_minor,
                })
            })
            .collect();
        let payload = json!({
            "merchant_id": merchant,
            "run_id": run.id,
            "as_of": run.as_of,
            "horizon_days": run.horizon_days,
            "at_risk_total": at_risk.len(),
            "skus": skus,
        });
        (id, payload)
    });
    let n_risk = at_risk.len();
    phases.fit = started.elapsed();
    let started = std::time::Instant::now();
    let status = store::store_merchant(
        &app.pool,
        run,
        merchant,
        &results,
        &accuracy,
        digest.as_ref().map(|(id, p)| (id.as_str(), p)),
    )
    .await
    .context("storing forecasts")?;
    if let Some((id, _)) = &digest {
        crate::enqueue::notify_merchants(app, vec![id.clone()])
            .await
            .map_err(|e| anyhow::anyhow!("queueing the digest webhook: {e}"))?;
    }
    tracing::info!(
        run = run.id,
        merchant,
        skus = results.len(),
        at_risk = n_risk,
        "merchant forecast stored"
    );
    Ok(MerchantOutcome {
        skipped: false,
        skus: results.len(),
        at_risk: n_risk,
        run_status: status,
        digest: digest.map(|(id, _)| id),
        phases: Phases {
            write: started.elapsed(),
            ..phases
        },
    })
}

/// The periods a merchant's series covers: `len` days or weeks from `from`.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: NaiveDate,
    len: usize,
    period: Period,
}

impl Window {
    /// The history of a run as of `as_of`: its last `history_days` days, or the whole weeks
    /// (Monday to Sunday) among them that ended by `as_of`.
    fn new(as_of: NaiveDate, history_days: usize, period: Period) -> Window {
        use chrono::Datelike;
        let (end, len) = match period {
            Period::Day => (as_of, history_days),
            Period::Week => {
                let back = (as_of.weekday().num_days_from_monday() + 1) % 7;
                (as_of - Duration::days(back as i64), (history_days / 7).max(1))
            }
        };
        Window {
            from: end - Duration::days((len * period.days()) as i64 - 1),
            len,
            period,
        }
    }

    /// The window of the same periods that ends on `end` and starts no earlier than `from`
    /// would allow, `extra` periods longer (a past forecast's horizon).
    fn ending(from: NaiveDate, end: NaiveDate, period: Period, extra: usize) -> (Window, usize) {
        let k = period.days() as i64;
        let before = ((end - from).num_days() + 1).max(0) / k;
        let w = Window {
            from: end - Duration::days(before * k - 1),
            len: before as usize + extra,
            period,
        };
        (w, before as usize)
    }

    /// The last day of the window.
    fn end(&self) -> NaiveDate {
        self.from + Duration::days((self.len * self.period.days()) as i64 - 1)
    }

    /// The period `day` falls in.
    fn index(&self, day: NaiveDate) -> Option<usize> {
        let d = (day - self.from).num_days();
        let i = usize::try_from(d).ok()? / self.period.days();
        (i < self.len).then_some(i)
    }
}

/// The dense series of a SKU over the window, and its recent average price (the last 90 days).
/// In a week with an imported row only the imported units count, as on a day with one.
fn dense(input: &SkuInput, w: Window) -> (Vec<f64>, Option<i64>) {
    let mut y = vec![0.0; w.len];
    let (mut units, mut revenue) = (0i64, 0i64);
    let recent = w.end() - Duration::days(89);
    let mut imported = vec![false; if w.period == Period::Day { 0 } else { w.len }];
    for day in &input.imported {
        if let Some(i) = w.index(*day).filter(|_| !imported.is_empty()) {
            imported[i] = true;
        }
    }
    let mut is_imported = input.imported.iter().peekable();
    for &(day, u, priced, r) in &input.days {
        while is_imported.next_if(|d| **d < day).is_some() {}
        let own_import = is_imported.peek() == Some(&&day);
        let Some(i) = w.index(day) else {
            continue;
        };
        if imported.get(i).copied().unwrap_or(false) && !own_import {
            continue;
        }
        y[i] += u as f64;
        if day >= recent {
            units += priced;
            revenue += r;
        }
    }
    let price = if units > 0 {
        Some(revenue / units)
    } else {
        // No priced sale in 90 days: the average over everything loaded.
        let (u, r) = input.days.iter().fold((0, 0), |(a, b), d| (a + d.2, b + d.3));
        (u > 0).then(|| r / u)
    };
    (y, price)
}

/// A merchant's unusual days, for all its SKUs and per SKU.
#[derive(Debug, Default)]
struct Calendar {
    all: HashMap<NaiveDate, DayKind>,
    by_sku: HashMap<String, Vec<(NaiveDate, DayKind)>>,
}

impl Calendar {
    fn new(rows: Vec<(NaiveDate, String, String)>) -> Self {
        let mut c = Calendar::default();
        for (day, kind, sku) in rows {
            let Some(kind) = DayKind::parse(&kind) else {
                continue;
            };
            if sku.is_empty() {
                c.all
                    .entry(day)
                    .and_modify(|k| *k = stronger(*k, kind))
                    .or_insert(kind);
            } else {
                c.by_sku.entry(sku).or_default().push((day, kind));
            }
        }
        c
    }

    /// The kind of each period of `w` for `sku` (a promotion wins over a holiday; a week
    /// takes the strongest of its days).
    fn kinds(&self, sku: &str, w: Window) -> Vec<Option<DayKind>> {
        let mut out = vec![None; w.len];
        let own = self.by_sku.get(sku).into_iter().flatten().copied();
        for (day, kind) in self.all.iter().map(|(d, k)| (*d, *k)).chain(own) {
            if let Some(i) = w.index(day) {
                let slot = &mut out[i];
                *slot = Some(slot.map_or(kind, |k| stronger(k, kind)));
            }
        }
        out
    }
}

fn stronger(a: DayKind, b: DayKind) -> DayKind {
    if a == DayKind::Promotion || b == DayKind::Promotion {
        DayKind::Promotion
    } else {
        DayKind::Holiday
    }
}

/// Which periods of `w` the SKU was out of stock (a week: on any of its days).
fn out_of_stock_mask(input: &SkuInput, w: Window) -> Vec<bool> {
    let mut mask = vec![false; w.len];
    for day in &input.out_of_stock {
        if let Some(i) = w.index(*day) {
            mask[i] = true;
        }
    }
    mask
}

fn forecast_sku(
    cfg: &ForecastConfig,
    input: &SkuInput,
    w: Window,
    merchant: store::MerchantSettings,
    calendar: &Calendar,
) -> SkuResult {
    let (mut y, price) = dense(input, w);
    // Holidays and promotions are set aside (their effect learnt), and out-of-stock days are
    // lost demand, not low demand: both estimated as usual days before any method fits.
    let out = out_of_stock_mask(input, w);
    let step = w.period.step();
    let effects = set_aside_by(&mut y, &calendar.kinds(&input.sku, w), &out, step);
    unconstrain_by(&mut y, &out, step);
    let settings = cfg.settings_for(w.period);
    let mut f = forecast_series(&y, &settings);
    let ahead = Window {
        from: w.end() + Duration::days(1),
        len: settings.horizon,
        period: w.period,
    };
    apply(&mut f, &calendar.kinds(&input.sku, ahead), &effects);
    let policy = cfg.policy(input.lead_time_days.or(merchant.lead_time_days));
    let warn = merchant.warn_probability.unwrap_or(cfg.warn_probability);
    // Unknown stock is not zero stock: advice is computed as if on hand were 0 only to fill the
    // row's fields, and the SKU is neither advised (no stock_advice row) nor ever at risk.
    let known = input.available.is_some();
    let available = input.available.unwrap_or(0);
    // Lead times are days: a weekly forecast is read as its days.
    let a = advise(&f.daily(w.period), available as f64, 0.0, &policy);
    let value = (a.expected_shortfall * price.unwrap_or(0) as f64).round() as i64;
    SkuResult {
        sku: input.sku.clone(),
        model: f.model,
        fallback: f.fallback.clone(),
        class: f.class.as_str(),
        adi: f.adi.is_finite().then_some(f.adi),
        cv2: f.cv2,
        history_days: f.history_days as i32,
        validation_rmsse: f.validation_rmsse,
        dispersion: f.dispersion,
        available: available.min(i32::MAX as i64) as i32,
        lead_time_days: policy.lead_time_days as i32,
        lead_time_demand: a.lead_time_demand,
        stockout_probability: a.stockout_probability,
        reorder_point: a.reorder_point.min(i32::MAX as f64) as i32,
        order_up_to: a.order_up_to.min(i32::MAX as f64) as i32,
        suggested_order: a.suggested_order.min(i32::MAX as f64) as i32,
        expected_shortfall: a.expected_shortfall,
        days_of_cover: a.days_of_cover.map(|d| d as i32),
        unit_price_minor: price,
        value_at_risk_minor: value,
        // A SKU with nothing forecast is never at risk, whatever its stock; nor is one whose
        // stock is unknown.
        at_risk: known && a.lead_time_demand > 0.0 && a.stockout_probability >= warn,
        stock_known: known,
        series_end: w.end(),
        period_days: w.period.days() as i16,
        mean: f.mean,
        p50: f.p50,
        p90: f.p90,
        p95: f.p95,
    }
}

/// Scores past forecasts whose horizon has passed against the demand loaded for this run.
fn score_past(inputs: &[SkuInput], due: &[DueForecast], from: NaiveDate) -> Vec<Accuracy> {
    let by_sku: std::collections::HashMap<&str, &SkuInput> =
        inputs.iter().map(|i| (i.sku.as_str(), i)).collect();
    due.iter()
        .map(|d| {
            let h = d.mean.len();
            let period = if d.period_days == 7 {
                Period::Week
            } else {
                Period::Day
            };
            let (w, before) = Window::ending(from, d.as_of, period, h);
            let (mut series, mask) = by_sku
                .get(d.sku.as_str())
                .map(|i| (dense(i, w).0, out_of_stock_mask(i, w)))
                .unwrap_or_else(|| (vec![0.0; w.len], vec![false; w.len]));
            // The scale comes from the history as fitted (lost demand estimated); the periods
            // scored are those the SKU could be bought: an empty shelf's zero is not an error.
            unconstrain_by(&mut series[..before], &mask[..before], period.step());
            let (train, actual) = series.split_at(before);
            let (actual, with) = uncensored(actual, &mask[before..], &[&d.mean, &d.p90]);
            let (mean, p90) = (&with[0], &with[1]);
            let start = train.iter().position(|&v| v > 0.0).unwrap_or(train.len());
            // Nothing to score when the shelf was empty all the horizon.
            let scales = naive_scales(&train[start..]).filter(|_| !actual.is_empty());
            let (hit, n) = covered(&actual, p90);
            Accuracy {
                forecast_id: d.id,
                sku: d.sku.clone(),
                as_of: d.as_of,
                days: actual.len() as i32,
                actual_units: actual.iter().sum(),
                forecast_units: mean.iter().sum(),
                rmsse: scales.map(|(sq, _)| rmsse(&actual, mean, sq)),
                pinball_p90: scales.map(|(_, abs)| scaled_pinball(&actual, p90, 0.9, abs)),
                coverage_p90: hit as f64 / n.max(1) as f64,
            }
        })
        .collect()
}

/// Works through every merchant of a run still to do, in this process. `on_merchant` is told
/// about each one (for progress).
pub async fn run_in_process(
    app: &App,
    run: &Run,
    mut on_merchant: impl FnMut(&str, &anyhow::Result<MerchantOutcome>),
) -> anyhow::Result<(usize, usize)> {
    let (mut ok, mut failed) = (0, 0);
    for merchant in store::pending_merchants(&app.pool, run.id).await? {
        let r = process_merchant(app, run, &merchant).await;
        on_merchant(&merchant, &r);
        match r {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    Ok((ok, failed))
}

/// A text chart of recent sales (`#`) and the forecast (p50 `o`, up to p90 `:`), one column
/// per `unit` (day or week), `rows` high.
pub fn text_chart(history: &[f64], p50: &[f64], p90: &[f64], rows: usize, unit: &str) -> String {
    let top = history
        .iter()
        .chain(p90.iter())
        .copied()
        .fold(0.0f64, f64::max)
        .max(1.0);
    let rows = rows.max(2);
    let mut out = String::new();
    for r in (1..=rows).rev() {
        let level = top * r as f64 / rows as f64;
        let below = top * (r - 1) as f64 / rows as f64;
        let label = if r == rows || r == 1 || r == rows / 2 {
            format!("{level:>7.1} |")
        } else {
            "        |".to_owned()
        };
        out.push_str(&label);
        for &v in history {
            out.push(if v > below { '#' } else { ' ' });
        }
        out.push('|');
        for (m, hi) in p50.iter().zip(p90) {
            out.push(if *m > below {
                'o'
            } else if *hi > below {
                ':'
            } else {
                ' '
            });
        }
        out.push('\n');
    }
    let left = format!("last {} {unit}s (# sold)", history.len());
    let right = format!("next {} {unit}s (o p50, : to p90)", p50.len());
    out.push_str(&format!(
        "        +{}+{}\n         {left:<w$}{right}\n",
        "-".repeat(history.len()),
        "-".repeat(p50.len()),
        w = history.len() + 1
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chart_draws_history_then_forecast() {
        let chart = text_chart(&[0.0, 2.0, 4.0], &[1.0, 1.0], &[3.0, 4.0], 4, "day");
        let lines: Vec<&str> = chart.lines().collect();
        assert_eq!(lines.len(), 6, "{chart}");
        // Top row: only the 4-unit day and the p90 of 4 reach it.
        assert!(lines[0].ends_with("|  #| :"), "{chart}");
        // Bottom row: both sold days, and the p50 of 1 is drawn as o.
        assert!(lines[3].ends_with("| ##|oo"), "{chart}");
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weekly_windows_hold_whole_weeks_and_an_imported_week_counts_its_import_only() {
        // Wednesday 2026-10-14: the last whole week ended on Sunday the 11th.
        let w = Window::new(day("2026-10-14"), 730, Period::Week);
        assert_eq!((w.len, w.end()), (104, day("2026-10-11")));
        assert_eq!(w.from, day("2024-10-14"));
        assert_eq!(w.index(day("2026-10-05")), Some(103));
        assert_eq!(w.index(day("2026-10-12")), None);
        let d = Window::new(day("2026-10-14"), 730, Period::Day);
        assert_eq!((d.len, d.end()), (730, day("2026-10-14")));
        // The week of 10-05 was imported (70 on its Monday); souk's own 50 on its Wednesday is
        // in that figure already. The week before has only souk's orders: they count.
        let input = SkuInput {
            sku: "A".into(),
            days: vec![
                (day("2026-09-29"), 5, 0, 0),
                (day("2026-10-01"), 6, 0, 0),
                (day("2026-10-05"), 70, 0, 0),
                (day("2026-10-07"), 50, 0, 0),
            ],
            imported: vec![day("2026-10-05")],
            ..Default::default()
        };
        let (y, _) = dense(&input, w);
        assert_eq!(&y[102..], &[11.0, 70.0]);
        // By day, every day counts (the day rule is applied in SQL).
        let (y, _) = dense(&input, d);
        assert_eq!(y.iter().sum::<f64>(), 131.0);
        // A past weekly forecast scored on a daily window: whole weeks ending on its as_of.
        let (s, before) = Window::ending(day("2024-10-16"), day("2026-10-11"), Period::Week, 8);
        assert_eq!((s.from, before, s.len), (day("2024-10-21"), 103, 111));
    }

    #[test]
    fn digest_ids_are_stable() {
        assert_eq!(digest_id(7, "m1"), "msg_fc7_m1");
    }
}
