-- The merchant API (docs/merchants.md): per-merchant keys, Idempotency-Key answers, the actions
-- it enqueued, and who read a customer's address.

-- A key is shown once, at creation; souk keeps its SHA-256 (a key is 32 random bytes, so a fast
-- hash cannot be reversed by guessing). A rotation gives the old key an end (`expires_at`), so
-- both work during the overlap; a revocation ends it at once.
CREATE TABLE merchant_api_keys (
    id             text PRIMARY KEY,
    merchant_id    text        NOT NULL REFERENCES merchants (id),
    scope          text        NOT NULL CHECK (scope IN ('read', 'act')),
    secret_sha256  bytea       NOT NULL UNIQUE,
    -- The key's first characters, to tell keys apart in lists.
    display_prefix text        NOT NULL,
    label          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    revoked_at     timestamptz,
    last_used_at   timestamptz,
    replaced_by    text REFERENCES merchant_api_keys (id)
);
CREATE INDEX merchant_api_keys_merchant ON merchant_api_keys (merchant_id);

-- Idempotency-Key answers, per merchant, kept 24 h: `status_code` is NULL while the first
-- request is still being answered.
CREATE TABLE api_idempotency (
    merchant_id     text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_sha256  bytea       NOT NULL,
    status_code     integer,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, idempotency_key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);

-- An action the API enqueued on the storefront stream, polled at /merchant/v1/operations/{id}.
-- Its outcome is read from the queue (finished or not) and from rejected_messages.
CREATE TABLE api_operations (
    id           bigserial PRIMARY KEY,
    merchant_id  text        NOT NULL,
    key_id       text        NOT NULL,
    entry_id     text        NOT NULL UNIQUE,
    command      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_operations_merchant ON api_operations (merchant_id, id);

-- Every answer of the merchant API that showed a customer's name or address.
CREATE TABLE address_reads (
    id            bigserial PRIMARY KEY,
    merchant_id   text        NOT NULL,
    key_id        text        NOT NULL,
    sub_order_id  bigint      NOT NULL,
    client        text,
    read_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX address_reads_merchant ON address_reads (merchant_id, read_at);

-- A merchant's deliveries, returns and complaints, newest first (its sub-orders have
-- sub_orders_merchant, 0003). merchant_id and created_at never change, so status updates stay
-- HOT; a delivery costs one more index entry.
CREATE INDEX webhook_deliveries_merchant ON webhook_deliveries (merchant_id, created_at);
CREATE INDEX returns_merchant ON returns (merchant_id, id);
CREATE INDEX complaints_merchant ON complaints (merchant_id, id);

-- A replay asked for by the merchant: the delivery is pending again from this time, and the
-- sweep of unsent deliveries finds it if its job was lost.
ALTER TABLE webhook_deliveries ADD COLUMN replayed_at timestamptz;
