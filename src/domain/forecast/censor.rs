//! Lost demand: days a SKU was out of stock are censored, not zero demand.
//!
//! On a day the shelf was empty, what sold is only a lower bound on what customers wanted
//! (often 0). Fitting on those zeros pulls the forecast down for exactly the SKUs that sell out,
//! which are the ones a merchant most needs to reorder. [`unconstrain`] replaces each censored
//! day by an estimate of its demand from the uncensored days around it, never below what did
//! sell, before any method sees the series; scoring leaves censored days out ([`uncensored`]).
//!
//! Must not: look at anything but the series and its mask (no dates, no stock levels).

use super::methods::SEASON;

/// Weeks either side of a censored day whose same weekday is used for its estimate.
const WEEKS: usize = 8;
/// With no uncensored same weekday in reach, days either side whose mean is used instead.
const DAYS: usize = 28;

/// Replaces the demand of every censored day (`censored[t]`) with the larger of what sold and
/// the mean of the same weekday over the uncensored days within [`WEEKS`] weeks either side (or,
/// when there is none, of every uncensored day within [`DAYS`] days). Days before the first sale
/// are left alone: a SKU not launched yet has no lost demand. A day with nothing uncensored in
/// reach keeps its value.
pub fn unconstrain(y: &mut [f64], censored: &[bool]) {
    unconstrain_by(y, censored, SEASON)
}

/// [`unconstrain`] for a series whose periods repeat every `step` (7 for days, 1 for weeks:
/// a censored week is estimated from the uncensored weeks within [`WEEKS`] either side).
pub fn unconstrain_by(y: &mut [f64], censored: &[bool], step: usize) {
    // Most SKUs never ran out: no copy of their series.
    if !censored.contains(&true) {
        return;
    }
    let Some(first) = y.iter().position(|&v| v > 0.0) else {
        return;
    };
    let observed: Vec<f64> = y.to_vec();
    let open = |i: usize| !censored.get(i).copied().unwrap_or(false);
    for t in first..y.len() {
        if open(t) {
            continue;
        }
        if let Some(e) = usual_demand(&observed, t, first, step, open) {
            y[t] = observed[t].max(e);
        }
    }
}

/// What day `t` of `y` would have sold on a usual day: the mean of the same weekday (every
/// `step`-th period: 7 for days, 1 for weeks) over the days `usable` says are usual, within
/// [`WEEKS`] weeks either side and not before `first`; when there is none, of every usable day
/// within [`DAYS`] days; else `None`.
pub fn usual_demand(
    y: &[f64],
    t: usize,
    first: usize,
    step: usize,
    usable: impl Fn(usize) -> bool,
) -> Option<f64> {
    let same_weekday = (1..=WEEKS)
        .flat_map(|k| [t.checked_sub(k * step), Some(t + k * step)])
        .flatten()
        .filter(|&i| i >= first && i < y.len() && usable(i));
    mean(same_weekday.map(|i| y[i])).or_else(|| {
        let lo = t.saturating_sub(DAYS).max(first);
        let hi = (t + DAYS + 1).min(y.len());
        mean((lo..hi).filter(|&i| i != t && usable(i)).map(|i| y[i]))
    })
}

/// The values of `series` on the days that are not censored, paired with the same days of each
/// of `alongside` (forecasts scored against them).
pub fn uncensored(series: &[f64], censored: &[bool], alongside: &[&[f64]]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let keep: Vec<usize> = (0..series.len())
        .filter(|&i| !censored.get(i).copied().unwrap_or(false))
        .collect();
    let pick = |s: &[f64]| {
        keep.iter()
            .filter_map(|&i| s.get(i).copied())
            .collect::<Vec<f64>>()
    };
    (pick(series), alongside.iter().map(|s| pick(s)).collect())
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four weeks of a weekday pattern (5 on day 0 of the week, 1 otherwise).
    fn weeks(n: usize) -> Vec<f64> {
        (0..n * SEASON)
            .map(|t| if t % SEASON == 0 { 5.0 } else { 1.0 })
            .collect()
    }

    #[test]
    fn censored_days_get_the_demand_of_their_weekday_not_zero() {
        // (what sold on the censored days, what they become)
        let cases: &[(&[usize], f64, &[f64])] = &[
            // A stock-out over the whole third week: each day takes its weekday's level.
            (
                &[14, 15, 16, 17, 18, 19, 20],
                0.0,
                &[5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            ),
            // What did sell on a censored day is a lower bound, never lowered.
            (&[15], 3.0, &[3.0]),
            (&[21], 2.0, &[5.0]),
        ];
        for &(days, sold, want) in cases {
            let mut y = weeks(4);
            let mut censored = vec![false; y.len()];
            for &d in days {
                y[d] = sold;
                censored[d] = true;
            }
            unconstrain(&mut y, &censored);
            let got: Vec<f64> = days.iter().map(|&d| y[d]).collect();
            assert_eq!(got, want, "censored days {days:?} that sold {sold}");
            // Uncensored days are untouched.
            let base = weeks(4);
            assert!((0..y.len()).filter(|i| !censored[*i]).all(|i| y[i] == base[i]));
        }
    }

    #[test]
    fn a_sku_not_launched_yet_and_a_sku_never_sold_have_no_lost_demand() {
        let mut y = vec![0.0; 10];
        y.extend(weeks(3));
        let mut censored = vec![true; 10];
        censored.extend(vec![false; 21]);
        let before = y.clone();
        unconstrain(&mut y, &censored);
        assert_eq!(y, before, "days before the first sale stay as they are");
        let mut never = vec![0.0; 14];
        unconstrain(&mut never, &[true; 14]);
        assert_eq!(never, vec![0.0; 14]);
    }

    #[test]
    fn with_no_same_weekday_in_reach_the_nearby_days_decide() {
        // Two weeks, the whole second one censored except its last day: the censored days have
        // their same weekday only in the first week.
        let mut y = weeks(2);
        let mut censored = vec![false; 14];
        censored[7..13].iter_mut().for_each(|c| *c = true);
        y[7..13].iter_mut().for_each(|v| *v = 0.0);
        unconstrain(&mut y, &censored);
        assert_eq!(&y[7..13], &[5.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        // Everything after the first sale censored: nothing to estimate from.
        let mut y = vec![2.0, 0.0, 0.0];
        unconstrain(&mut y, &[false, true, true]);
        assert_eq!(y, vec![2.0, 2.0, 2.0]);
    }

    #[test]
    fn scoring_leaves_censored_days_out() {
        let (actual, with) = uncensored(&[1.0, 0.0, 3.0], &[false, true, false], &[&[1.5, 2.0, 2.5]]);
        assert_eq!(actual, vec![1.0, 3.0]);
        assert_eq!(with, vec![vec![1.5, 2.5]]);
    }
}
