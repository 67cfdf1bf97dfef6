-- order_events keyed the way it is read: by (xid, id), the relay's order.
--
-- Every event wrote three B-tree entries: its primary key on id, the relay's index on
-- (xid, id) and the order's index on order_id; twelve events per order made that 36 of the
-- ~92 entries an order writes. Nothing looks an event up by id alone: the relay walks
-- (xid, id) after its cursor, an order's timeline is read by order_id in id order, and the
-- outcome stream's consumers dedupe on the id they were sent. (xid, id) is unique because id
-- is, so it becomes the primary key and the separate relay index goes: twelve entries fewer
-- per order. The new key is built while the table is locked: on a large table, migrate in a
-- quiet moment.
ALTER TABLE order_events DROP CONSTRAINT order_events_pkey;
ALTER TABLE order_events ADD PRIMARY KEY (xid, id);
DROP INDEX order_events_relay;
