-- The shape of a merchant's webhook bodies (docs/webhooks.md): 1, the first shape (event fields
-- under `data`, some nested in `data.details`), or 2 (one flat `data` per event type, each with
-- a JSON Schema in docs/schema/webhooks/v2/, and `version` in the body). Merchants that exist
-- now keep 1 until moved; merchants added from now on get 2.
ALTER TABLE merchants ADD COLUMN webhook_version smallint NOT NULL DEFAULT 1 CHECK (webhook_version IN (1, 2));
ALTER TABLE merchants ALTER COLUMN webhook_version SET DEFAULT 2;
