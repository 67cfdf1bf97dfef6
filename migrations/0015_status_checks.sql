-- The order and sub-order state machines' statuses, enforced by the database as well
-- (src/domain/status.rs names them and the moves between them). Added NOT VALID, then
-- validated: the check of existing rows takes only a SHARE UPDATE EXCLUSIVE lock, so writes go
-- on while a large table is checked.
ALTER TABLE orders ADD CONSTRAINT orders_status_known
    CHECK (status IN ('received', 'authorised', 'captured', 'cancelled')) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_status_known;

ALTER TABLE sub_orders ADD CONSTRAINT sub_orders_status_known
    CHECK (status IN ('pending', 'reserved', 'out_of_stock', 'awaiting_acceptance', 'accepted',
                      'rejected', 'cancelled', 'completed')) NOT VALID;
ALTER TABLE sub_orders VALIDATE CONSTRAINT sub_orders_status_known;
