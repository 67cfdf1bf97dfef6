-- The fencing token of the last payment-lock holder that wrote an order's payment record
-- (src/orders/payment.rs). A holder whose lease ran out (paused, cut off) and who comes back
-- after a newer holder wrote carries an older token: its writes match no row and are refused,
-- so it cannot put older amounts over newer ones. Tokens are the lock's acquisition time on
-- Redis's clock in microseconds; 0 = never written under a lock.
ALTER TABLE orders ADD COLUMN payment_fence bigint NOT NULL DEFAULT 0;
