-- The order pipeline's tables. They are also the storefront's read model: the columns and
-- status values documented in docs/storefront.md are a stable contract.

CREATE TABLE merchants (
    id                    text PRIMARY KEY,
    name                  text        NOT NULL,
    webhook_url           text        NOT NULL,
    -- Standard Webhooks secrets (whsec_...), newest first; all of them sign during a rotation.
    signing_secrets       text[]      NOT NULL,
    -- 'auto': sub-orders are accepted at once; 'manual': the merchant decides by accept_by.
    acceptance_mode       text        NOT NULL DEFAULT 'manual' CHECK (acceptance_mode IN ('auto', 'manual')),
    -- What happens at the deadline without a decision (Mirakl's auto-accept / auto-refuse).
    acceptance_default    text        NOT NULL DEFAULT 'accept' CHECK (acceptance_default IN ('accept', 'reject')),
    acceptance_deadline_s integer     NOT NULL DEFAULT 86400 CHECK (acceptance_deadline_s > 0),
    commission_bps        integer     NOT NULL DEFAULT 1000 CHECK (commission_bps BETWEEN 0 AND 10000),
    -- Set when deliveries started failing and cleared by a success; disabled after too long.
    failing_since         timestamptz,
    endpoint_disabled_at  timestamptz,
    endpoint_disabled_reason text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Each merchant's stock of each SKU. available = on_hand - reserved, never negative.
CREATE TABLE stock (
    merchant_id  text        NOT NULL REFERENCES merchants (id),
    sku          text        NOT NULL,
    on_hand      integer     NOT NULL CHECK (on_hand >= 0),
    reserved     integer     NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, sku)
);

-- One row per storefront order id: a second enqueue of the same order finds it here.
CREATE TABLE orders (
    id                   bigserial PRIMARY KEY,
    storefront_order_id  text        NOT NULL UNIQUE,
    customer             jsonb       NOT NULL,
    currency             text        NOT NULL,
    total_minor          bigint      NOT NULL,
    -- received → authorised → captured (or partially) | cancelled
    status               text        NOT NULL,
    status_reason        text,
    payment_provider     text        NOT NULL,
    payment_id           text        NOT NULL,
    payment_status       text,
    captured_minor       bigint      NOT NULL DEFAULT 0,
    refunded_minor       bigint      NOT NULL DEFAULT 0,
    shipping_address     jsonb       NOT NULL,
    metadata             jsonb       NOT NULL DEFAULT '{}',
    placed_at            timestamptz NOT NULL,
    enqueued_at          timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- The sweeper looks for orders still unpaid.
CREATE INDEX orders_received ON orders (enqueued_at) WHERE status = 'received';
-- Prefix searches by storefront order id (LIKE 'abc%').
CREATE INDEX orders_storefront_prefix ON orders (storefront_order_id text_pattern_ops);

-- One per merchant per order.
CREATE TABLE sub_orders (
    id                bigserial PRIMARY KEY,
    order_id          bigint      NOT NULL REFERENCES orders (id),
    merchant_id       text        NOT NULL REFERENCES merchants (id),
    -- pending → reserved | out_of_stock → awaiting_acceptance → accepted | rejected; cancelled
    status            text        NOT NULL,
    status_reason     text,
    subtotal_minor    bigint      NOT NULL,
    commission_minor  bigint      NOT NULL,
    accept_by         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, merchant_id)
);
CREATE INDEX sub_orders_order_id ON sub_orders (order_id);

CREATE TABLE order_lines (
    id                bigserial PRIMARY KEY,
    sub_order_id      bigint  NOT NULL REFERENCES sub_orders (id),
    sku               text    NOT NULL,
    quantity          integer NOT NULL CHECK (quantity > 0),
    unit_price_minor  bigint  NOT NULL CHECK (unit_price_minor >= 0),
    UNIQUE (sub_order_id, sku)
);

-- Stock held for a sub-order: held → confirmed (merchant accepted) | released.
CREATE TABLE reservations (
    id            bigserial PRIMARY KEY,
    sub_order_id  bigint      NOT NULL REFERENCES sub_orders (id),
    merchant_id   text        NOT NULL,
    sku           text        NOT NULL,
    quantity      integer     NOT NULL CHECK (quantity > 0),
    status        text        NOT NULL CHECK (status IN ('held', 'confirmed', 'released')),
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    settled_at    timestamptz,
    UNIQUE (sub_order_id, sku)
);
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

-- Every call to the payment provider, keyed by its idempotency key.
CREATE TABLE payment_operations (
    id               bigserial PRIMARY KEY,
    order_id         bigint      NOT NULL REFERENCES orders (id),
    kind             text        NOT NULL,
    idempotency_key  text,
    amount_minor     bigint,
    outcome          text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_operations_order_id ON payment_operations (order_id);

-- A webhook to a merchant: its id is the webhook-id header, the same on every retry.
CREATE TABLE webhook_deliveries (
    id            text PRIMARY KEY,
    merchant_id   text        NOT NULL REFERENCES merchants (id),
    order_id      bigint      REFERENCES orders (id),
    sub_order_id  bigint      REFERENCES sub_orders (id),
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL,
    -- pending → delivered | failed | endpoint_disabled
    status        text        NOT NULL DEFAULT 'pending',
    attempts      integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX webhook_deliveries_sub_order ON webhook_deliveries (sub_order_id);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (order_id);

CREATE TABLE webhook_attempts (
    id                bigserial PRIMARY KEY,
    delivery_id       text        NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at      timestamptz NOT NULL DEFAULT now(),
    status_code       integer,
    latency_ms        integer     NOT NULL,
    error             text,
    response_excerpt  text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

-- The history of every order and sub-order, and the outbox of the outcome stream: rows with
-- published_at NULL are still to be added to the Redis stream <prefix>:outcomes.
CREATE TABLE order_events (
    id            bigserial PRIMARY KEY,
    order_id      bigint      REFERENCES orders (id),
    sub_order_id  bigint      REFERENCES sub_orders (id),
    storefront_order_id text,
    type          text        NOT NULL,
    actor         text        NOT NULL,
    reason        text,
    data          jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX order_events_order_id ON order_events (order_id);
CREATE INDEX order_events_unpublished ON order_events (id) WHERE published_at IS NULL;

-- Storefront messages souk refused, with the reason (also sent on the outcome stream).
CREATE TABLE rejected_messages (
    id                   bigserial PRIMARY KEY,
    entry_id             text        NOT NULL UNIQUE,
    storefront_order_id  text,
    code                 text        NOT NULL,
    reason               text        NOT NULL,
    payload_excerpt      text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_messages_storefront_order_id ON rejected_messages (storefront_order_id);

-- Storefront commands that must apply once (stock adjustments, decisions, cancellations):
-- the job id (the stream entry id) is recorded in the same transaction as the change.
CREATE TABLE applied_commands (
    job_id      text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
