-- name: InsertEvents :many
-- The idempotency guarantee: the batch's keys go into event_keys (one unique
-- index, however many events partitions there are; migration 000022), and
-- only the events whose key went in are inserted. A key another
-- transaction has inserted and not committed makes this statement wait for
-- that commit (the key is then skipped) or rollback (it goes in), so two
-- concurrent intakes of one key store it once. Within the batch, the first
-- event of each key wins. Ids follow the batch's order, so an ordering key's
-- events get ids in arrival order; keys go in in (route, key) order, the
-- order every intake takes them in, so two batches sharing keys cannot
-- deadlock. Keys missing from the result are duplicates.
WITH b AS (
    SELECT DISTINCT ON (b.route, b.key) b.route, b.key, b.content_type, b.headers, b.body, b.ordering_key, b.ord
    FROM (SELECT unnest(@routes::text[])        AS route,
                 unnest(@keys::text[])          AS key,
                 unnest(@content_types::text[]) AS content_type,
                 unnest(@headers::jsonb[])      AS headers,
                 unnest(@bodies::bytea[])       AS body,
                 unnest(@ordering_keys::text[]) AS ordering_key,
                 generate_series(1, cardinality(@routes::text[])) AS ord) AS b
    ORDER BY b.route, b.key, b.ord
), n AS (
    SELECT o.route, o.key, o.content_type, o.headers, o.body, o.ordering_key, o.ord, nextval('events_id_seq') AS id
    FROM (SELECT * FROM b ORDER BY b.ord) AS o
), k AS (
    INSERT INTO event_keys (route, key, event_id, received_at)
    SELECT n.route, n.key, n.id, now() FROM n ORDER BY n.route, n.key
    ON CONFLICT (route, key) DO NOTHING
    RETURNING event_id
)
INSERT INTO events (id, route, key, received_at, content_type, headers, body, ordering_key)
SELECT n.id, n.route, n.key, now(), n.content_type, n.headers, n.body, nullif(n.ordering_key, '')
FROM n JOIN k ON k.event_id = n.id
ORDER BY n.ord
RETURNING id, route, key, received_at;

-- name: EnsurePartitions :one
-- Creates events' time partitions for [from, to), waiting at most lock_wait
-- for each; busy says it gave up on a lock. See migration 000013.
SELECT p.created::integer AS created, p.busy::boolean AS busy
FROM outbox_ensure_partitions(@from_ts::timestamptz, @to_ts::timestamptz, make_interval(secs => @step_secs::float8),
                              make_interval(secs => @lock_wait_secs::float8)) AS p (created, busy);

-- name: GetEventByKey :one
SELECT id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts, ordering_key
FROM events
WHERE route = @route AND key = @key;

-- name: GetEventsForDelivery :many
-- Loads a batch of events by id and partition key (store.EventLoader):
-- received_at prunes each lookup to its event's partition.
SELECT e.id, e.route, e.key, e.received_at, e.content_type, e.body
FROM events e
JOIN (SELECT unnest(@ids::bigint[])               AS id,
             unnest(@received_ats::timestamptz[]) AS received_at) AS x
  ON e.id = x.id AND e.received_at = x.received_at;

-- name: MarkEventsDelivered :exec
-- Records a batch of deliveries; see store.Completer.
UPDATE events e
SET delivered_at = now(), delivery_attempts = x.attempt
FROM (SELECT unnest(@ids::bigint[])                AS id,
             unnest(@received_ats::timestamptz[])  AS received_at,
             unnest(@attempts::int[])              AS attempt) AS x
WHERE e.id = x.id AND e.received_at = x.received_at;
