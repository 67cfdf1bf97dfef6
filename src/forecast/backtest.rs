//! The backtest behind `souk bench forecast`: generate a panel, hold out the last `horizon`
//! days of every SKU, forecast from the rest exactly as the nightly job does (method choice,
//! quantiles, stock advice), and score against what was held out and against seasonal naive.

use std::{collections::BTreeMap, time::Instant};

use serde_json::json;

use crate::domain::forecast::{
    forecast_series,
    generator::{generate_sku, PanelSpec},
    inventory::{advise, Policy},
    methods::{Model, SeasonalNaive},
    metrics::{covered, naive_scales, rmsse, scaled_pinball},
    Settings,
};

/// Options of `souk bench forecast`.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    pub skus: usize,
    pub merchants: usize,
    pub days: usize,
    pub seed: u64,
    pub threads: usize,
    pub settings: Settings,
    pub policy: Policy,
}

#[derive(Default)]
struct Totals {
    evaluated: usize,
    skipped: usize,
    rmsse: f64,
    rmsse_snaive: f64,
    pinball90: f64,
    pinball90_snaive: f64,
    hits: [usize; 3],
    days: usize,
    models: BTreeMap<&'static str, usize>,
    classes: BTreeMap<&'static str, usize>,
    fallbacks: usize,
    at_risk: usize,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        self.evaluated += o.evaluated;
        self.skipped += o.skipped;
        self.rmsse += o.rmsse;
        self.rmsse_snaive += o.rmsse_snaive;
        self.pinball90 += o.pinball90;
        self.pinball90_snaive += o.pinball90_snaive;
        for i in 0..3 {
            self.hits[i] += o.hits[i];
        }
        self.days += o.days;
        for (k, v) in o.models {
            *self.models.entry(k).or_default() += v;
        }
        for (k, v) in o.classes {
            *self.classes.entry(k).or_default() += v;
        }
        self.fallbacks += o.fallbacks;
        self.at_risk += o.at_risk;
    }
}

/// Splits `0..n` over `threads` scoped threads and folds each part's result.
fn parallel<T: Send>(n: usize, threads: usize, work: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let threads = threads.max(1);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let work = &work;
                s.spawn(move || work(start..(start + chunk).min(n)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("backtest thread"))
            .collect()
    })
}

/// Runs the backtest; returns the figures as JSON.
pub fn run(o: &BacktestOptions) -> serde_json::Value {
    let spec = PanelSpec {
        merchants: o.merchants,
        skus: o.skus,
        days: o.days,
        seed: o.seed,
    };
    let t0 = Instant::now();
    let panel: Vec<Vec<f64>> = parallel(o.skus, o.threads, |r| {
        r.map(|i| {
            generate_sku(&spec, i)
                .units
                .iter()
                .map(|&u| u as f64)
                .collect::<Vec<f64>>()
        })
        .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let generate_s = t0.elapsed().as_secs_f64();
    let h = o.settings.horizon;
    let cut = o.days - h;

    let t1 = Instant::now();
    let mut totals = Totals::default();
    for part in parallel(panel.len(), o.threads, |r| {
        let mut t = Totals::default();
        let mut snaive = Vec::with_capacity(h);
        for y in &panel[r] {
            let (train, test) = y.split_at(cut);
            let f = forecast_series(train, &o.settings);
            let available = test.iter().sum::<f64>() * 0.5;
            let advice = advise(&f, available, 0.0, &o.policy);
            if advice.stockout_probability > 0.5 {
                t.at_risk += 1;
            }
            *t.models.entry(f.model).or_default() += 1;
            *t.classes.entry(f.class.as_str()).or_default() += 1;
            if f.fallback.is_some() {
                t.fallbacks += 1;
            }
            let start = train.iter().position(|&v| v > 0.0).unwrap_or(train.len());
            let hist = &train[start..];
            let Some((sq, abs)) = naive_scales(hist) else {
                t.skipped += 1;
                continue;
            };
            SeasonalNaive.forecast(hist, h, &mut snaive);
            t.evaluated += 1;
            t.rmsse += rmsse(test, &f.mean, sq);
            t.rmsse_snaive += rmsse(test, &snaive, sq);
            t.pinball90 += scaled_pinball(test, &f.p90, 0.9, abs);
            t.pinball90_snaive += scaled_pinball(test, &snaive, 0.9, abs);
            for (i, q) in [&f.p50, &f.p90, &f.p95].into_iter().enumerate() {
                t.hits[i] += covered(test, q).0;
            }
            t.days += test.len();
        }
        t
    }) {
        totals.add(part);
    }
    let seconds = t1.elapsed().as_secs_f64();
    let n = totals.evaluated.max(1) as f64;
    let days = totals.days.max(1) as f64;
    let r = totals.rmsse / n;
    let rs = totals.rmsse_snaive / n;
    json!({
        "skus": o.skus,
        "history_days": o.days,
        "horizon_days": h,
        "evaluated_skus": totals.evaluated,
        "skipped_skus": totals.skipped,
        "rmsse": r,
        "rmsse_seasonal_naive": rs,
        "rmsse_ratio": r / rs,
        "pinball_p90": totals.pinball90 / n,
        "pinball_p90_seasonal_naive": totals.pinball90_snaive / n,
        "coverage_p50": totals.hits[0] as f64 / days,
        "coverage_p90": totals.hits[1] as f64 / days,
        "coverage_p95": totals.hits[2] as f64 / days,
        "seconds": seconds,
        "skus_per_s": o.skus as f64 / seconds,
        "generate_seconds": generate_s,
        "threads": o.threads,
        "models": totals.models,
        "classes": totals.classes,
        "fallbacks": totals.fallbacks,
        "stock_at_risk_skus": totals.at_risk,
        "seed": o.seed,
    })
}
