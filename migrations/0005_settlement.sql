-- Settlement: what each merchant is owed for completed sub-orders, in an append-only,
-- balanced ledger, and the payouts that pay it.

-- The merchant's account at the payment provider (Stripe: a connected account, acct_...).
-- NULL: payables accrue in the ledger but nothing is paid out.
ALTER TABLE merchants ADD COLUMN payout_account text;

-- Double entry in one signed column: every journal's lines sum to zero (checked at commit).
-- Accounts: clearing (customer money captured and held), platform_commission,
-- merchant_payable:<merchant>, payouts (money sent to merchants).
CREATE TABLE ledger_entries (
    id            bigserial PRIMARY KEY,
    journal       text        NOT NULL,
    account       text        NOT NULL,
    merchant_id   text        REFERENCES merchants (id),
    order_id      bigint      REFERENCES orders (id),
    sub_order_id  bigint      REFERENCES sub_orders (id),
    amount_minor  bigint      NOT NULL,
    currency      text        NOT NULL,
    memo          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (journal, account)
);
CREATE INDEX ledger_entries_merchant ON ledger_entries (merchant_id, created_at);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: post a correcting journal instead';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

CREATE FUNCTION ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT sum(amount_minor) FROM ledger_entries WHERE journal = NEW.journal) <> 0 THEN
        RAISE EXCEPTION 'ledger journal % does not balance', NEW.journal;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_balanced();

-- One payout per completed sub-order: pending → paid | failed (with the provider's answer).
CREATE TABLE payouts (
    sub_order_id          bigint      PRIMARY KEY REFERENCES sub_orders (id),
    merchant_id           text        NOT NULL REFERENCES merchants (id),
    order_id              bigint      NOT NULL REFERENCES orders (id),
    amount_minor          bigint      NOT NULL CHECK (amount_minor >= 0),
    currency              text        NOT NULL,
    destination           text        NOT NULL,
    -- The parent order's storefront id: Stripe's transfer_group ties a charge to its transfers.
    transfer_group        text        NOT NULL,
    status                text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'failed')),
    provider_transfer_id  text,
    error                 text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    paid_at               timestamptz
);
CREATE INDEX payouts_pending ON payouts (created_at) WHERE status = 'pending';
