-- The merchant's time zone (an IANA name, as PostgreSQL's pg_timezone_names lists them): its
-- sales days start at its own midnight, not UTC's, when the forecast builds daily demand from
-- souk's orders (imported histories carry the merchant's own dates already).
ALTER TABLE merchants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
