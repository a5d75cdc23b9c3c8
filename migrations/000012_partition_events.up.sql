-- Partition events by time, so that retention drops whole partitions instead
-- of deleting rows one by one.
--
-- Shape:
--   events                      PARTITION BY LIST (retained)
--     events_live               retained = false, PARTITION BY RANGE (received_at)
--       events_p20261128_0000   one per partition interval (a day by default)
--     events_retained           retained = true: the few events that outlive
--                               their partition (pending, or dead letters still kept)
--
-- Retention moves an expired partition's survivors into events_retained (a
-- handful of rows), then detaches and drops the partition.
--
-- Uniqueness of (route, key): Postgres cannot enforce a unique index across
-- partitions unless it includes the partition key, and (route, key,
-- received_at) would let a redelivery that arrives on another day through.
-- The alternatives were a dedupe-key table (exact, but it grows like events
-- and its retention is the DELETE storm partitioning avoids) and a key that
-- embeds the day (cheap, but duplicates across midnight). We chose a third:
-- intake takes a transaction-scoped advisory lock on hash(route, key), then
-- inserts only if no partition holds the key (each partition has a (route,
-- key) index; there are about event_retention / interval of them). The lock
-- serialises concurrent intakes of one key, and the insert's snapshot is
-- taken after the lock is granted, so the loser sees the winner's committed
-- row. The cost is one lock and one index probe per partition per event. A
-- key whose event retention has removed is accepted again: the dedupe window
-- is event_retention.

DROP VIEW dead_letters;

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_route_key_unique TO events_unpartitioned_route_key_unique;
ALTER INDEX events_route_received_at_idx RENAME TO events_unpartitioned_route_received_at_idx;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER SEQUENCE events_id_seq RENAME TO events_unpartitioned_id_seq;

CREATE SEQUENCE events_id_seq AS bigint;

CREATE TABLE events (
    id                bigint      NOT NULL DEFAULT nextval('events_id_seq'),
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
    -- True once retention has moved the event out of its expired time
    -- partition into events_retained.
    retained          boolean     NOT NULL DEFAULT false,

    PRIMARY KEY (id, retained, received_at),
    CONSTRAINT events_route_format CHECK (route ~ '^[a-z0-9][a-z0-9-]*$'),
    CONSTRAINT events_key_length CHECK (octet_length(key) BETWEEN 1 AND 512)
) PARTITION BY LIST (retained);

ALTER SEQUENCE events_id_seq OWNED BY events.id;

COMMENT ON TABLE events IS 'Webhooks accepted by webhook-outbox, one row per (route, idempotency key).';

CREATE TABLE events_live PARTITION OF events FOR VALUES IN (false) PARTITION BY RANGE (received_at);
CREATE TABLE events_retained PARTITION OF events FOR VALUES IN (true);

-- Intake's dedupe probe and lookups by key.
CREATE INDEX events_route_key_idx ON events (route, key);
-- Replay by route and time window, in keyset order.
CREATE INDEX events_route_received_at_idx ON events (route, received_at, id);

-- outbox_ensure_partitions creates the time partitions of events_live that
-- cover [from_ts, to_ts), aligned to step since the Unix epoch (UTC). A
-- partition that exists, or a slot another partition already overlaps (after
-- partition_interval changed), is skipped.
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

-- outbox_finish_partition_drop completes retention's removal of a time
-- partition that has been detached from events_live: it copies into
-- events_retained any survivor that appeared after retention moved the others
-- (a replay of an old event at that very moment, say), then drops the table.
-- It starts from the jobs that are not completed, which are few.
CREATE FUNCTION outbox_finish_partition_drop(name text)
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

-- outbox_live_partitions lists the time partitions of events_live with their
-- bounds, oldest first.
CREATE FUNCTION outbox_live_partitions()
    RETURNS TABLE (name text, range_start timestamptz, range_end timestamptz, detach_pending boolean)
    LANGUAGE sql STABLE
AS $$
    SELECT c.relname::text,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz,
           i.inhdetachpending
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events_live'::regclass
    ORDER BY 2;
$$;

-- outbox_table_sizes reports the size on disk and estimated rows (from
-- ANALYZE and autovacuum statistics) of webhook-outbox's tables and of each
-- events partition.
CREATE FUNCTION outbox_table_sizes()
    RETURNS TABLE (name text, parent text, rows_estimate bigint, bytes bigint)
    LANGUAGE sql STABLE
AS $$
    SELECT c.relname::text,
           coalesce(p.relname::text, ''),
           greatest(c.reltuples, 0)::bigint,
           pg_total_relation_size(c.oid)
    FROM pg_class c
    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
    LEFT JOIN pg_class p ON p.oid = i.inhparent
    WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'events'::regclass)
      AND c.relkind IN ('r', 'p')
      AND (c.relname IN ('events', 'events_live', 'events_retained', 'river_job', 'river_queue', 'route_pauses')
           OR p.relname = 'events_live')
    ORDER BY c.relname;
$$;

-- Partitions for the data there is, and a few days ahead.
-- From yesterday at least, so rows stamped just before midnight have one.
SELECT outbox_ensure_partitions(
    least(coalesce((SELECT min(received_at) FROM events_unpartitioned), now()), now() - interval '1 day'),
    now() + interval '3 days',
    interval '1 day');

INSERT INTO events (id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts)
SELECT id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts
FROM events_unpartitioned;

SELECT setval('events_id_seq', coalesce((SELECT max(id) FROM events), 0) + 1, false);

-- Delivery jobs name their event's partition, so lookups by id prune to it.
UPDATE river_job j
SET args = j.args || jsonb_build_object('received_at', e.received_at)
FROM events_unpartitioned e
WHERE j.kind = 'deliver' AND e.id = (j.args ->> 'event_id')::bigint;

DROP TABLE events_unpartitioned;

-- As in 000010, but the event is looked up per job (LATERAL ... LIMIT 1) by
-- id and partition key, so Postgres prunes to the event's partition instead
-- of hashing every partition: dead letters are few, events are many. The
-- route is the job's queue (always the route's name), so a filter on route
-- uses river_job_dead_letter_idx (queue, id).
CREATE VIEW dead_letters AS
SELECT
    e.id                                                    AS event_id,
    j.queue                                                 AS route,
    e.key,
    e.received_at,
    outbox_payload(e.body)                                  AS payload,
    j.id                                                    AS job_id,
    j.state::text                                           AS state,
    j.attempt                                               AS attempts,
    j.max_attempts,
    (j.errors[array_upper(j.errors, 1)] ->> 'error')::text  AS last_error,
    coalesce(to_jsonb(j.errors), '[]'::jsonb)::jsonb        AS errors,
    j.finalized_at                                          AS failed_at
FROM river_job j
CROSS JOIN LATERAL (
    SELECT ev.id, ev.key, ev.received_at, ev.body, ev.delivered_at
    FROM events ev
    WHERE ev.id = (j.args ->> 'event_id')::bigint
      AND ev.received_at = (j.args ->> 'received_at')::timestamptz
    LIMIT 1
) e
WHERE j.kind = 'deliver'
  AND j.state IN ('discarded', 'cancelled')
  AND (e.delivered_at IS NULL OR e.delivered_at < j.finalized_at);

COMMENT ON VIEW dead_letters IS 'Webhooks webhook-outbox could not deliver: discarded or cancelled delivery jobs joined to their events.';
