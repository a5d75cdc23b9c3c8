-- One row per webhook accepted, per (route, key). The row is written in the
-- same transaction as its River delivery job, so an acknowledged webhook
-- always has both.
CREATE TABLE events (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route             text        NOT NULL,
    key               text        NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    -- The sender's Content-Type, forwarded to the target as is.
    content_type      text        NOT NULL,
    -- Request headers as {"Canonical-Name": ["value", ...]}, without
    -- credentials or signatures.
    headers           jsonb       NOT NULL DEFAULT '{}',
    -- The request body, byte for byte.
    body              bytea       NOT NULL,
    -- Set in the transaction that completes the delivery job, because River
    -- deletes completed job rows after a day.
    delivered_at      timestamptz,
    delivery_attempts integer,

    -- The idempotency guarantee: concurrent intakes of one key race on this
    -- index, and the losers see ON CONFLICT DO NOTHING.
    CONSTRAINT events_route_key_unique UNIQUE (route, key),
    CONSTRAINT events_route_format CHECK (route ~ '^[a-z0-9][a-z0-9-]*$'),
    CONSTRAINT events_key_length CHECK (octet_length(key) BETWEEN 1 AND 512)
);

COMMENT ON TABLE events IS 'Webhooks accepted by webhook-outbox, one row per (route, idempotency key).';

-- outbox_payload turns a stored body into jsonb for operators' queries. It
-- returns NULL instead of failing for the rare valid JSON that jsonb refuses
-- (a \u0000 escape, a number beyond numeric's range), so that one odd event
-- can never break a query over the dead_letters view.
CREATE FUNCTION outbox_payload(body bytea) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN convert_from(body, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
