-- Retention that survives interruptions, and partition creation that never
-- stalls intake.

-- outbox_partition_drops records each partition retention has started to
-- remove, before it detaches it. Removing one takes several transactions
-- (DETACH ... CONCURRENTLY cannot run in one): a crash, a cancellation or an
-- error between them used to leave a detached table that nothing listed
-- again, with its rows on disk forever and any survivor that appeared in it
-- (a retry from River UI, say) out of reach. Every maintenance run now
-- finishes the drops recorded here before anything else: it completes a
-- pending detach, rescues the survivors of a detached table into
-- events_retained and drops it, or forgets a record whose detach never
-- began. The row is deleted in the transaction that drops the table.
CREATE TABLE outbox_partition_drops (
    name        text        PRIMARY KEY CHECK (name ~ '^events_p[0-9]{8}_[0-9]{4}([0-9]{2})?$'),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE outbox_partition_drops IS 'Events partitions retention is removing; maintenance finishes each on its next run.';

-- Tables that earlier versions detached and never dropped: they are events
-- partitions by name, in no partition tree. Adopted here, the next
-- maintenance run rescues their survivors and drops them.
INSERT INTO outbox_partition_drops (name)
SELECT c.relname
FROM pg_class c
WHERE c.relkind = 'r'
  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'events'::regclass)
  AND c.relname ~ '^events_p[0-9]{8}_[0-9]{4}$'
  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid);

-- outbox_finish_partition_drop completes the removal of a time partition
-- that has been detached from events_live: it copies into events_retained
-- any survivor that appeared after retention moved the others (a replay of
-- an old event, or a retry from River UI), drops the table, and forgets the
-- pending drop, all in the caller's transaction. A table already gone only
-- has its record forgotten. It starts from the jobs that are not completed,
-- which are few.
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

-- outbox_partition_drop_states lists the recorded pending drops with where
-- each stands: 'gone' (the table no longer exists), 'attached' (the detach
-- never began), 'detach_pending' (DETACH ... CONCURRENTLY was interrupted
-- in its second transaction) or 'detached' (only the drop is left).
CREATE FUNCTION outbox_partition_drop_states()
    RETURNS TABLE (name text, state text)
    LANGUAGE sql STABLE
AS $$
    SELECT d.name,
           CASE WHEN c.oid IS NULL THEN 'gone'
                WHEN i.inhrelid IS NULL THEN 'detached'
                WHEN i.inhdetachpending THEN 'detach_pending'
                ELSE 'attached' END
    FROM outbox_partition_drops d
    LEFT JOIN pg_class c ON c.oid = to_regclass(d.name)
    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
    ORDER BY d.name;
$$;

-- outbox_ensure_partitions creates the time partitions of events_live that
-- cover [from_ts, to_ts), aligned to step since the Unix epoch (UTC). A
-- partition that exists, or a slot another partition already overlaps (after
-- partition_interval changed), is skipped.
--
-- Unlike 000012's, it never makes intake wait. CREATE TABLE ... PARTITION OF
-- takes an ACCESS EXCLUSIVE lock on events_live: queued behind a long reader
-- (outbox stats --exact, a report), it made every intake insert queue behind
-- it. Each partition is instead created as a plain table and attached with
-- ATTACH PARTITION, which takes only a SHARE UPDATE EXCLUSIVE lock on
-- events_live: readers and writers go on. That lock still waits for other
-- DDL on events_live (a DETACH ... CONCURRENTLY waiting for a reader, say),
-- so each partition waits at most lock_wait; on a lock timeout the function
-- stops and returns busy = true, keeping the partitions it made, and the
-- caller retries later (maintenance creates them days ahead).
--
-- The step may be as short as a second, for tests that expire partitions
-- within a run; the operator's event_partition_interval has its own, longer
-- minimum. Names carry seconds only for slots that do not start on a whole
-- minute, so the names of existing partitions do not change. Called with
-- three arguments, as before, it waits up to two seconds per partition.
DROP FUNCTION outbox_ensure_partitions(timestamptz, timestamptz, interval);

CREATE FUNCTION outbox_ensure_partitions(from_ts timestamptz, to_ts timestamptz, step interval,
                                         lock_wait interval DEFAULT interval '2 seconds',
                                         OUT created integer, OUT busy boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    step_secs  double precision := extract(epoch FROM step);
    slot_start timestamptz;
    name       text;
    saved_lock_timeout text := current_setting('lock_timeout');
BEGIN
    created := 0;
    busy := false;
    IF step_secs < 1 OR step_secs <> floor(step_secs) THEN
        RAISE EXCEPTION 'partition step % is not a whole number of seconds of at least one', step;
    END IF;
    PERFORM set_config('lock_timeout', greatest(1, floor(extract(epoch FROM lock_wait) * 1000))::bigint::text, true);
    slot_start := to_timestamp(floor(extract(epoch FROM from_ts) / step_secs) * step_secs);
    WHILE slot_start < to_ts LOOP
        name := 'events_p' || to_char(slot_start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI')
                || CASE WHEN extract(second FROM slot_start) <> 0 THEN to_char(slot_start AT TIME ZONE 'UTC', 'SS') ELSE '' END;
        IF to_regclass(name) IS NULL THEN
            BEGIN
                -- ATTACH requires the table to carry events_live's columns
                -- and CHECK constraints; it creates the partitions of
                -- events' indexes itself.
                EXECUTE format('CREATE TABLE %I (LIKE events_live INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
                EXECUTE format('ALTER TABLE events_live ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               name, slot_start, slot_start + step);
                created := created + 1;
            EXCEPTION
                WHEN invalid_object_definition THEN
                    -- Overlaps a partition made with another step: that one covers it.
                    NULL;
                WHEN lock_not_available THEN
                    busy := true;
                    EXIT;
            END;
        END IF;
        slot_start := slot_start + step;
    END LOOP;
    PERFORM set_config('lock_timeout', saved_lock_timeout, true);
END;
$$;
