//! A seeded generator of marketplace demand history, for the demo, the forecast benchmark and
//! tests. The same seed gives the same panel on any machine and any number of threads: each SKU
//! draws from its own generator seeded by (seed, SKU index).
//!
//! What it models, per SKU: a base rate (log-normal: the median SKU sells every other day, a few
//! sell dozens), negative-binomial day-to-day noise, orders of one unit or (for a quarter of the
//! SKUs) several, a weekly pattern of varying strength, a yearly wave, a trend, promotions that
//! lift sales for a few days, launches during the history and discontinued SKUs.

use fastrand::Rng;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct PanelSpec {
    pub merchants: usize,
    pub skus: usize,
    pub days: usize,
    pub seed: u64,
}

/// One SKU's generated history.
#[derive(Debug, Clone)]
pub struct SkuHistory {
    /// 0-based merchant number (`merchant_id` formats it).
    pub merchant: usize,
    /// 0-based SKU number in the panel.
    pub index: usize,
    pub unit_price_minor: i64,
    /// Units sold per day, day 0 first.
    pub units: Vec<u32>,
    /// Stock available at the end of the history (a few weeks of cover, sometimes almost none).
    pub stock: u32,
}

pub fn merchant_id(m: usize) -> String {
    format!("gen-m{m:04}")
}

pub fn sku_code(i: usize) -> String {
    format!("GEN-{i:06}")
}

/// The merchant of SKU `i`: merchants get unequal catalogues (a few large, many small).
pub fn merchant_of(spec: &PanelSpec, i: usize) -> usize {
    // Position in [0,1) squared spreads SKUs towards the first merchants.
    let x = (i as f64 + 0.5) / spec.skus.max(1) as f64;
    ((x * x * spec.merchants as f64) as usize).min(spec.merchants.saturating_sub(1))
}

fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.f64().max(1e-300);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia–Tsang (with the boost for shape < 1).
fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(rng, shape + 1.0) * rng.f64().max(1e-300).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.f64();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn poisson(rng: &mut Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u32;
    }
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.f64();
    while p > limit {
        k += 1;
        p *= rng.f64();
    }
    k
}

/// Generates SKU `i` of the panel.
pub fn generate_sku(spec: &PanelSpec, i: usize) -> SkuHistory {
    let mut rng = Rng::with_seed(spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let days = spec.days;
    let rate = (0.5f64.ln() + 1.2 * normal(&mut rng)).exp().min(60.0);
    let lumpy = rng.f64() < 0.25;
    let mean_size = if lumpy { 1.0 + rng.f64() * 2.5 } else { 1.0 };
    let shape = 0.8 + rng.f64() * 5.0;
    let week = [0.85, 0.9, 0.95, 1.0, 1.1, 1.35, 0.85];
    let strength = rng.f64() * 1.5;
    let weekly = week.map(|w: f64| w.powf(strength));
    let phase_day = rng.usize(0..7);
    let yearly_amp = rng.f64() * 0.3;
    let yearly_phase = rng.f64() * std::f64::consts::TAU;
    let trend = 0.35 * normal(&mut rng);
    let launch = if rng.f64() < 0.2 && days > 60 {
        rng.usize(30..days - 20)
    } else {
        0
    };
    let end = if rng.f64() < 0.1 && days > 4 {
        rng.usize(days / 2..days)
    } else {
        days
    };
    let mut lift = vec![1.0; days];
    let promos = poisson(&mut rng, 2.0 * days as f64 / 730.0);
    for _ in 0..promos {
        let start = rng.usize(0..days.max(1));
        let len = rng.usize(3..11);
        let l = 1.5 + rng.f64() * 2.0;
        for v in lift.iter_mut().skip(start).take(len) {
            *v = l;
        }
    }
    let mut units = vec![0u32; days];
    for (t, u) in units.iter_mut().enumerate().take(end).skip(launch) {
        let year = t as f64 / 365.0;
        let lam = rate
            * weekly[(t + phase_day) % 7]
            * (1.0 + yearly_amp * (std::f64::consts::TAU * year + yearly_phase).sin())
            * (trend * year).exp()
            * lift[t];
        let mixed = gamma(&mut rng, shape) * lam / (shape * mean_size);
        let orders = poisson(&mut rng, mixed);
        *u = if lumpy {
            (0..orders).map(|_| 1 + poisson(&mut rng, mean_size - 1.0)).sum()
        } else {
            orders
        };
    }
    let recent = units[days.saturating_sub(28)..].iter().sum::<u32>() as f64 / 28.0;
    let cover_days = if rng.f64() < 0.15 {
        rng.f64() * 5.0
    } else {
        7.0 + rng.f64() * 50.0
    };
    SkuHistory {
        merchant: merchant_of(spec, i),
        index: i,
        unit_price_minor: (100.0 * (3.0f64.ln() + 0.8 * normal(&mut rng)).exp().clamp(1.0, 2000.0)).round()
            as i64,
        units,
        stock: (recent * cover_days).round() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::forecast::classify::{classify, DemandClass};

    #[test]
    fn the_same_seed_gives_the_same_panel_and_most_skus_are_intermittent() {
        let spec = PanelSpec {
            merchants: 10,
            skus: 400,
            days: 730,
            seed: 42,
        };
        let a: Vec<_> = (0..400).map(|i| generate_sku(&spec, i)).collect();
        let b = generate_sku(&spec, 17);
        assert_eq!(a[17].units, b.units);
        let other = generate_sku(&PanelSpec { seed: 43, ..spec }, 17);
        assert_ne!(a[17].units, other.units);
        let mut classes = std::collections::HashMap::new();
        for s in &a {
            let y: Vec<f64> = s.units.iter().map(|&u| u as f64).collect();
            let start = y.iter().position(|&v| v > 0.0).unwrap_or(y.len());
            *classes.entry(classify(&y[start..]).2).or_insert(0) += 1;
        }
        let sparse = classes.get(&DemandClass::Intermittent).unwrap_or(&0)
            + classes.get(&DemandClass::Lumpy).unwrap_or(&0);
        assert!(sparse > 200, "{classes:?}");
        let regular = classes.get(&DemandClass::Smooth).unwrap_or(&0)
            + classes.get(&DemandClass::Erratic).unwrap_or(&0);
        assert!(regular > 20, "{classes:?}");
        // Every merchant gets SKUs, the first ones more.
        let per: Vec<usize> = (0..10)
            .map(|m| a.iter().filter(|s| s.merchant == m).count())
            .collect();
        assert!(per.iter().all(|&n| n > 0) && per[0] > per[9], "{per:?}");
    }
}
