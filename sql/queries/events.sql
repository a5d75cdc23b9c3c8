-- name: LockEventKey :exec
-- The idempotency guarantee, part one: serialise concurrent intakes of one
-- (route, key) until the transaction ends. The two-int form keeps these
-- locks apart from golang-migrate's single-bigint one. A hash collision only
-- serialises two unrelated keys. See migration 000012 for why no unique
-- index can do this across partitions.
SELECT pg_advisory_xact_lock(20251128, hashtext(@route::text || chr(31) || @key::text));

-- name: InsertEvent :one
-- Part two: run after LockEventKey, in a later statement, so its snapshot
-- sees a concurrent intake of the same key that committed while we waited.
-- No row returned means "duplicate". The NOT EXISTS probes every partition's
-- (route, key) index.
INSERT INTO events (route, key, content_type, headers, body)
SELECT @route, @key, @content_type, @headers, @body
WHERE NOT EXISTS (SELECT 1 FROM events WHERE route = @route AND key = @key)
RETURNING id, received_at;

-- name: EnsurePartitions :one
-- Creates events' time partitions for [from, to); see migration 000012.
SELECT outbox_ensure_partitions(@from_ts::timestamptz, @to_ts::timestamptz, make_interval(secs => @step_secs::float8));

-- name: GetEventForDelivery :one
-- received_at prunes the lookup to the event's partition.
SELECT id, route, key, received_at, content_type, body
FROM events
WHERE id = @id AND received_at = @received_at;

-- name: MarkEventDelivered :exec
UPDATE events
SET delivered_at = now(), delivery_attempts = @attempts
WHERE id = @id AND received_at = @received_at;

-- name: GetEventByKey :one
SELECT id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts
FROM events
WHERE route = @route AND key = @key;
