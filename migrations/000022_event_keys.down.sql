-- Back to 000013's outbox_finish_partition_drop, and intake's dedupe probes the
-- events partitions again.

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
    EXECUTE format('DROP TABLE %I', name);
    DELETE FROM outbox_partition_drops d WHERE d.name = outbox_finish_partition_drop.name;
    RETURN rescued;
END;
$$;

DROP TABLE event_keys;
