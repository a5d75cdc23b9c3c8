-- name: InsertEvent :one
-- ON CONFLICT DO NOTHING is the idempotency guarantee: a concurrent insert of
-- the same (route, key) waits for the first transaction, then returns no row
-- if it committed. No row means "duplicate".
INSERT INTO events (route, key, content_type, headers, body)
VALUES (@route, @key, @content_type, @headers, @body)
ON CONFLICT (route, key) DO NOTHING
RETURNING id, received_at;

-- name: GetEventForDelivery :one
SELECT id, route, key, received_at, content_type, body
FROM events
WHERE id = @id;

-- name: MarkEventDelivered :exec
UPDATE events
SET delivered_at = now(), delivery_attempts = @attempts
WHERE id = @id;

-- name: GetEventByKey :one
SELECT id, route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts
FROM events
WHERE route = @route AND key = @key;
