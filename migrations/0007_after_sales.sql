-- After-sales and partial shipments. Returns (request → merchant decision by a deadline →
-- return parcel → receipt → refund, restock when sellable) and complaints (a case routed to the
-- merchant with a reply deadline, escalated to the platform when unanswered), every message and
-- decision kept; parcels that carry part of a sub-order. docs/after-sales.md and
-- docs/tracking.md describe the flows; these tables are part of the storefront's read model.

CREATE TABLE returns (
    id                   bigserial PRIMARY KEY,
    -- The storefront's id for the return: a second request with the same id is the same return.
    storefront_return_id text        NOT NULL UNIQUE,
    order_id             bigint      NOT NULL REFERENCES orders (id),
    sub_order_id         bigint      NOT NULL REFERENCES sub_orders (id),
    merchant_id          text        NOT NULL REFERENCES merchants (id),
    -- requested → approved | refused; approved → received → refunded
    status               text        NOT NULL DEFAULT 'requested'
        CHECK (status IN ('requested', 'approved', 'refused', 'received', 'refunded')),
    reason               text,
    -- What the customer gets back: the returned lines at the prices paid.
    refund_minor         bigint      NOT NULL CHECK (refund_minor >= 0),
    -- The share of the sub-order's commission that goes with it (the platform gives it back).
    commission_minor     bigint      NOT NULL CHECK (commission_minor >= 0),
    -- The merchant decides by then; after it, after_sales.return_default applies.
    respond_by           timestamptz NOT NULL,
    decided_by           text,
    decided_at           timestamptz,
    decision_reason      text,
    received_at          timestamptz,
    refunded_at          timestamptz,
    -- Set once, when the merchant said the goods are sellable and they went back into stock.
    restocked_at         timestamptz,
    -- Whether the sub-order had been settled when the refund went out: then the refund is
    -- taken back from the merchant's payable (and from a payout already made, by a reversal).
    after_settlement     boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX returns_sub_order ON returns (sub_order_id);
CREATE INDEX returns_order ON returns (order_id);
CREATE INDEX returns_awaiting ON returns (respond_by) WHERE status = 'requested';

CREATE TABLE return_lines (
    return_id         bigint  NOT NULL REFERENCES returns (id),
    sku               text    NOT NULL,
    quantity          integer NOT NULL CHECK (quantity > 0),
    unit_price_minor  bigint  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (return_id, sku)
);

-- A return parcel is a shipment like any other, tied to its return; it does not roll up into
-- the sub-order's delivery status. Its delivery to the merchant is the return's receipt.
ALTER TABLE shipments ADD COLUMN return_id bigint REFERENCES returns (id);

-- Partial shipments: what each outbound parcel carries. Everything not shipped yet counts as
-- pending in the sub-order's delivery roll-up, so a sub-order is delivered (and completes) only
-- when every line has arrived. A shipment without rows here (recorded before this migration)
-- carried the whole sub-order.
CREATE TABLE shipment_lines (
    shipment_id  bigint  NOT NULL REFERENCES shipments (id),
    sku          text    NOT NULL,
    quantity     integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (shipment_id, sku)
);

CREATE TABLE complaints (
    id                      bigserial PRIMARY KEY,
    storefront_complaint_id text        NOT NULL UNIQUE,
    order_id                bigint      NOT NULL REFERENCES orders (id),
    sub_order_id            bigint      NOT NULL REFERENCES sub_orders (id),
    merchant_id             text        NOT NULL REFERENCES merchants (id),
    subject                 text        NOT NULL,
    -- open (waiting for the merchant) → answered (the merchant replied) ⇄ open (the customer
    -- wrote again); open past reply_by → escalated (the platform's to handle); any → closed
    status                  text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'answered', 'escalated', 'closed')),
    reply_by                timestamptz NOT NULL,
    escalated_at            timestamptz,
    closed_at               timestamptz,
    resolution              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX complaints_sub_order ON complaints (sub_order_id);
CREATE INDEX complaints_order ON complaints (order_id);
CREATE INDEX complaints_waiting ON complaints (reply_by) WHERE status = 'open';

-- Every message and decision of a case, in order. The storefront stream entry id makes a
-- redelivered command add nothing.
CREATE TABLE case_messages (
    id            bigserial PRIMARY KEY,
    complaint_id  bigint      REFERENCES complaints (id),
    return_id     bigint      REFERENCES returns (id),
    -- customer, merchant, platform, souk
    author        text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('message', 'decision')),
    body          text        NOT NULL,
    source_id     text        UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((complaint_id IS NULL) <> (return_id IS NULL))
);
CREATE INDEX case_messages_complaint ON case_messages (complaint_id, id);
CREATE INDEX case_messages_return ON case_messages (return_id, id);

-- A refund after a sub-order was paid out takes the merchant's share back from its transfer
-- (Stripe: a transfer reversal), once per return.
CREATE TABLE payout_reversals (
    return_id             bigint      PRIMARY KEY REFERENCES returns (id),
    sub_order_id          bigint      NOT NULL REFERENCES sub_orders (id),
    merchant_id           text        NOT NULL REFERENCES merchants (id),
    amount_minor          bigint      NOT NULL CHECK (amount_minor > 0),
    currency              text        NOT NULL,
    status                text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    provider_reversal_id  text,
    error                 text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    done_at               timestamptz
);
CREATE INDEX payout_reversals_pending ON payout_reversals (created_at) WHERE status = 'pending';

-- merchant_kpis.return_rate (sub-orders with a return not refused / shipped sub-orders) and
-- complaint_rate (sub-orders with a complaint / sub-orders) are computed from here on.
