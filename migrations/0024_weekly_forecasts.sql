-- A merchant's history and forecasts are daily or weekly (docs/forecasting.md, "Weekly
-- histories"): a weekly merchant's demand is read by Monday-to-Sunday weeks, and its forecasts
-- hold one value per week. period_days says which a stored forecast holds (1 or 7), so that
-- its accuracy is scored by the same periods once its horizon has passed.
ALTER TABLE merchants ADD COLUMN forecast_period text NOT NULL DEFAULT 'day'
    CHECK (forecast_period IN ('day', 'week'));
ALTER TABLE sku_forecasts ADD COLUMN period_days smallint NOT NULL DEFAULT 1
    CHECK (period_days IN (1, 7));
