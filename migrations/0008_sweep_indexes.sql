-- Webhook deliveries still pending are a small, hot subset of a table that only grows: how many
-- are left for an order or a run (the demo's and benchmarks' progress checks, operators'
-- queries) is read from this index instead of a scan of every delivery ever made.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (order_id) WHERE status = 'pending';

-- Orders still on their way to a payment decision (`received`, `authorised`) are likewise a
-- small subset: "which orders are in flight" (stuck-order checks, progress of a run) reads this.
CREATE INDEX orders_in_flight ON orders (storefront_order_id text_pattern_ops) WHERE status IN ('received', 'authorised');

-- When a sub-order was accepted (by its merchant, the deadline default or auto mode), on the row
-- itself: the ship-by sweep reads the accepted, unshipped, not yet late sub-orders old enough to
-- be late through the index below, instead of looking up every such sub-order's acceptance event
-- every 30 s (a cost that grew with all the orders waiting to ship).
ALTER TABLE sub_orders ADD COLUMN accepted_at timestamptz;
UPDATE sub_orders s SET accepted_at = e.at
FROM (SELECT sub_order_id, min(created_at) AS at FROM order_events
      WHERE type = 'sub_order.accepted' GROUP BY sub_order_id) e
WHERE e.sub_order_id = s.id;
CREATE INDEX sub_orders_awaiting_shipment ON sub_orders (accepted_at)
    WHERE status = 'accepted' AND shipped_at IS NULL AND late_at IS NULL;

-- Delivered sub-orders waiting for their completion delay: the completion sweep reads these.
CREATE INDEX sub_orders_delivered_open ON sub_orders (delivered_at)
    WHERE status = 'accepted' AND delivery_status = 'delivered';

-- Sub-orders between intake and their merchant (no stock decision yet, or reserved and not yet
-- handed over): with orders_in_flight, what is still moving through the pipeline.
CREATE INDEX sub_orders_in_flight ON sub_orders (order_id) WHERE status IN ('pending', 'reserved');
