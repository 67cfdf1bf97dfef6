-- Fewer index entries and row locks per order on the pipeline's hot path.
--
-- Measured with pg_walinspect over a 5,000-order burst (docs in the README's Benchmarks): an
-- order wrote ~106 B-tree entries and ~24 row-lock records. The indexes below cost entries on
-- every insert and every non-HOT update of their rows and served nothing that another index
-- does not serve.

-- Unused since 0008: the ship-by sweep reads sub_orders.accepted_at, and the KPI job reads an
-- order's events through order_events_order_id. Two entries per order.
DROP INDEX order_events_accepted;

-- A storefront order id is an identifier, compared byte by byte: in the "C" collation the
-- unique index serves `LIKE 'prefix%'` itself, and the text_pattern_ops copy of it (three
-- entries per order: the insert and two status updates) goes. The table is not rewritten (same
-- type), but its indexes on the column are rebuilt while the ALTER holds the table's lock:
-- on a large orders table, migrate in a quiet moment. orders_in_flight keeps its definition.
ALTER TABLE orders ALTER COLUMN storefront_order_id TYPE text COLLATE "C";
DROP INDEX orders_storefront_prefix;

-- A delivery is read by id, or with its order (webhook_deliveries_order, and
-- webhook_deliveries_pending while it is pending): every reader by sub-order knows the order.
-- Four entries per order (two deliveries, each inserted and marked delivered).
DROP INDEX webhook_deliveries_sub_order;

-- Orders, sub-orders, reservations and deliveries are each updated once or twice within
-- moments of their insert. In full pages the new row version goes to another page, which
-- costs an extra row-lock WAL record on the old one; room left on the page keeps most of them
-- where they are (~5 fewer lock records per order). Only new pages are affected.
ALTER TABLE sub_orders SET (fillfactor = 60);
ALTER TABLE orders SET (fillfactor = 70);
ALTER TABLE webhook_deliveries SET (fillfactor = 70);
ALTER TABLE reservations SET (fillfactor = 70);
