-- name: JobsForEvent :many
SELECT id, queue, state, attempt, max_attempts, created_at, scheduled_at, attempted_at, finalized_at, errors
FROM river_job
WHERE kind = 'deliver' AND (args ->> 'event_id')::bigint = @event_id::bigint
ORDER BY id;

-- name: OpenJobsForEvents :many
-- Jobs of these events that are not completed: active ones (an event with
-- one is not replayed again) and dead ones (replay revives them).
SELECT (args ->> 'event_id')::bigint AS event_id, id, state::text AS state, finalized_at
FROM river_job
WHERE kind = 'deliver'
  AND (args ->> 'event_id')::bigint = ANY(@event_ids::bigint[])
  AND state <> 'completed'
ORDER BY id;

-- name: ReplayBatch :many
-- Events of a route received in a window, any state, in keyset order after a
-- cursor (events_route_received_at_idx).
SELECT id, key, received_at, delivered_at, ordering_key
FROM events
WHERE route = @route
  AND received_at >= @since
  AND received_at < @until
  AND (sqlc.narg(key)::text IS NULL OR key = sqlc.narg(key))
  AND (received_at, id) > (@after_received_at::timestamptz, @after_id::bigint)
ORDER BY received_at, id
LIMIT @max_rows;

-- name: CountReplay :one
SELECT count(*) FROM events
WHERE route = @route AND received_at >= @since AND received_at < @until
  AND (sqlc.narg(key)::text IS NULL OR key = sqlc.narg(key));

-- name: DeliveredSinceByRoute :many
-- Completed delivery jobs; River keeps them for a day, which covers the
-- hour asked for. River's (state, finalized_at) index serves it.
SELECT queue AS route, count(*) AS delivered
FROM river_job
WHERE kind = 'deliver' AND state = 'completed' AND finalized_at >= @since
GROUP BY queue;

-- name: ListRoutePauses :many
SELECT route, paused_at FROM route_pauses;

-- name: SetRoutePaused :exec
INSERT INTO route_pauses (route) VALUES (@route) ON CONFLICT (route) DO NOTHING;

-- name: ClearRoutePaused :exec
DELETE FROM route_pauses WHERE route = @route;

-- name: EnsureQueueRow :exec
-- Creates River's queue row if it is missing (River refuses to pause a queue
-- it has never run), with the pause already applied when paused_at is set.
INSERT INTO river_queue (name, created_at, metadata, paused_at, updated_at)
VALUES (@name, now(), '{}', sqlc.narg(paused_at), now())
ON CONFLICT (name) DO NOTHING;

-- name: QueuePauseStates :many
SELECT name, paused_at FROM river_queue WHERE name = ANY(@names::text[]);

-- name: StartReplay :exec
-- Records a replay on its first run; a later run of the same id finds the
-- row as it is.
INSERT INTO outbox_replays (id, route, since, until, key, after_received_at)
VALUES (@id, @route, @since, @until, sqlc.narg(key), @after_received_at)
ON CONFLICT (id) DO NOTHING;

-- name: GetReplay :one
SELECT * FROM outbox_replays WHERE id = @id;

-- name: LockReplay :one
-- Taken by each batch: runs of the same replay go one batch at a time, each
-- after the last event the other handled.
SELECT * FROM outbox_replays WHERE id = @id FOR UPDATE;

-- name: AdvanceReplay :exec
UPDATE outbox_replays
SET after_received_at = @after_received_at, after_id = @after_id,
    replayed = replayed + @replayed, revived = revived + @revived, skipped = skipped + @skipped,
    updated_at = now()
WHERE id = @id;

-- name: FinishReplay :exec
UPDATE outbox_replays SET finished_at = coalesce(finished_at, now()), updated_at = now() WHERE id = @id;

-- name: CountReplayThrough :one
-- Events of the window a replay has handled: up to its cursor.
SELECT count(*) FROM events
WHERE route = @route AND received_at >= @since AND received_at < @until
  AND (sqlc.narg(key)::text IS NULL OR key = sqlc.narg(key))
  AND (received_at, id) <= (@through_received_at::timestamptz, @through_id::bigint);
