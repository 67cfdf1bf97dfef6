-- The outcome stream's relay follows a cursor instead of marking every event published.
--
-- Until now the relay set `published_at` on each event it copied to Redis: a second write of
-- every event row (a non-HOT update, so an entry in each of the table's indexes, plus a row
-- lock), and a partial index that, without vacuum, filled with dead entries the relay had to
-- step over. Now each event records the transaction that wrote it (`xid`), and the relay keeps
-- one cursor per stream: it publishes events after the cursor whose transaction is older than
-- every transaction still running (`pg_snapshot_xmin`), so each of them is final: committed and
-- visible, or rolled back and gone. No event can appear behind the cursor later, and events
-- are never written twice. A transaction left open delays the stream; it never loses events.
ALTER TABLE order_events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
-- Events not yet published when this migration runs come after the cursor's start (0, max).
UPDATE order_events SET xid = '1' WHERE published_at IS NULL;
ALTER TABLE order_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX order_events_relay ON order_events (xid, id);
DROP INDEX order_events_unpublished;
ALTER TABLE order_events DROP COLUMN published_at;

CREATE TABLE outbox_cursor (
    stream    text   PRIMARY KEY,
    xid       xid8   NOT NULL,
    event_id  bigint NOT NULL
);
INSERT INTO outbox_cursor (stream, xid, event_id) VALUES ('outcomes', '0', 9223372036854775807);

-- order_events is an append-only log written in the same transaction as the order or sub-order
-- row it describes, and souk never deletes orders. Its two foreign keys cost a lookup and a
-- share lock on the order and the sub-order (WAL records, multixacts) for every event: about
-- twenty per order, a fifth of the pipeline's row locks. The references stay indexed
-- (order_events_order_id) and documented; the database no longer re-checks them.
ALTER TABLE order_events DROP CONSTRAINT order_events_order_id_fkey;
ALTER TABLE order_events DROP CONSTRAINT order_events_sub_order_id_fkey;
