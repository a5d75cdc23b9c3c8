-- Queries of the operator console (handler/console through store/console.go).

-- name: ConsoleActivity :many
-- Deliveries and failed attempts per route and minute since @since, for the
-- overview's charts. A delivery is a completed job, counted at its
-- finalized_at. A failure is an entry of river_job.errors, counted at its
-- "at". Every job with an error since @since is either unfinished, or was
-- finalized after that error, so two index scans find them all, and neither
-- grows with River's completed_job_retention:
--   * finished jobs: River's (state, finalized_at) index, from @since on;
--   * unfinished jobs: River's fetching index, whose leading column is state
--     (this part grows with the backlog, as the backlog gauge's query does).
-- The console asks for the whole hour once, then only for the last few
-- minutes (see store.Activity), so an overview costs about as many rows as
-- deliveries in those minutes. Measured on 1.6 million delivery jobs with
-- 292,000 completed in the hour: the whole hour in 0.6-0.8 s, three minutes
-- in a few tens of milliseconds.
WITH finished AS (
    SELECT queue, state, finalized_at, errors
    FROM river_job
    WHERE kind = 'deliver'
      AND state IN ('completed', 'discarded', 'cancelled')
      AND finalized_at >= @since::timestamptz
), failing AS (
    SELECT queue, errors FROM finished WHERE errors IS NOT NULL
    UNION ALL
    SELECT queue, errors
    FROM river_job
    WHERE kind = 'deliver'
      AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
      AND errors IS NOT NULL
)
SELECT x.route::text AS route, x.minute::timestamptz AS minute, sum(x.delivered)::bigint AS delivered, sum(x.failed)::bigint AS failed
FROM (
    SELECT queue AS route, date_trunc('minute', finalized_at) AS minute, 1 AS delivered, 0 AS failed
    FROM finished
    WHERE state = 'completed'
    UNION ALL
    SELECT f.queue, date_trunc('minute', (e ->> 'at')::timestamptz), 0, 1
    FROM failing f, unnest(f.errors) AS e
    WHERE (e ->> 'at')::timestamptz >= @since::timestamptz
) AS x
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: ConsoleDeadLetterWindow :many
-- The next window of dead letters in the list's order (newest failure
-- first, keyset over (failed_at, job_id)), with whether each matches the
-- payload condition. river_job_dead_letter_failed_at_idx (000016) gives the
-- order, so a window reads max_rows jobs and their events. The payload
-- condition parses each body in the window (outbox_payload), about 60 µs a
-- kilobyte here; so the console scans in windows against a time budget
-- instead of parsing every dead letter for one page. The condition compares
-- the JSON value's text (#>>): a string without its quotes, a number or a
-- boolean as written.
SELECT job_id, event_id, route, key, state, attempts, max_attempts, last_error, failed_at, received_at,
       (sqlc.narg(payload_path)::text[] IS NULL
        OR payload #>> sqlc.narg(payload_path)::text[] = sqlc.narg(payload_value)::text)::boolean AS matched
FROM dead_letters
WHERE (sqlc.narg(route)::text IS NULL OR route = sqlc.narg(route))
  AND (sqlc.narg(since)::timestamptz IS NULL OR failed_at >= sqlc.narg(since))
  AND (sqlc.narg(until)::timestamptz IS NULL OR failed_at < sqlc.narg(until))
  AND (sqlc.narg(error_like)::text IS NULL OR last_error ILIKE sqlc.narg(error_like))
  AND (sqlc.narg(before_failed_at)::timestamptz IS NULL
       OR (failed_at, job_id) < (sqlc.narg(before_failed_at)::timestamptz, sqlc.narg(before_job_id)::bigint))
ORDER BY failed_at DESC, job_id DESC
LIMIT @max_rows;

-- name: ConsoleDeadLetter :one
-- One dead letter with what its page shows: the first @preview_bytes of the
-- stored body (never the whole of a large one), its size, the stored
-- headers, and the job's creation time and metadata (its give-up deadline).
SELECT d.event_id, d.route, d.key, d.received_at, d.job_id, d.state, d.attempts, d.max_attempts,
       d.last_error, d.errors, d.failed_at,
       j.created_at AS job_created_at, j.metadata AS job_metadata,
       e.content_type, e.headers,
       octet_length(e.body)::bigint AS body_bytes,
       substring(e.body FROM 1 FOR @preview_bytes::int)::bytea AS body_preview
FROM dead_letters d
JOIN river_job j ON j.id = d.job_id
JOIN events e ON e.id = d.event_id AND e.received_at = d.received_at
WHERE d.job_id = @job_id;

-- name: ConsoleEventByKey :one
-- An event for its page, with a bounded preview of its body.
SELECT id, route, key, received_at, content_type, headers, delivered_at, delivery_attempts,
       octet_length(body)::bigint AS body_bytes,
       substring(body FROM 1 FOR @preview_bytes::int)::bytea AS body_preview
FROM events
WHERE route = @route AND key = @key;

-- name: ConsoleEventJobs :many
-- An event's delivery jobs, newest last, with their metadata (deadline,
-- snoozes).
SELECT id, state::text AS state, attempt, max_attempts, created_at, scheduled_at, attempted_at, finalized_at,
       coalesce(to_jsonb(errors), '[]'::jsonb)::jsonb AS errors, metadata
FROM river_job
WHERE kind = 'deliver' AND (args ->> 'event_id')::bigint = @event_id::bigint
ORDER BY id;

-- name: EventBody :one
-- An event's stored bytes, for download. The id alone probes each
-- partition's primary key once.
SELECT route, key, content_type, body FROM events WHERE id = @id LIMIT 1;

-- name: ConsoleEventWindow :many
-- The next window of a route's events received in [since, until), newest
-- first (events_route_received_at_idx, backwards), with whether each matches
-- the payload condition and its newest delivery job's state. As with dead
-- letters, the console scans in windows against a time budget.
SELECT e.id, e.route, e.key, e.received_at, e.delivered_at,
       (sqlc.narg(payload_path)::text[] IS NULL
        OR outbox_payload(e.body) #>> sqlc.narg(payload_path)::text[] = sqlc.narg(payload_value)::text)::boolean AS matched,
       coalesce(j.state, '')::text AS job_state, j.finalized_at AS job_finalized_at
FROM events e
LEFT JOIN LATERAL (
    SELECT rj.state::text AS state, rj.finalized_at
    FROM river_job rj
    WHERE rj.kind = 'deliver' AND (rj.args ->> 'event_id')::bigint = e.id
    ORDER BY rj.id DESC
    LIMIT 1
) j ON true
WHERE e.route = @route
  AND e.received_at >= @since::timestamptz
  AND e.received_at < @until::timestamptz
  AND (sqlc.narg(before_received_at)::timestamptz IS NULL
       OR (e.received_at, e.id) < (sqlc.narg(before_received_at)::timestamptz, sqlc.narg(before_id)::bigint))
ORDER BY e.received_at DESC, e.id DESC
LIMIT @max_rows;
