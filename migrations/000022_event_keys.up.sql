-- The dedupe key table: one row per (route, idempotency key) of a stored
-- event, with one unique index. Intake's dedupe used to probe the (route,
-- key) index of every events partition (migration 000012), about
-- event_retention / event_partition_interval + 2 of them, so its cost grew
-- with retention. It now inserts the batch's keys here with ON CONFLICT DO
-- NOTHING, one index whatever the number of partitions, and inserts the
-- events whose key went in. The unique index also does the serialisation
-- the advisory lock on hash(route, key) did: a second intake of a key
-- another transaction has inserted and not committed waits for that commit
-- (then skips the key) or rollback (then inserts it). Intake inserts keys
-- in (route, key) order, so two batches cannot deadlock on them.
--
-- A key row lives exactly as long as its event, so the dedupe window stays
-- event_retention: retention deletes the keys of a partition's events in
-- the transaction that drops the partition (outbox_finish_partition_drop
-- below), except those of events moved to events_retained, and the
-- statements that delete single events (dead-letter expiry, expired
-- retained events) delete their keys with them. That is one DELETE of a
-- partition's keys per partition interval, a cost 000012 avoided; it is
-- paid once a day in maintenance instead of on every webhook.
--
-- event_id and received_at name the key's event (and its partition), so a
-- lookup by key is one index probe and one pruned probe of events.
CREATE TABLE event_keys (
    route       text        NOT NULL,
    key         text        NOT NULL,
    event_id    bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (route, key)
);

COMMENT ON TABLE event_keys IS 'Idempotency keys of the stored events: intake''s dedupe, one unique index across all events partitions.';

INSERT INTO event_keys (route, key, event_id, received_at)
SELECT DISTINCT ON (route, key) route, key, id, received_at
FROM events
ORDER BY route, key, id;

-- As in 000013, and the dropped partition's keys go with it, but for those
-- of events retention kept in events_retained.
CREATE OR REPLACE FUNCTION outbox_finish_partition_drop(name text)
    RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    rescued bigint;
BEGIN
    IF name !~ '^events_p[0-9]{8}_[0-9]{4}([0-9]{2})?$' THEN
        RAISE EXCEPTION '% is not an events partition', name;
    END IF;
    IF to_regclass(name) IS NULL THEN
        DELETE FROM outbox_partition_drops d WHERE d.name = outbox_finish_partition_drop.name;
        RETURN 0;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(name)) THEN
        RAISE EXCEPTION '% is still attached to events_live', name;
    END IF;
    EXECUTE format($f$
        INSERT INTO events (id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts, retained)
        SELECT DISTINCT ON (d.id) d.id, d.route, d.key, d.received_at, d.content_type, d.headers, d.body, d.delivered_at, d.delivery_attempts, true
        FROM river_job j
        JOIN %I d ON d.id = (j.args ->> 'event_id')::bigint AND d.received_at = (j.args ->> 'received_at')::timestamptz
        WHERE j.kind = 'deliver'
          AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled', 'discarded', 'cancelled')
          AND (j.state NOT IN ('discarded', 'cancelled') OR d.delivered_at IS NULL OR d.delivered_at < j.finalized_at)
    $f$, name);
    GET DIAGNOSTICS rescued = ROW_COUNT;
    EXECUTE format($f$
        DELETE FROM event_keys k
        USING %I d
        WHERE k.route = d.route AND k.key = d.key AND k.event_id = d.id
          AND NOT EXISTS (SELECT 1 FROM events_retained r WHERE r.id = d.id)
    $f$, name);
    EXECUTE format('DROP TABLE %I', name);
    DELETE FROM outbox_partition_drops d WHERE d.name = outbox_finish_partition_drop.name;
    RETURN rescued;
END;
$$;
