-- A merchant's imported sales history (souk forecast import, docs/forecasting.md): revenue may be
-- unknown (NULL: the day's price comes from souk's own orders, if any), and the merchant may say
-- whether the SKU was in stock that day, or how many it held (NULL: not said).
ALTER TABLE sku_daily_demand ALTER COLUMN revenue_minor DROP NOT NULL;
ALTER TABLE sku_daily_demand ADD COLUMN in_stock boolean;
ALTER TABLE sku_daily_demand ADD COLUMN on_hand integer CHECK (on_hand >= 0);
