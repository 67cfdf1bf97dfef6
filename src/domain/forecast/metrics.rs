//! Accuracy measures: RMSSE (M5's scale-free squared error), the scaled pinball loss of a
//! quantile, and coverage.
//!
//! Both scaled measures divide by the in-sample one-day naive error of the training series, as
//! in the M5 competition, so SKUs selling 0.1 or 100 a day count alike. MASE is not used: it
//! flatters an all-zero forecast on sparse series.

/// The in-sample naive scales of a training series: mean squared and mean absolute one-day
/// difference. `None` when the series never changes (nothing to scale by).
pub fn naive_scales(train: &[f64]) -> Option<(f64, f64)> {
    if train.len() < 2 {
        return None;
    }
    let n = (train.len() - 1) as f64;
    let (sq, abs) = train.windows(2).fold((0.0, 0.0), |(s, a), w| {
        (s + (w[1] - w[0]).powi(2), a + (w[1] - w[0]).abs())
    });
    (sq > 0.0).then_some((sq / n, abs / n))
}

/// Root mean squared scaled error of `forecast` against `actual`.
pub fn rmsse(actual: &[f64], forecast: &[f64], scale_sq: f64) -> f64 {
    let mse = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).powi(2))
        .sum::<f64>()
        / actual.len() as f64;
    (mse / scale_sq).sqrt()
}

/// Mean pinball loss of quantile `q` of level `tau`, scaled by the mean absolute naive error.
pub fn scaled_pinball(actual: &[f64], quantile: &[f64], tau: f64, scale_abs: f64) -> f64 {
    let loss = actual
        .iter()
        .zip(quantile)
        .map(|(&a, &q)| {
            if a >= q {
                tau * (a - q)
            } else {
                (1.0 - tau) * (q - a)
            }
        })
        .sum::<f64>()
        / actual.len() as f64;
    loss / scale_abs
}

/// Days where the actual did not exceed the quantile, and days counted.
pub fn covered(actual: &[f64], quantile: &[f64]) -> (usize, usize) {
    let hit = actual.iter().zip(quantile).filter(|(a, q)| a <= q).count();
    (hit, actual.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_match_hand_computed_values() {
        // Differences 2, −1, 3: squared mean 14/3, absolute mean 2.
        let (sq, abs) = naive_scales(&[1.0, 3.0, 2.0, 5.0]).unwrap();
        assert!((sq - 14.0 / 3.0).abs() < 1e-12 && (abs - 2.0).abs() < 1e-12);
        assert!(naive_scales(&[4.0, 4.0]).is_none());
        // Errors 1 and 3: MSE 5; scaled by 5 → RMSSE 1.
        assert!((rmsse(&[2.0, 0.0], &[1.0, 3.0], 5.0) - 1.0).abs() < 1e-12);
        // τ = 0.9: actual 5 over q 3 costs 0.9·2 = 1.8; actual 1 under q 3 costs 0.1·2 = 0.2.
        assert!((scaled_pinball(&[5.0, 1.0], &[3.0, 3.0], 0.9, 1.0) - 1.0).abs() < 1e-12);
        assert_eq!(covered(&[5.0, 1.0, 3.0], &[3.0, 3.0, 3.0]), (2, 3));
    }
}
