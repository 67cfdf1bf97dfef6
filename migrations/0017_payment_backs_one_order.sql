-- One payment intent backs one order (docs/storefront.md, "Payment"): a second order naming a
-- payment already used is not stored (intake's INSERT skips it on this index and refuses the
-- message as `payment_already_used`), so no check-then-insert race can let two orders share
-- one authorisation.
CREATE UNIQUE INDEX orders_payment_once ON orders (payment_provider, payment_id);

-- A SHA-256 of the order's canonical content (domain::order::content_hash): a resent order id
-- with different lines, prices, currency, payment or customer is refused as `order_conflict`
-- instead of being taken for a duplicate. NULL for orders stored before this column: those
-- resends are taken as duplicates, as before.
ALTER TABLE orders ADD COLUMN content_hash text;
