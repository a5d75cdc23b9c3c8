-- outbox_ensure_partitions as in 000012, but it takes steps down to a second
-- (the fault suite's soak uses partitions of seconds, through the test-only
-- OUTBOX_TEST_PARTITION_INTERVAL; the config still refuses less than an
-- hour), and a step that is not whole minutes names its partitions down to
-- the second, events_pYYYYMMDD_HHMMSS, so that two never share a name.
CREATE OR REPLACE FUNCTION outbox_ensure_partitions(from_ts timestamptz, to_ts timestamptz, step interval)
    RETURNS integer
    LANGUAGE plpgsql
AS $$
DECLARE
    step_secs  double precision := extract(epoch FROM step);
    fmt        text := 'YYYYMMDD_HH24MI';
    slot_start timestamptz;
    created    integer := 0;
    name       text;
BEGIN
    IF step_secs < 1 THEN
        RAISE EXCEPTION 'partition step % is shorter than a second', step;
    END IF;
    IF step_secs::bigint % 60 <> 0 THEN
        fmt := 'YYYYMMDD_HH24MISS';
    END IF;
    slot_start := to_timestamp(floor(extract(epoch FROM from_ts) / step_secs) * step_secs);
    WHILE slot_start < to_ts LOOP
        name := 'events_p' || to_char(slot_start AT TIME ZONE 'UTC', fmt);
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
