//! The forecasting methods, each behind the [`Model`] trait: fit on a daily series, return the
//! mean demand of the next `h` days.
//!
//! Parameters are chosen per series by the smallest one-step-ahead in-sample squared error over a
//! small grid (cheap, deterministic, and good enough: the choice *between* methods is made by
//! rolling-origin validation in [`super::forecast_series`]). The seasonal period is a week
//! ([`SEASON`]); index 0 of a series is its first day, so weekday positions are `t % 7`.

/// Days in the seasonal cycle.
pub const SEASON: usize = 7;

/// A forecasting method.
pub trait Model: Sync {
    /// Stable name, stored with each forecast.
    fn name(&self) -> &'static str;
    /// Fits on `y` (at least one value) and writes the mean forecast of the next `h` days.
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>);
    /// What its validation error is multiplied by before the methods are compared: above 1
    /// for a method that must win clearly to be chosen.
    fn handicap(&self) -> f64 {
        1.0
    }
}

/// Simple exponential smoothing, α from a grid.
pub struct Ses;
/// ETS(A,N,A): additive level and weekly season (Holt-Winters without trend), α and γ from a grid.
pub struct EtsAna;
impl Model for EtsAnaYearly {
    fn name(&self) -> &'static str {
        "ets_ana_52"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let (level, season) = ets_ana_best::<YEAR_WEEKS>(y);
        let n = y.len();
        out.clear();
        out.extend((0..h).map(|i| (level + season[(n + i) % YEAR_WEEKS]).max(0.0)));
    }
}

/// A multiplicative weekday profile (shrunk towards flat when sales are few) removed, SES on
/// what is left, the profile put back: ETS(M,N,M) in spirit, robust on count data.
pub struct WeekdaySes;
/// Croston's method: SES on the non-zero sizes and on the intervals between them.
pub struct Croston;
/// Syntetos–Boylan approximation: Croston times the bias correction 1 − α/2.
pub struct Sba;
/// Teunter–Syntetos–Babai: SES on the demand probability every day and on the sizes when
/// there is demand; decays towards zero for a SKU that stopped selling.
pub struct Tsb;
/// Seasonal naive: the same weekday of the last week. The benchmark, not a candidate.
pub struct SeasonalNaive;
/// The mean of the last 28 days (days before the first sale not counted, but at least 14 days
/// in the divisor): the fallback for short histories.
pub struct RecentMean;

/// ETS(A,N,A) with a 52-week season, for weekly series with two years or more.
pub struct EtsAnaYearly;
/// [`WeekdaySes`] moved by last year's change: the ratio of what sold in the days a year before
/// the horizon to what sold in the four weeks a year before the forecast starts, shrunk
/// towards 1 when those are few units. For daily series with two years or more.
pub struct YearlyWeekdaySes;

/// The candidates compared by rolling-origin validation on daily series.
pub const CANDIDATES: &[&dyn Model] = &[&EtsAna, &WeekdaySes, &Ses, &Croston, &Sba, &Tsb];

/// Weeks in the yearly season of weekly series.
pub const YEAR_WEEKS: usize = 52;
/// A year of whole weeks, in days: a year back is the same weekday.
pub const YEAR_DAYS: usize = 364;

/// The candidates for a daily series of `n` days: the yearly change too once two years can
/// show it (validation keeps it only where it wins).
pub fn daily_candidates(n: usize) -> &'static [&'static dyn Model] {
    const LONG: &[&dyn Model] = &[
        &EtsAna,
        &WeekdaySes,
        &YearlyWeekdaySes,
        &Ses,
        &Croston,
        &Sba,
        &Tsb,
    ];
    if n >= 2 * YEAR_DAYS {
        LONG
    } else {
        CANDIDATES
    }
}

/// The candidates for a weekly series of `n` weeks: no weekday pattern to learn; the yearly
/// season once two whole years can show it.
pub fn weekly_candidates(n: usize) -> &'static [&'static dyn Model] {
    const SHORT: &[&dyn Model] = &[&Ses, &Croston, &Sba, &Tsb];
    const LONG: &[&dyn Model] = &[&EtsAnaYearly, &Ses, &Croston, &Sba, &Tsb];
    if n >= 2 * YEAR_WEEKS {
        LONG
    } else {
        SHORT
    }
}

const ALPHAS: [f64; 5] = [0.02, 0.05, 0.1, 0.2, 0.35];
const GAMMAS: [f64; 3] = [0.0, 0.03, 0.1];
const CROSTON_ALPHAS: [f64; 4] = [0.05, 0.1, 0.2, 0.3];
const TSB_BETAS: [f64; 3] = [0.01, 0.05, 0.15];

/// SES with a given α: the final level and the one-step in-sample squared error (after the first
/// value, which initialises the level).
pub fn ses_fit(y: &[f64], alpha: f64) -> (f64, f64) {
    let mut level = y[0];
    let mut sse = 0.0;
    for &v in &y[1..] {
        let e = v - level;
        sse += e * e;
        level += alpha * e;
    }
    (level, sse)
}

impl Model for Ses {
    fn name(&self) -> &'static str {
        "ses"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let (level, _) = best(&ALPHAS, |a| ses_fit(y, a));
        out.clear();
        out.resize(h, level.max(0.0));
    }
}

/// Runs `fit` for each parameter and keeps the result with the smallest error (first on ties).
fn best<P: Copy, T>(grid: &[P], mut fit: impl FnMut(P) -> (T, f64)) -> (T, f64) {
    let mut it = grid.iter();
    let first = *it.next().expect("non-empty grid");
    let mut keep = fit(first);
    for &p in it {
        let r = fit(p);
        if r.1 < keep.1 {
            keep = r;
        }
    }
    keep
}

/// The initial level and weekly season of ETS(A,N,A): the mean of the first whole weeks (up to
/// four) and each weekday's mean deviation from it.
fn initial_season<const S: usize>(y: &[f64]) -> (f64, [f64; S]) {
    let cycles = (y.len() / S).clamp(1, 4);
    let n = (cycles * S).min(y.len());
    let level = y[..n].iter().sum::<f64>() / n as f64;
    let mut season = [0.0; S];
    let mut count = [0usize; S];
    for (t, &v) in y[..n].iter().enumerate() {
        season[t % S] += v - level;
        count[t % S] += 1;
    }
    for j in 0..S {
        if count[j] > 0 {
            season[j] /= count[j] as f64;
        }
    }
    (level, season)
}

/// One-step errors beyond this many error scales are cut back to it before they update the
/// state: Huber's ψ with the usual 2, as in the robust Holt-Winters of Gelper, Fried & Croux
/// (2010). A holiday Monday otherwise drags every later Monday down for weeks.
const HUBER_K: f64 = 2.0;
/// Weight of each new (cut) absolute error in the running error scale.
const SCALE_WEIGHT: f64 = 0.05;

/// The α × γ grid of ETS(A,N,A), fitted side by side.
const GRID: usize = ALPHAS.len() * GAMMAS.len();

/// ETS(A,N,A) in error-correction form, robust to outlying days, for every α and γ of the grid
/// in one pass over `y` (the fits are independent, so they run side by side instead of each
/// waiting on its own chain of updates): the final level and season of the fit with the least
/// one-step sum of squared (cut) errors, the first such in grid order.
pub fn ets_ana_best<const S: usize>(y: &[f64]) -> (f64, [f64; S]) {
    let mut alpha = [0.0; GRID];
    let mut gamma = [0.0; GRID];
    for (i, (a, g)) in ALPHAS
        .iter()
        .flat_map(|&a| GAMMAS.iter().map(move |&g| (a, g)))
        .enumerate()
    {
        alpha[i] = a;
        gamma[i] = g;
    }
    let (level0, season0) = initial_season::<S>(y);
    // The error scale starts at the mean absolute change between the first two cycles (plus
    // one unit, so a flat start does not cut every later error to nothing); 1.25 × mean
    // absolute error estimates a normal standard deviation.
    let mut mae0 = 1.0;
    if y.len() > S {
        let n = y.len().min(2 * S);
        mae0 += (S..n).map(|t| (y[t] - y[t - S]).abs()).sum::<f64>() / (n - S) as f64;
    }
    let mut level = [level0; GRID];
    let mut mae = [mae0; GRID];
    let mut sse = [0.0; GRID];
    let mut season = [[0.0; GRID]; S];
    for (j, row) in season.iter_mut().enumerate() {
        *row = [season0[j]; GRID];
    }
    for (t, &v) in y.iter().enumerate() {
        let row = &mut season[t % S];
        for i in 0..GRID {
            let limit = HUBER_K * 1.25 * mae[i];
            let e = (v - (level[i] + row[i])).max(-limit).min(limit);
            mae[i] += SCALE_WEIGHT * (e.abs() - mae[i]);
            sse[i] += e * e;
            level[i] += alpha[i] * e;
            row[i] += gamma[i] * e;
        }
    }
    let mut k = 0;
    for i in 1..GRID {
        if sse[i] < sse[k] {
            k = i;
        }
    }
    (level[k], std::array::from_fn(|j| season[j][k]))
}

impl Model for EtsAna {
    fn name(&self) -> &'static str {
        "ets_ana"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let (level, season) = ets_ana_best::<SEASON>(y);
        let n = y.len();
        out.clear();
        out.extend((0..h).map(|i| (level + season[(n + i) % SEASON]).max(0.0)));
    }
}

/// The multiplicative weekday profile of the last 16 weeks, shrunk towards flat when there are
/// few sales, so that a handful of sales do not make a profile. Indexed by `t % 7` of the series.
pub fn weekday_profile(y: &[f64]) -> [f64; SEASON] {
    let start = y.len().saturating_sub(16 * SEASON);
    let mut sum = [0.0; SEASON];
    let mut count = [0.0; SEASON];
    for (t, &v) in y.iter().enumerate().skip(start) {
        sum[t % SEASON] += v;
        count[t % SEASON] += 1.0;
    }
    let total: f64 = sum.iter().sum();
    let days: f64 = count.iter().sum();
    if total <= 0.0 || days <= 0.0 {
        return [1.0; SEASON];
    }
    let mean = total / days;
    // Shrink each weekday's ratio towards 1 by the weight of the evidence: with 10 sales in
    // the window the profile is half-way, with hundreds it is nearly the raw ratio.
    let weight = total / (total + 10.0);
    let mut profile = [1.0; SEASON];
    for j in 0..SEASON {
        if count[j] > 0.0 {
            let raw = sum[j] / (mean * count[j]);
            profile[j] = 1.0 + weight * (raw - 1.0);
        }
    }
    // Normalise so the profile averages 1 over a week.
    let avg = profile.iter().sum::<f64>() / SEASON as f64;
    profile.map(|p| p / avg)
}

impl Model for WeekdaySes {
    fn name(&self) -> &'static str {
        "weekday_ses"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let profile = weekday_profile(y);
        let adjusted: Vec<f64> = y
            .iter()
            .enumerate()
            .map(|(t, &v)| v / profile[t % SEASON])
            .collect();
        let (level, _) = best(&ALPHAS, |a| ses_fit(&adjusted, a));
        let n = y.len();
        out.clear();
        out.extend((0..h).map(|i| (level * profile[(n + i) % SEASON]).max(0.0)));
    }
}

/// Days a year back whose sales are the base of the yearly change.
const YEAR_BASE_DAYS: usize = 28;
/// Units added to both sides of the yearly ratio: a change shown by a handful of sales is
/// mostly ignored, one shown by hundreds is nearly taken whole.
const YEAR_PSEUDO_UNITS: f64 = 10.0;

impl Model for YearlyWeekdaySes {
    fn name(&self) -> &'static str {
        "weekday_ses_yearly"
    }
    /// Two 28-day windows cannot tell a yearly change from noise on most SKUs: chosen on a
    /// narrow win, it made the panel's forecasts worse on average (docs/forecasting.md).
    fn handicap(&self) -> f64 {
        1.15
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        WeekdaySes.forecast(y, h, out);
        let n = y.len();
        if h == 0 || n < YEAR_DAYS + YEAR_BASE_DAYS {
            return;
        }
        let start = n - YEAR_DAYS;
        let ahead = &y[start..(start + h).min(n)];
        let base = &y[start - YEAR_BASE_DAYS..start];
        let a: f64 = ahead.iter().sum();
        let b: f64 = base.iter().sum::<f64>() * ahead.len() as f64 / YEAR_BASE_DAYS as f64;
        let ratio = ((a + YEAR_PSEUDO_UNITS) / (b + YEAR_PSEUDO_UNITS)).clamp(0.2, 5.0);
        out.iter_mut().for_each(|v| *v *= ratio);
    }
}

/// Croston with a given α, as statsforecast's `croston_classic` initialises it: size and
/// interval start at the first demand and the periods up to it. Returns the final (size,
/// interval) and the one-step SSE of `factor × size / interval` (factor 1 for Croston, 1 − α/2
/// for SBA). `None` when the series has no demand.
pub fn croston_fit(y: &[f64], alpha: f64, factor: f64) -> Option<((f64, f64), f64)> {
    let first = y.iter().position(|&v| v > 0.0)?;
    let mut size = y[first];
    let mut interval = (first + 1) as f64;
    let mut since = 0.0;
    let mut sse = 0.0;
    for &v in &y[first + 1..] {
        since += 1.0;
        let e = v - factor * size / interval;
        sse += e * e;
        if v > 0.0 {
            size += alpha * (v - size);
            interval += alpha * (since - interval);
            since = 0.0;
        }
    }
    Some(((size, interval), sse))
}

fn croston_like(y: &[f64], h: usize, out: &mut Vec<f64>, sba: bool) {
    let mut keep: Option<(f64, f64)> = None;
    for &a in &CROSTON_ALPHAS {
        let factor = if sba { 1.0 - a / 2.0 } else { 1.0 };
        if let Some(((z, p), sse)) = croston_fit(y, a, factor) {
            if keep.is_none_or(|(_, s)| sse < s) {
                keep = Some((factor * z / p, sse));
            }
        }
    }
    out.clear();
    out.resize(h, keep.map_or(0.0, |(f, _)| f.max(0.0)));
}

impl Model for Croston {
    fn name(&self) -> &'static str {
        "croston"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        croston_like(y, h, out, false)
    }
}

impl Model for Sba {
    fn name(&self) -> &'static str {
        "sba"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        croston_like(y, h, out, true)
    }
}

/// TSB with α (sizes) and β (probability): final (probability, size) and the one-step SSE.
/// Initial probability is the share of days with demand, initial size the mean non-zero demand.
pub fn tsb_fit(y: &[f64], alpha: f64, beta: f64) -> Option<((f64, f64), f64)> {
    let nonzero: Vec<f64> = y.iter().copied().filter(|&v| v > 0.0).collect();
    if nonzero.is_empty() {
        return None;
    }
    let mut prob = nonzero.len() as f64 / y.len() as f64;
    let mut size = nonzero.iter().sum::<f64>() / nonzero.len() as f64;
    let mut sse = 0.0;
    for &v in y {
        let e = v - prob * size;
        sse += e * e;
        if v > 0.0 {
            prob += beta * (1.0 - prob);
            size += alpha * (v - size);
        } else {
            prob -= beta * prob;
        }
    }
    Some(((prob, size), sse))
}

impl Model for Tsb {
    fn name(&self) -> &'static str {
        "tsb"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let mut keep: Option<(f64, f64)> = None;
        for &a in &CROSTON_ALPHAS {
            for &b in &TSB_BETAS {
                if let Some(((p, z), sse)) = tsb_fit(y, a, b) {
                    if keep.is_none_or(|(_, s)| sse < s) {
                        keep = Some((p * z, sse));
                    }
                }
            }
        }
        out.clear();
        out.resize(h, keep.map_or(0.0, |(f, _)| f.max(0.0)));
    }
}

impl Model for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal_naive"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let n = y.len();
        out.clear();
        out.extend((0..h).map(|i| {
            if n >= SEASON {
                y[n - SEASON + i % SEASON]
            } else {
                y[n - 1]
            }
        }));
    }
}

impl Model for RecentMean {
    fn name(&self) -> &'static str {
        "recent_mean"
    }
    fn forecast(&self, y: &[f64], h: usize, out: &mut Vec<f64>) {
        let tail = &y[y.len().saturating_sub(28)..];
        // A SKU a few days old has not shown a rate yet: its sales are spread over at least two
        // weeks, so a launch-day burst is not projected onto every following day.
        let mean = tail.iter().sum::<f64>() / tail.len().max(14) as f64;
        out.clear();
        out.resize(h, mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ses_follows_the_textbook_recursion() {
        // l0 = 3; l1 = 3 + 0.5(5 − 3) = 4; l2 = 4 + 0.5(4 − 4) = 4; l3 = 4 + 0.5(8 − 4) = 6.
        // One-step errors 2, 0, 4 → SSE 20.
        let (level, sse) = ses_fit(&[3.0, 5.0, 4.0, 8.0], 0.5);
        assert!(close(level, 6.0), "{level}");
        assert!(close(sse, 20.0), "{sse}");
    }

    #[test]
    fn croston_matches_a_hand_computed_example() {
        // y = 0 0 3 0 5 0 0 2, α = 0.1 (statsforecast's croston_classic initialisation):
        // first demand at index 2: z = 3, p = 3.
        // index 4 (2 days later): z = 3 + 0.1(5 − 3) = 3.2; p = 3 + 0.1(2 − 3) = 2.9
        // index 7 (3 days later): z = 3.2 + 0.1(2 − 3.2) = 3.08; p = 2.9 + 0.1(3 − 2.9) = 2.91
        // forecast = 3.08 / 2.91 = 1.058419…; SBA = (1 − 0.05) × that = 1.005498…
        let y = [0.0, 0.0, 3.0, 0.0, 5.0, 0.0, 0.0, 2.0];
        let ((z, p), _) = croston_fit(&y, 0.1, 1.0).unwrap();
        assert!(close(z, 3.08) && close(p, 2.91), "{z} {p}");
        assert!((z / p - 1.058_419_243_986_254).abs() < 1e-12);
        assert!((0.95 * z / p - 1.005_498_281_786_941_4).abs() < 1e-12);
        assert!(croston_fit(&[0.0; 5], 0.1, 1.0).is_none());
    }

    #[test]
    fn tsb_matches_a_hand_computed_example_and_decays_after_the_last_sale() {
        // y = 2 0 4 0, α = 0.5, β = 0.5: p0 = 2/4 = 0.5, z0 = 3.
        // t0 (2): p = 0.5 + 0.5(1 − 0.5) = 0.75, z = 3 + 0.5(2 − 3) = 2.5
        // t1 (0): p = 0.375; t2 (4): p = 0.6875, z = 3.25; t3 (0): p = 0.34375
        // forecast = 0.34375 × 3.25 = 1.1171875
        let ((p, z), _) = tsb_fit(&[2.0, 0.0, 4.0, 0.0], 0.5, 0.5).unwrap();
        assert!(close(p * z, 1.117_187_5), "{p} {z}");
        let mut y = vec![1.0; 60];
        y.extend([0.0; 60]);
        let mut out = Vec::new();
        Tsb.forecast(&y, 7, &mut out);
        let mut c = Vec::new();
        Croston.forecast(&y, 7, &mut c);
        assert!(out[0] < 0.2 && c[0] > 0.9, "tsb {} croston {}", out[0], c[0]);
    }

    #[test]
    fn ets_ana_learns_a_weekly_pattern_exactly() {
        let week = [1.0, 1.0, 1.0, 1.0, 2.0, 6.0, 4.0];
        let y: Vec<f64> = (0..70).map(|t| week[t % 7]).collect();
        let mut out = Vec::new();
        EtsAna.forecast(&y, 14, &mut out);
        for (i, f) in out.iter().enumerate() {
            assert!((f - week[(70 + i) % 7]).abs() < 1e-9, "day {i}: {f}");
        }
        WeekdaySes.forecast(&y, 7, &mut out);
        // The shrunk profile is close to, not exactly, the pattern.
        let peak = out.iter().cloned().fold(0.0, f64::max);
        assert!((peak - 6.0).abs() < 0.6, "{out:?}");
    }

    #[test]
    fn one_holiday_monday_does_not_sink_the_next_mondays() {
        // Commuter traffic: 9,000 on weekdays, 2,000 at weekends, with a little wobble; the
        // Monday two weeks before the end is a holiday at 1,600.
        let week = [9_000.0, 9_000.0, 9_000.0, 9_000.0, 8_000.0, 2_000.0, 1_500.0];
        let mut y: Vec<f64> = (0..364)
            .map(|t| week[t % 7] + [0.0, 150.0, -150.0][t % 3])
            .collect();
        y[350] = 1_600.0;
        let mut out = Vec::new();
        EtsAna.forecast(&y, 7, &mut out);
        // Day 364 is a Monday. Without the cut, γ = 0.1 of a −7,400 error would take 740 off
        // it (and the fit would prefer a larger α, moving the whole week).
        assert!((out[0] - 9_000.0).abs() < 300.0, "{out:?}");
        assert!((out[5] - 2_000.0).abs() < 300.0, "{out:?}");
    }

    #[test]
    fn the_short_history_fallback_spreads_a_launch_burst_over_two_weeks() {
        let mut out = Vec::new();
        RecentMean.forecast(&[28.0], 3, &mut out);
        assert_eq!(out, vec![2.0; 3]);
        let y: Vec<f64> = (0..40).map(|t| (t % 2) as f64).collect();
        RecentMean.forecast(&y, 1, &mut out);
        assert_eq!(out, vec![0.5]);
    }

    #[test]
    fn seasonal_naive_repeats_last_week() {
        let y: Vec<f64> = (0..14).map(|t| t as f64).collect();
        let mut out = Vec::new();
        SeasonalNaive.forecast(&y, 9, &mut out);
        assert_eq!(out, vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 7.0, 8.0]);
    }
}
