-- Fewer writes per order on the pipeline's hot path.
--
-- sub_orders_order_id repeats the leading column of the unique index on (order_id,
-- merchant_id), which serves every lookup by order as well. Every sub-order insert and every
-- (non-HOT) status update wrote an entry into both: about six index entries per order.
DROP INDEX sub_orders_order_id;

-- The records of what souk did about an order (provider calls, webhook deliveries and their
-- attempts) are written by souk only, after and from the order, sub-order, merchant or
-- delivery they name, and souk deletes none of those. Their foreign keys cost a lookup and a
-- KEY SHARE lock on the parent row (a heap write and a WAL record) for every row: nine per
-- order, about half the pipeline's foreign-key checks, which took ~4 % of the machine's CPU in
-- a burst. The references stay indexed and documented, as for order_events (0009); the
-- order model itself (sub-orders, lines, reservations) keeps its foreign keys.
ALTER TABLE payment_operations DROP CONSTRAINT payment_operations_order_id_fkey;
ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_order_id_fkey,
    DROP CONSTRAINT webhook_deliveries_sub_order_id_fkey,
    DROP CONSTRAINT webhook_deliveries_merchant_id_fkey;
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_delivery_id_fkey;
