//! Count distributions for demand by mean and variance: negative binomial above the mean,
//! Poisson at it, a normal rounded to whole units below it (a steady schedule, such as a route
//! flown the same number of times every day, varies less than Poisson), with quantiles and tail
//! probabilities.
//!
//! Demand is counted in whole units, so quantiles are whole numbers: `quantile(p)` is the
//! smallest `x` with `P(D ≤ x) ≥ p`. That makes them non-negative and non-decreasing in `p` by
//! construction. Large means use the same rounded normal (a normal approximation with continuity
//! correction).
//!
//! Below Poisson a binomial was used first; its whole number of trials made a count that is
//! always 1 (mean 1, variance 0.1) a binomial(2, ½), whose p90 is 2. The rounded normal keeps it
//! at 1, and its variance is kept at least what a count with a fractional mean must have.

/// Demand over some days: a count with this mean and variance (at least [`MIN_VAR_RATIO`] of
/// the mean, and at least `f(1 − f)` for the fractional part `f` of the mean: the least any
/// count with that mean can vary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub mean: f64,
    pub var: f64,
}

/// Above this mean the normal approximation is used (the pmf recursion would start from an
/// underflowing `P(0)` and walk hundreds of steps).
const NORMAL_ABOVE: f64 = 150.0;

/// The smallest variance-to-mean ratio taken: below it, a day's demand would be all but certain.
pub const MIN_VAR_RATIO: f64 = 0.1;

impl Demand {
    pub fn new(mean: f64, var: f64) -> Self {
        let mean = if mean.is_finite() { mean.max(0.0) } else { 0.0 };
        let f = mean.fract();
        let var = if var.is_finite() {
            var.max(MIN_VAR_RATIO * mean).max(f * (1.0 - f))
        } else {
            mean
        };
        Demand { mean, var }
    }

    /// P(D ≤ x) for each `x` in `xs` (ascending), in one walk of the pmf.
    fn cdf_walk(&self, mut visit: impl FnMut(u64, f64) -> bool) {
        let mu = self.mean;
        if mu <= 0.0 {
            visit(0, 1.0);
            return;
        }
        // NB with size k: var = μ + μ²/k; p = k/(k+μ). Poisson when var ≈ μ (below it the
        // rounded normal is used instead of this walk).
        let excess = self.var - mu;
        let tol = 1e-9 * mu.max(1.0);
        let nb = (excess > tol).then(|| {
            let k = mu * mu / excess;
            (k, mu / (k + mu))
        });
        let mut pmf = match nb {
            Some((k, _)) => (k * (k / (k + mu)).ln()).exp(),
            None => (-mu).exp(),
        };
        let ratio = |x: u64| match nb {
            Some((k, q)) => q * (x as f64 + k) / (x as f64 + 1.0),
            None => mu / (x as f64 + 1.0),
        };
        let mut cdf = pmf;
        let mut x = 0u64;
        // Bounded: the tail beyond mean + 60 sd is below any p we ask for.
        let limit = (mu + 60.0 * self.var.sqrt() + 50.0) as u64;
        loop {
            if !visit(x, cdf.min(1.0)) || x >= limit {
                return;
            }
            pmf *= ratio(x);
            x += 1;
            cdf += pmf;
        }
    }

    /// The rounded normal: for large means, and below Poisson.
    fn normal(&self) -> bool {
        self.mean > NORMAL_ABOVE || self.var < self.mean * (1.0 - 1e-9)
    }

    /// Smallest whole `x` with P(D ≤ x) ≥ p, for p in (0, 1).
    pub fn quantile(&self, p: f64) -> f64 {
        let mut out = [0.0];
        self.quantiles(&[p], &mut out);
        out[0]
    }

    /// Several quantiles at once; `ps` ascending.
    pub fn quantiles(&self, ps: &[f64], out: &mut [f64]) {
        if self.normal() {
            for (o, &p) in out.iter_mut().zip(ps) {
                let z = normal_quantile(p);
                *o = (self.mean + z * self.var.sqrt() - 0.5).ceil().max(0.0);
            }
            return;
        }
        let mut i = 0;
        let mut last = 0u64;
        self.cdf_walk(|x, cdf| {
            last = x;
            while i < ps.len() && cdf >= ps[i] {
                out[i] = x as f64;
                i += 1;
            }
            i < ps.len()
        });
        for o in out.iter_mut().skip(i) {
            *o = last as f64;
        }
    }

    /// P(D ≤ x).
    pub fn cdf(&self, x: f64) -> f64 {
        if x < 0.0 {
            return 0.0;
        }
        if self.normal() {
            let z = (x.floor() + 0.5 - self.mean) / self.var.sqrt();
            return normal_cdf(z);
        }
        let target = x.floor() as u64;
        let mut out = 1.0;
        self.cdf_walk(|k, cdf| {
            if k == target {
                out = cdf;
                false
            } else {
                true
            }
        });
        out
    }

    /// E[max(D − x, 0)]: expected demand not served by `x` units.
    pub fn expected_shortfall(&self, x: f64) -> f64 {
        // E[(D − x)+] = E[D] − x + E[(x − D)+] = μ − x + Σ_{d<x} (x − d) P(d).
        let x = x.max(0.0).floor();
        if self.normal() {
            let sd = self.var.sqrt();
            let z = (x - self.mean) / sd;
            let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            return (sd * (pdf - z * (1.0 - normal_cdf(z)))).max(0.0);
        }
        let mut below = 0.0;
        let mut prev = 0.0;
        self.cdf_walk(|d, cdf| {
            if (d as f64) >= x {
                return false;
            }
            below += (x - d as f64) * (cdf - prev);
            prev = cdf;
            true
        });
        (self.mean - x + below).max(0.0)
    }
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 on erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_count_is_narrower_than_poisson() {
        // 10 a day with variance 2: 10 + 1.2816 · √2 = 11.81, rounded: 12.
        let steady = Demand::new(10.0, 2.0);
        let poisson = Demand::new(10.0, 10.0);
        assert_eq!(steady.quantile(0.9), 12.0);
        assert_eq!(poisson.quantile(0.9), 14.0);
        assert_eq!(steady.quantile(0.5), 10.0);
        // P(D ≤ 8) = Φ((8.5 − 10)/√2) = Φ(−1.0607) = 0.14442.
        assert!((steady.cdf(8.0) - 0.14442).abs() < 1e-4, "{}", steady.cdf(8.0));
        assert!(steady.expected_shortfall(10.0) < poisson.expected_shortfall(10.0));
        // No variance is taken below a tenth of the mean.
        assert_eq!(Demand::new(10.0, 0.0).var, 1.0);
        // A count that is always 1, at the least variance taken: P(D ≤ 1) = Φ(0.5/√0.1) =
        // 0.943, so its p90 stays 1 (a binomial(2, ½) put it at 2).
        let once = Demand::new(1.0, 0.1);
        let mut q = [0.0; 3];
        once.quantiles(&[0.5, 0.9, 0.95], &mut q);
        assert_eq!(q, [1.0, 1.0, 2.0]);
        // A mean of 0.3 cannot vary less than 0 or 1 with P(1) = 0.3 does: variance 0.21.
        let rare = Demand::new(0.3, 0.03);
        assert!((rare.var - 0.21).abs() < 1e-12);
        assert_eq!(rare.quantile(0.5), 0.0);
        assert_eq!(rare.quantile(0.9), 1.0);
    }

    #[test]
    fn poisson_quantiles_and_cdf_match_tables() {
        // Poisson(2): P(0) = 0.135335, P(≤1) = 0.406006, P(≤2) = 0.676676, P(≤3) = 0.857123,
        // P(≤4) = 0.947347, P(≤5) = 0.983436.
        let d = Demand::new(2.0, 2.0);
        assert!((d.cdf(0.0) - 0.135_335).abs() < 1e-6);
        assert!((d.cdf(3.0) - 0.857_123).abs() < 1e-6);
        let mut q = [0.0; 3];
        d.quantiles(&[0.5, 0.9, 0.95], &mut q);
        assert_eq!(q, [2.0, 4.0, 5.0]); // P(≤4) = 0.947 < 0.95
        assert_eq!(d.quantile(0.94), 4.0);
    }

    #[test]
    fn negative_binomial_matches_a_known_value() {
        // NB with mean 4, variance 12: k = 16/8 = 2, P(0) = (2/6)^2 = 1/9,
        // P(1) = P(0)·k·q = 1/9 · 2 · 2/3 = 4/27 → P(≤1) = 7/27.
        let d = Demand::new(4.0, 12.0);
        assert!((d.cdf(0.0) - 1.0 / 9.0).abs() < 1e-12);
        assert!((d.cdf(1.0) - 7.0 / 27.0).abs() < 1e-12);
    }

    #[test]
    fn quantiles_are_coherent_for_any_mean_and_spread() {
        for &mean in &[0.0, 0.01, 0.3, 1.0, 7.5, 40.0, 149.0, 151.0, 5000.0] {
            for &ratio in &[1.0, 1.5, 4.0, 30.0] {
                let d = Demand::new(mean, mean * ratio);
                let mut q = [0.0; 3];
                d.quantiles(&[0.5, 0.9, 0.95], &mut q);
                assert!(
                    q[0] >= 0.0 && q[0] <= q[1] && q[1] <= q[2],
                    "{mean} {ratio} {q:?}"
                );
                assert!(q[2].is_finite() && q[2] <= mean + 60.0 * (mean * ratio).sqrt() + 50.0);
                assert!(d.cdf(q[1]) >= 0.9 - 1e-3, "{mean} {ratio} {q:?}");
            }
        }
    }

    #[test]
    fn normal_helpers_match_tables() {
        assert!((normal_cdf(1.644_853_6) - 0.95).abs() < 1e-6);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.01) + 2.326_348).abs() < 1e-5);
    }

    #[test]
    fn expected_shortfall_is_mean_at_zero_and_falls_with_stock() {
        let d = Demand::new(3.0, 6.0);
        assert!((d.expected_shortfall(0.0) - 3.0).abs() < 1e-9);
        assert!(d.expected_shortfall(2.0) < d.expected_shortfall(1.0));
        assert!(d.expected_shortfall(60.0) < 1e-6);
        let big = Demand::new(1000.0, 1000.0);
        assert!((big.expected_shortfall(1000.0) - 31.62 * 0.3989).abs() < 0.2);
    }
}
