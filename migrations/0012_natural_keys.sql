-- Child rows keyed by their parent: one index instead of two.
--
-- An order line, a webhook attempt and a payment operation are only ever read with their
-- parent (a sub-order's lines by SKU; a delivery's attempts and an order's provider calls in
-- the order they happened), and nothing refers to their own ids. Each had a primary key on
-- its serial id plus an index on the parent: two B-tree entries per row, five per order. The
-- primary key is now the parent's key first, so one index serves every read (in order) and
-- keeps rows unique. The serial ids stay, as columns. Each new primary key is built while its
-- table is locked: on large tables, migrate in a quiet moment.
ALTER TABLE order_lines
    DROP CONSTRAINT order_lines_pkey,
    DROP CONSTRAINT order_lines_sub_order_id_sku_key,
    ADD PRIMARY KEY (sub_order_id, sku);

ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_pkey;
ALTER TABLE webhook_attempts ADD PRIMARY KEY (delivery_id, id);
DROP INDEX webhook_attempts_delivery;

ALTER TABLE payment_operations DROP CONSTRAINT payment_operations_pkey;
ALTER TABLE payment_operations ADD PRIMARY KEY (order_id, id);
DROP INDEX payment_operations_order_id;
