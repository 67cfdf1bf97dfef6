-- A merchant's calendar of unusual days (docs/forecasting.md, "Holidays and promotions"): public
-- or shop holidays and promotions, for every SKU of the merchant (sku '') or for one. The
-- forecast sets past ones aside when it fits (their demand taken as on a usual day), learns
-- each kind's effect from them, and applies it to the days of that kind in its horizon.
CREATE TABLE demand_calendar (
    merchant_id  text NOT NULL REFERENCES merchants (id),
    day          date NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('holiday', 'promotion')),
    sku          text NOT NULL DEFAULT '',
    name         text,
    PRIMARY KEY (merchant_id, day, kind, sku)
);
