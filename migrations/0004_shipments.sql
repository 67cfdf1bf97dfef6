-- Shipments and their tracking history. A merchant ships a sub-order with a tracking number;
-- souk follows it with a tracking provider (poll, adaptively) and keeps every carrier event once.

CREATE TABLE shipments (
    id                    bigserial PRIMARY KEY,
    sub_order_id          bigint      NOT NULL REFERENCES sub_orders (id),
    merchant_id           text        NOT NULL REFERENCES merchants (id),
    tracking_number       text        NOT NULL,
    -- The carrier slug given by the merchant or detected from the number; NULL: left to the provider.
    carrier               text,
    -- Every carrier the number's format fits, surest first: [{"carrier", "confidence"}].
    carrier_candidates    jsonb       NOT NULL DEFAULT '[]',
    provider              text        NOT NULL,
    registered_at         timestamptz,
    -- pending, info_received, in_transit, out_for_delivery, available_for_pickup, attempt_fail,
    -- delivered, returned, exception, expired (docs/tracking.md)
    status                text        NOT NULL DEFAULT 'pending',
    status_changed_at     timestamptz NOT NULL DEFAULT now(),
    last_event_at         timestamptz,
    last_polled_at        timestamptz,
    polls                 integer     NOT NULL DEFAULT 0,
    delivered_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sub_order_id, tracking_number)
);
CREATE INDEX shipments_open ON shipments (status) WHERE status NOT IN ('delivered', 'returned', 'expired');

-- Carrier events, each stored once (dedupe_key: time, raw status, location and message).
CREATE TABLE tracking_events (
    id            bigserial PRIMARY KEY,
    shipment_id   bigint      NOT NULL REFERENCES shipments (id),
    occurred_at   timestamptz NOT NULL,
    -- souk's status for the event; NULL when the provider's status is not in the mapping table.
    status        text,
    raw_status    text        NOT NULL,
    raw_sub_status text,
    location      text,
    message       text,
    provider      text        NOT NULL,
    dedupe_key    text        NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shipment_id, dedupe_key)
);
CREATE INDEX tracking_events_shipment ON tracking_events (shipment_id, occurred_at);

-- A sub-order's delivery state rolled up from its shipments (NULL until the first shipment), and
-- an order's from its sub-orders that ship (accepted or completed; one not shipped yet counts as
-- pending).
ALTER TABLE orders ADD COLUMN delivery_status text;
ALTER TABLE sub_orders ADD COLUMN delivery_status text;
ALTER TABLE sub_orders ADD COLUMN shipped_at timestamptz;
ALTER TABLE sub_orders ADD COLUMN delivered_at timestamptz;

-- Ship-by deadline: a sub-order accepted this long ago (s) and not shipped is flagged late and
-- its merchant told. NULL: tracking.ship_by_s.
ALTER TABLE merchants ADD COLUMN ship_by_s integer CHECK (ship_by_s > 0);
ALTER TABLE sub_orders ADD COLUMN late_at timestamptz;
-- The sweeper finds when each sub-order was accepted.
CREATE INDEX order_events_accepted ON order_events (sub_order_id, created_at) WHERE type = 'sub_order.accepted';
