-- name: LockEventKeys :exec
-- The idempotency guarantee, part one: serialise concurrent intakes of the
-- same (route, key) until the transaction ends. The same statement locks the
-- events' ordering keys (class 20251213; "" for none), under which their
-- jobs are queued in commit order (see migration 000018). All are locked in
-- (class, hash) order, the order every transaction takes them in, so two
-- batches sharing keys cannot deadlock. The two-int form keeps these locks
-- apart from golang-migrate's single-bigint one; a hash collision only
-- serialises two unrelated keys. See migration 000012 for why no unique
-- index can do this across partitions.
SELECT pg_advisory_xact_lock(s.class, s.h)
FROM (SELECT 20251128 AS class, hashtext(x.route || chr(31) || x.key) AS h
      FROM (SELECT unnest(@routes::text[]) AS route, unnest(@keys::text[]) AS key) AS x
      UNION
      SELECT 20251213, outbox_ordering_hash(y.route, y.ordering_key)
      FROM (SELECT unnest(@routes::text[]) AS route, unnest(@ordering_keys::text[]) AS ordering_key) AS y
      WHERE y.ordering_key <> ''
      ORDER BY 1, 2) AS s;

-- name: InsertEvents :many
-- Part two, in a later statement than the locks, so its snapshot sees a
-- concurrent intake of the same key that committed while we waited. It
-- inserts the events whose (route, key) no partition holds yet; within the
-- batch, the first of each key wins. Keys missing from the result are
-- duplicates. The NOT EXISTS probes each partition's (route, key) index.
INSERT INTO events (route, key, content_type, headers, body, ordering_key)
SELECT x.route, x.key, x.content_type, x.headers, x.body, nullif(x.ordering_key, '')
FROM (
    SELECT DISTINCT ON (b.route, b.key) b.route, b.key, b.content_type, b.headers, b.body, b.ordering_key, b.ord
    FROM (SELECT unnest(@routes::text[])        AS route,
                 unnest(@keys::text[])          AS key,
                 unnest(@content_types::text[]) AS content_type,
                 unnest(@headers::jsonb[])      AS headers,
                 unnest(@bodies::bytea[])       AS body,
                 unnest(@ordering_keys::text[]) AS ordering_key,
                 generate_series(1, cardinality(@routes::text[])) AS ord) AS b
    ORDER BY b.route, b.key, b.ord
) AS x
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.route = x.route AND e.key = x.key)
ORDER BY x.ord
RETURNING id, route, key, received_at;

-- name: EnsurePartitions :one
-- Creates events' time partitions for [from, to), waiting at most lock_wait
-- for each; busy says it gave up on a lock. See migration 000013.
SELECT p.created::integer AS created, p.busy::boolean AS busy
FROM outbox_ensure_partitions(@from_ts::timestamptz, @to_ts::timestamptz, make_interval(secs => @step_secs::float8),
                              make_interval(secs => @lock_wait_secs::float8)) AS p (created, busy);

-- name: GetEventForDelivery :one
-- received_at prunes the lookup to the event's partition.
SELECT id, route, key, received_at, content_type, body
FROM events
WHERE id = @id AND received_at = @received_at;

-- name: GetEventByKey :one
SELECT id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts, ordering_key
FROM events
WHERE route = @route AND key = @key;

-- name: MarkEventsDelivered :exec
-- Records a batch of deliveries; see store.Completer.
UPDATE events e
SET delivered_at = now(), delivery_attempts = x.attempt
FROM (SELECT unnest(@ids::bigint[])                AS id,
             unnest(@received_ats::timestamptz[])  AS received_at,
             unnest(@attempts::int[])              AS attempt) AS x
WHERE e.id = x.id AND e.received_at = x.received_at;
