-- Back to 000012's outbox_ensure_partitions, which refuses steps under an hour.
-- outbox_ensure_partitions creates the time partitions of events_live that
-- cover [from_ts, to_ts), aligned to step since the Unix epoch (UTC). A
-- partition that exists, or a slot another partition already overlaps (after
-- partition_interval changed), is skipped.
CREATE OR REPLACE FUNCTION outbox_ensure_partitions(from_ts timestamptz, to_ts timestamptz, step interval)
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
