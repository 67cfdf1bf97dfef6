-- A merchant's own stock-out threshold for its at-risk advice and digest (docs/forecasting.md);
-- NULL: the configured forecast.warn_probability.
ALTER TABLE merchants ADD COLUMN forecast_warn_probability double precision
    CHECK (forecast_warn_probability > 0 AND forecast_warn_probability < 1);
