//! Demand forecasting jobs' shell: loads daily demand from Postgres, runs the pure
//! [`crate::domain::forecast`] math, stores forecasts, stock advice and accuracy, and sends each
//! merchant a digest of SKUs at risk.

pub mod backtest;
