-- Merchant KPIs per day (UTC) of sub-order creation, recomputed for a trailing window by the
-- compute_kpis cron job so that outcomes arriving later (shipping, delivery) are counted.
-- Rates are 0–1 and NULL when nothing was there to measure; durations are seconds.
CREATE TABLE merchant_kpis (
    merchant_id            text    NOT NULL REFERENCES merchants (id),
    day                    date    NOT NULL,
    sub_orders             integer NOT NULL,
    decided                integer NOT NULL,
    -- accepted (by the merchant, automatically, or by the default at the deadline) / decided
    acceptance_rate        double precision,
    -- rejected by the default at the deadline / decided
    auto_rejected_rate     double precision,
    -- flagged late / accepted
    late_shipment_rate     double precision,
    avg_time_to_ship_s     double precision,
    avg_delivery_time_s    double precision,
    -- sub-orders whose share went back to the customer after payment (rejected, cancelled or out
    -- of stock, on an order with money refunded) / sub-orders
    refund_rate            double precision,
    -- returns and complaints are not recorded yet: NULL until they are
    return_rate            double precision,
    complaint_rate         double precision,
    computed_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, day)
);
