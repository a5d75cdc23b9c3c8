DROP FUNCTION IF EXISTS outbox_payload(bytea);
DROP TABLE IF EXISTS events;
