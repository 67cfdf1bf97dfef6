//! Demand forecasting math: pure functions from a daily demand series to a forecast with
//! quantiles, and from a forecast and a stock level to stock-out risk and a reorder suggestion.
//!
//! - [`methods`]: the methods behind souk's own [`methods::Model`] trait (ETS(A,N,A), weekday
//!   profile + SES, SES, Croston, SBA, TSB; seasonal naive as the benchmark).
//! - [`classify`]: ADI / CV² classes (smooth, erratic, intermittent, lumpy).
//! - [`censor`]: out-of-stock days as lost demand, not zero demand.
//! - [`calendar`]: holidays and promotions set aside in fitting, their effect put back.
//! - [`dist`]: count distributions for quantiles and tail probabilities.
//! - [`metrics`]: RMSSE, scaled pinball loss, coverage.
//! - [`inventory`]: lead-time demand, stock-out probability, reorder point, order quantity.
//! - [`generator`]: a seeded, realistic marketplace demand history.
//!
//! [`forecast_series`] picks the method per series by rolling-origin validation (the class is
//! recorded, not used to choose), then puts a negative binomial around the chosen mean whose
//! spread comes from the validation errors, so the quantiles say how wrong the mean has been.

pub mod calendar;
pub mod censor;
pub mod classify;
pub mod dist;
pub mod generator;
pub mod history;
pub mod inventory;
pub mod methods;
pub mod metrics;

use classify::{classify, DemandClass};
use dist::Demand;
use methods::{daily_candidates, weekly_candidates, Model, RecentMean, SEASON};

/// The quantile levels every forecast carries.
pub const LEVELS: [f64; 3] = [0.5, 0.9, 0.95];

/// How series are forecast.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Periods forecast.
    pub horizon: usize,
    /// Below this many periods of history (from the first sale), the fallback is used.
    pub min_history_days: usize,
    /// Rolling origins used to choose the method (each validates `horizon` periods).
    pub origins: usize,
    /// The series' period: days (the default) or weeks.
    pub period: Period,
}

/// What one value of a series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Period {
    #[default]
    Day,
    Week,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
        }
    }

    /// Days in one period.
    pub fn days(self) -> usize {
        match self {
            Period::Day => 1,
            Period::Week => 7,
        }
    }

    /// Periods between a period and the one of the same kind in the usual cycle: a weekday
    /// recurs every 7 days; weeks are compared with their neighbours.
    pub fn step(self) -> usize {
        match self {
            Period::Day => SEASON,
            Period::Week => 1,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            horizon: 28,
            min_history_days: 56,
            origins: 2,
            period: Period::Day,
        }
    }
}

/// One SKU's forecast.
#[derive(Debug, Clone)]
pub struct SkuForecast {
    pub class: DemandClass,
    pub adi: f64,
    pub cv2: f64,
    /// The method used.
    pub model: &'static str,
    /// Why a fallback was used instead of a validated method.
    pub fallback: Option<String>,
    /// Days from the first sale to the end of the history.
    pub history_days: usize,
    /// Mean demand per day, then the p50 / p90 / p95 daily quantiles.
    pub mean: Vec<f64>,
    pub p50: Vec<f64>,
    pub p90: Vec<f64>,
    pub p95: Vec<f64>,
    /// RMSSE of the chosen method over the validation windows.
    pub validation_rmsse: Option<f64>,
    /// Variance-to-mean ratio of the daily demand around the forecast.
    pub dispersion: f64,
    /// Each candidate's validation mean squared error (empty for fallbacks).
    pub candidates: Vec<(&'static str, f64)>,
}

impl SkuForecast {
    /// The same forecast per day: each week's mean spread evenly over its seven days, with the
    /// same dispersion (seven days of variance φ·m/7 add up to the week's φ·m), so stock advice,
    /// which works in days of lead time, reads weekly forecasts too. A daily one is lent as it is.
    pub fn daily(&self, period: Period) -> std::borrow::Cow<'_, SkuForecast> {
        let k = period.days();
        if k == 1 {
            return std::borrow::Cow::Borrowed(self);
        }
        let mean: Vec<f64> = self
            .mean
            .iter()
            .flat_map(|m| std::iter::repeat_n(m / k as f64, k))
            .collect();
        let n = mean.len();
        let mut f = SkuForecast {
            mean,
            p50: vec![0.0; n],
            p90: vec![0.0; n],
            p95: vec![0.0; n],
            fallback: self.fallback.clone(),
            candidates: Vec::new(),
            ..*self
        };
        fill_quantiles(&mut f);
        std::borrow::Cow::Owned(f)
    }

    /// Demand over the first `days` days of the forecast (repeating the last week beyond the
    /// horizon).
    pub fn demand_over(&self, days: usize) -> Demand {
        let h = self.mean.len();
        let mean: f64 = (0..days)
            .map(|d| {
                if h == 0 {
                    0.0
                } else if d < h {
                    self.mean[d]
                } else {
                    self.mean[h - 7.min(h) + (d - h) % 7.min(h)]
                }
            })
            .sum();
        Demand::new(mean, mean * self.dispersion)
    }
}

/// Forecasts one daily series (zero days included, oldest first).
pub fn forecast_series(y: &[f64], s: &Settings) -> SkuForecast {
    let start = y.iter().position(|&v| v > 0.0).unwrap_or(y.len());
    let hist = &y[start..];
    let recent = &hist[hist.len().saturating_sub(365)..];
    let (adi, cv2, class) = classify(recent);
    let h = s.horizon;
    let mut out = SkuForecast {
        class,
        adi,
        cv2,
        model: "zero",
        fallback: None,
        history_days: hist.len(),
        mean: vec![0.0; h],
        p50: vec![0.0; h],
        p90: vec![0.0; h],
        p95: vec![0.0; h],
        validation_rmsse: None,
        dispersion: 1.0,
        candidates: Vec::new(),
    };
    if hist.is_empty() {
        out.fallback = Some("no sales recorded".to_owned());
        return out;
    }
    let mut buf = Vec::with_capacity(h);
    let origins: Vec<usize> = (1..=s.origins)
        .rev()
        .map(|i| hist.len().saturating_sub(i * h))
        .filter(|&o| o >= s.min_history_days.saturating_sub(h).max(14))
        .collect();
    if hist.len() < s.min_history_days || origins.is_empty() {
        RecentMean.forecast(hist, h, &mut out.mean);
        out.model = RecentMean.name();
        let unit = match s.period {
            Period::Day => "days",
            Period::Week => "weeks",
        };
        out.fallback = Some(format!(
            "{} {unit} of history (fewer than {}): mean of the last 28 {unit} (at least 14 counted)",
            hist.len(),
            s.min_history_days
        ));
        let tail = &hist[hist.len().saturating_sub(56)..];
        let m = tail.iter().sum::<f64>() / tail.len() as f64;
        let v = tail.iter().map(|x| (x - m).powi(2)).sum::<f64>() / tail.len() as f64;
        out.dispersion = if m > 0.0 { (v / m).max(1.0) } else { 1.0 };
        fill_quantiles(&mut out);
        return out;
    }
    // Rolling origins: fit on hist[..o], score the next h days (or fewer at the end).
    // (model, sse, sum f, days) of the best candidate so far.
    let mut best: Option<(&dyn Model, f64, f64, f64)> = None;
    // (actual, forecast) of every validation day: this candidate's, and the best one's.
    let (mut pairs, mut best_pairs) = (Vec::new(), Vec::new());
    let candidates = match s.period {
        Period::Day => daily_candidates(hist.len()),
        Period::Week => weekly_candidates(hist.len()),
    };
    for &m in candidates {
        let (mut sse, mut fsum, mut days) = (0.0, 0.0, 0.0);
        pairs.clear();
        for &o in &origins {
            let end = (o + h).min(hist.len());
            m.forecast(&hist[..o], end - o, &mut buf);
            for (a, f) in hist[o..end].iter().zip(&buf) {
                sse += (a - f).powi(2);
                pairs.push((*a, *f));
                fsum += f;
                days += 1.0;
            }
        }
        out.candidates.push((m.name(), sse / days));
        if best.is_none_or(|(b, s, _, _)| sse * m.handicap() < s * b.handicap()) {
            best = Some((m, sse, fsum, days));
            std::mem::swap(&mut pairs, &mut best_pairs);
        }
    }
    let (model, sse, fsum, days) = best.expect("candidates");
    model.forecast(hist, h, &mut out.mean);
    out.model = model.name();
    let mse = sse / days;
    let fmean = fsum / days;
    if let Some((scale_sq, _)) = metrics::naive_scales(&hist[..origins[0]]) {
        out.validation_rmsse = Some((mse / scale_sq).sqrt());
    }
    // Quasi-Poisson spread: E[(y − f)²] ≈ φ · E[f]; below 1 for a steady schedule. A few
    // very large misses (a holiday, a one-off bulk order) inflate the squared error and widen
    // every day's quantiles, so the spread is cut to the least that would still have covered
    // the validation days as often as the p90 promises, where that is less.
    out.dispersion = if fmean > 1e-9 {
        let phi = (mse / fmean).clamp(dist::MIN_VAR_RATIO, 1e4);
        covering_dispersion(&best_pairs, 0.9, phi)
    } else {
        1.0
    };
    fill_quantiles(&mut out);
    out
}

/// A small dispersion, at most `most`, at which the `p`-quantiles of the forecasts cover at
/// least a share `p` of the actual values; `most` when even it does not. The normal
/// approximation gives each day the spread that would just cover it, and the share-`p` one of
/// those is the first guess; exact count quantiles then move it in steps of 20 %. Coverage
/// mostly grows with the spread (a very wide one can pull a small mean's quantile down to 0),
/// so the answer is near the least, not always the least.
fn covering_dispersion(pairs: &[(f64, f64)], p: f64, most: f64) -> f64 {
    if pairs.is_empty() {
        return most;
    }
    let need = ((p * pairs.len() as f64).ceil() as usize).clamp(1, pairs.len());
    let covers = |phi: f64| {
        pairs
            .iter()
            .filter(|&&(a, f)| a <= 0.0 || a <= Demand::new(f, f * phi).quantile(p))
            .count()
            >= need
    };
    let z = dist::normal_quantile(p);
    let mut just: Vec<f64> = pairs
        .iter()
        .map(|&(a, f)| ((a - 0.5 - f).max(0.0) / z).powi(2) / f.max(1e-9))
        .collect();
    let (_, guess, _) = just.select_nth_unstable_by(need - 1, f64::total_cmp);
    let least = dist::MIN_VAR_RATIO;
    let mut phi = guess.clamp(least, most);
    if covers(phi) {
        for _ in 0..8 {
            let lower = (phi / 1.2).max(least);
            if lower >= phi || !covers(lower) {
                break;
            }
            phi = lower;
        }
        phi
    } else {
        for _ in 0..8 {
            phi = (phi * 1.2).min(most);
            if phi >= most || covers(phi) {
                return phi;
            }
        }
        most
    }
}

fn fill_quantiles(f: &mut SkuForecast) {
    let mut q = [0.0; 3];
    for d in 0..f.mean.len() {
        Demand::new(f.mean[d], f.mean[d] * f.dispersion).quantiles(&LEVELS, &mut q);
        f.p50[d] = q[0];
        f.p90[d] = q[1];
        f.p95[d] = q[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_picks_the_method_that_fits_the_pattern() {
        // A strong weekly pattern: a seasonal method wins.
        let week = [2.0, 2.0, 2.0, 3.0, 5.0, 12.0, 9.0];
        let y: Vec<f64> = (0..200).map(|t| week[t % 7]).collect();
        let f = forecast_series(&y, &Settings::default());
        assert!(matches!(f.model, "ets_ana" | "weekday_ses"), "{}", f.model);
        // Sizes 2,2,2,3,5,12,9: mean 5, variance 13.7, CV² 0.55: erratic.
        assert_eq!(f.class, DemandClass::Erratic);
        assert!(f.fallback.is_none());
        // A SKU that stopped selling 60 days ago: Croston and SBA only update on sales, so
        // they keep forecasting the old rate; validation picks a method that has come down.
        let mut y: Vec<f64> = (0..300).map(|t| if t % 3 == 0 { 2.0 } else { 0.0 }).collect();
        y.extend([0.0; 60]);
        let f = forecast_series(&y, &Settings::default());
        assert!(!matches!(f.model, "croston" | "sba"), "{}", f.model);
        assert!(f.mean[0] < 0.1, "{:?}", &f.mean[..3]);
    }

    #[test]
    fn a_strong_yearly_wave_in_daily_sales_is_followed_after_two_years() {
        // 20 a day on average, ±60 % over the year (rising fastest through the forecast's
        // four weeks), a weekend lift, and a little deterministic noise.
        let truth = |t: usize| {
            let year = 1.0 + 0.6 * ((t as f64 - 1_092.0) * std::f64::consts::TAU / 364.0).sin();
            let weekday = if t % 7 >= 5 { 1.3 } else { 0.88 };
            20.0 * year * weekday
        };
        let y: Vec<f64> = (0..1_092)
            .map(|t| (truth(t) + ((t * 7_919) % 5) as f64 - 2.0).max(0.0).round())
            .collect();
        let f = forecast_series(&y, &Settings::default());
        assert_eq!(f.model, "weekday_ses_yearly", "{:?}", f.candidates);
        let want: f64 = (1_092..1_120).map(truth).sum();
        let got: f64 = f.mean.iter().sum();
        let mut plain = Vec::new();
        methods::WeekdaySes.forecast(&y, 28, &mut plain);
        let without: f64 = plain.iter().sum();
        assert!(
            (got - want).abs() < 0.6 * (without - want).abs(),
            "the next 28 days: {got:.0} with last year's change, {without:.0} without, {want:.0} true"
        );
        // Under two years it is not a candidate.
        let f = forecast_series(&y[..700], &Settings::default());
        assert!(f.candidates.iter().all(|(m, _)| *m != "weekday_ses_yearly"));
    }

    #[test]
    fn weekly_series_learn_the_yearly_season_once_two_years_show_it() {
        let weekly = Settings {
            horizon: 8,
            min_history_days: 16,
            origins: 2,
            period: Period::Week,
        };
        // Three years of a yearly wave: 40 ± 25 a week.
        let y: Vec<f64> = (0..156)
            .map(|t| (40.0 + 25.0 * (t as f64 * std::f64::consts::TAU / 52.0).sin()).round())
            .collect();
        let f = forecast_series(&y, &weekly);
        assert_eq!(f.model, "ets_ana_52");
        // Weeks 156.. are at the start of the wave again: rising from 40.
        assert!(
            (f.mean[0] - 40.0).abs() < 6.0 && f.mean[4] > f.mean[0] + 8.0,
            "{:?}",
            f.mean
        );
        // A year and a half: no yearly candidate, and no weekday pattern in weeks.
        let f = forecast_series(&y[..78], &weekly);
        assert!(
            matches!(f.model, "ses" | "croston" | "sba" | "tsb"),
            "{}",
            f.model
        );
        // Spread over its days for stock advice: the same demand and dispersion.
        let d = f.daily(Period::Week);
        assert_eq!(d.mean.len(), 56);
        assert!((d.mean[..7].iter().sum::<f64>() - f.mean[0]).abs() < 1e-9);
        assert!((d.demand_over(14).mean - f.mean[0] - f.mean[1]).abs() < 1e-9);
    }

    #[test]
    fn one_large_miss_does_not_widen_every_days_quantiles() {
        // 55 validation days missed by ±20 around 1,000, and one by 900 (a bulk order): the
        // squared error says φ ≈ 15.6; covering 90 % of the days needs far less.
        let mut pairs: Vec<(f64, f64)> = (0..55)
            .map(|i| (1_000.0 + [20.0, -20.0, 0.0, 10.0][i % 4], 1_000.0))
            .collect();
        pairs.push((1_900.0, 1_000.0));
        let mse = pairs.iter().map(|(a, f)| (a - f).powi(2)).sum::<f64>() / 56.0;
        let most = mse / 1_000.0;
        let phi = covering_dispersion(&pairs, 0.9, most);
        assert!(phi < most / 10.0, "{phi} vs {most}");
        let covered = |phi: f64| {
            pairs
                .iter()
                .filter(|&&(a, f)| a <= Demand::new(f, f * phi).quantile(0.9))
                .count()
        };
        assert!(covered(phi) >= 51, "{}", covered(phi));
        assert!(covered(phi / 1.5) < 51, "{}", covered(phi / 1.5));
        // When even the squared error's spread does not cover 90 %, it is kept.
        let wide: Vec<(f64, f64)> = (0..20).map(|i| (i as f64 * 10.0, 1.0)).collect();
        assert_eq!(covering_dispersion(&wide, 0.9, 3.0), 3.0);
    }

    #[test]
    fn quantiles_are_coherent_and_short_histories_fall_back() {
        let mut state = 7u64;
        let y: Vec<f64> = (0..400)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 5) as f64 * if (state >> 20) % 3 == 0 { 1.0 } else { 0.0 }
            })
            .collect();
        for series in [&y[..], &y[..30], &y[..1], &[0.0; 10][..]] {
            let f = forecast_series(series, &Settings::default());
            assert_eq!(f.mean.len(), 28);
            for d in 0..28 {
                assert!(f.mean[d] >= 0.0 && f.mean[d].is_finite());
                assert!(0.0 <= f.p50[d] && f.p50[d] <= f.p90[d] && f.p90[d] <= f.p95[d]);
                assert!(f.p95[d] < 1e6);
            }
        }
        let short = forecast_series(&y[..30], &Settings::default());
        assert_eq!(short.model, "recent_mean");
        assert!(short.fallback.as_deref().unwrap().contains("fewer than 56"));
        let none = forecast_series(&[0.0; 10], &Settings::default());
        assert_eq!(none.model, "zero");
        assert_eq!(none.class, DemandClass::NoDemand);
    }
}
