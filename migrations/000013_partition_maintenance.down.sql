-- Back to 000012's partition functions. Pending drops are forgotten: run
-- maintenance to completion before migrating down, or drop any detached
-- events_p* table by hand.
DROP FUNCTION outbox_partition_drop_states();
DROP FUNCTION outbox_ensure_partitions(timestamptz, timestamptz, interval, interval);
DROP TABLE outbox_partition_drops;

CREATE FUNCTION outbox_ensure_partitions(from_ts timestamptz, to_ts timestamptz, step interval)
    RETURNS integer
    LANGUAGE plpgsql
AS $$
DECLARE
    step_secs  double precision := extract(epoch FROM step);
    slot_start timestamptz;
    created    integer := 0;
    name       text;
BEGIN
    IF step_secs < 3600 THEN
        RAISE EXCEPTION 'partition step % is shorter than an hour', step;
    END IF;
    slot_start := to_timestamp(floor(extract(epoch FROM from_ts) / step_secs) * step_secs);
    WHILE slot_start < to_ts LOOP
        name := 'events_p' || to_char(slot_start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF events_live FOR VALUES FROM (%L) TO (%L)',
                               name, slot_start, slot_start + step);
                created := created + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                -- Overlaps a partition made with another step: that one covers it.
                NULL;
            END;
        END IF;
        slot_start := slot_start + step;
    END LOOP;
    RETURN created;
END;
$$;

CREATE OR REPLACE FUNCTION outbox_finish_partition_drop(name text)
    RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    rescued bigint;
BEGIN
    IF name NOT LIKE 'events\_p%' THEN
        RAISE EXCEPTION '% is not an events partition', name;
    END IF;
    IF to_regclass(name) IS NULL THEN
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
    RETURN rescued;
END;
$$;
