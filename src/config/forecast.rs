//! `[forecast]`: demand forecasting's settings.

use serde::Deserialize;

/// Demand forecasting (see `[forecast]` in config/default.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    pub horizon_days: usize,
    pub history_days: usize,
    pub min_history_days: usize,
    pub validation_origins: usize,
    pub horizon_weeks: usize,
    pub min_history_weeks: usize,
    pub lead_time_days: usize,
    pub review_period_days: usize,
    pub service_level: f64,
    pub warn_probability: f64,
    pub digest_max_skus: usize,
}

impl ForecastConfig {
    pub fn settings(&self) -> crate::domain::forecast::Settings {
        self.settings_for(crate::domain::forecast::Period::Day)
    }

    /// How a merchant's series are forecast, by its period.
    pub fn settings_for(&self, period: crate::domain::forecast::Period) -> crate::domain::forecast::Settings {
        use crate::domain::forecast::Period;
        let (horizon, min_history) = match period {
            Period::Day => (self.horizon_days, self.min_history_days),
            Period::Week => (self.horizon_weeks, self.min_history_weeks),
        };
        crate::domain::forecast::Settings {
            horizon,
            min_history_days: min_history,
            origins: self.validation_origins,
            period,
        }
    }

    /// The restocking policy, with a merchant's or SKU's own lead time when it has one.
    pub fn policy(&self, lead_time_days: Option<i32>) -> crate::domain::forecast::inventory::Policy {
        crate::domain::forecast::inventory::Policy {
            lead_time_days: lead_time_days.map_or(self.lead_time_days, |d| d.max(0) as usize),
            review_period_days: self.review_period_days,
            service_level: self.service_level,
        }
    }
}
