-- One payment backs one order (0017), enforced by an insert-only claim per payment instead of a
-- unique index on orders. Orders change status with non-HOT updates (their status partial
-- indexes), so every index on them takes a new entry at each update: the unique index took
-- three per order, each with its uniqueness check. A claim is written once, by the statement
-- that stores its order, and never updated.
CREATE TABLE payment_claims (
    payment_provider text   NOT NULL,
    payment_id       text   NOT NULL,
    -- The order the payment backs. No foreign key: the claim is written by the statement that
    -- inserts that order, and orders are never deleted once committed.
    order_id         bigint NOT NULL,
    PRIMARY KEY (payment_provider, payment_id)
);
INSERT INTO payment_claims (payment_provider, payment_id, order_id)
SELECT payment_provider, payment_id, id FROM orders;
DROP INDEX orders_payment_once;
