-- Follow-up work that no crash can lose: what must happen next is written in the same
-- transaction as the state change that makes it necessary, as state a sweep can find.
--
-- adjust_due_at: the order's charge must be brought in line with what will ship (a rejection,
-- a cancellation, an expired reservation, a return received back). Set by the transaction that
-- changed what ships, cleared by the adjust_payment run that made the charge match it (only
-- when it started after the mark, so a mark made during a run is kept). A job is pushed right
-- after the commit; the sweep pushes one for every order whose mark is older than a grace
-- period, so a crash or a Redis error between the commit and that push delays the adjustment
-- instead of losing it. Null for every order with nothing owed, so the index stays small.
ALTER TABLE orders ADD COLUMN adjust_due_at timestamptz;
CREATE INDEX orders_adjust_due ON orders (adjust_due_at) WHERE adjust_due_at IS NOT NULL;

-- Sub-orders waiting for their merchant's decision, by deadline: the sweep applies the
-- merchant's default to those past it whose deadline job was lost.
CREATE INDEX sub_orders_awaiting_decision ON sub_orders (accept_by) WHERE status = 'awaiting_acceptance';
