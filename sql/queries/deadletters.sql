-- name: ListDeadLetters :many
-- Newest first, in keyset pages over (failed_at, job_id). River's partial
-- index on (state, finalized_at) serves the order.
SELECT event_id, route, key, received_at, payload, job_id, state, attempts, max_attempts, last_error, errors, failed_at
FROM dead_letters
WHERE (sqlc.narg(route)::text IS NULL OR route = sqlc.narg(route))
  AND (sqlc.narg(since)::timestamptz IS NULL OR failed_at >= sqlc.narg(since))
  AND (sqlc.narg(until)::timestamptz IS NULL OR failed_at < sqlc.narg(until))
  AND (sqlc.narg(error_like)::text IS NULL OR last_error ILIKE sqlc.narg(error_like))
  AND (sqlc.narg(before_failed_at)::timestamptz IS NULL
       OR (failed_at, job_id) < (sqlc.narg(before_failed_at)::timestamptz, sqlc.narg(before_job_id)::bigint))
ORDER BY failed_at DESC, job_id DESC
LIMIT @max_rows;

-- name: CountDeadLetters :one
-- A payload condition parses every matching dead letter's body
-- (outbox_payload): about 3.6 s for 100,000 bodies of 1 KB here. Only the
-- console's "Retry all matching" count asks for one. after_job_id, when
-- set, counts only those a resumed bulk retry has left.
SELECT count(*)
FROM dead_letters
WHERE (sqlc.narg(route)::text IS NULL OR route = sqlc.narg(route))
  AND (sqlc.narg(since)::timestamptz IS NULL OR failed_at >= sqlc.narg(since))
  AND (sqlc.narg(until)::timestamptz IS NULL OR failed_at < sqlc.narg(until))
  AND (sqlc.narg(error_like)::text IS NULL OR last_error ILIKE sqlc.narg(error_like))
  AND (sqlc.narg(payload_path)::text[] IS NULL OR payload #>> sqlc.narg(payload_path)::text[] = sqlc.narg(payload_value)::text)
  AND (sqlc.narg(after_job_id)::bigint IS NULL OR job_id > sqlc.narg(after_job_id));

-- name: DeadLetterBatch :many
-- The next batch of dead letters to retry, in job id order after a cursor,
-- so an interrupted bulk retry resumes where it stopped.
SELECT job_id, route
FROM dead_letters
WHERE (sqlc.narg(route)::text IS NULL OR route = sqlc.narg(route))
  AND (sqlc.narg(since)::timestamptz IS NULL OR failed_at >= sqlc.narg(since))
  AND failed_at < @until
  AND (sqlc.narg(error_like)::text IS NULL OR last_error ILIKE sqlc.narg(error_like))
  AND (sqlc.narg(payload_path)::text[] IS NULL OR payload #>> sqlc.narg(payload_path)::text[] = sqlc.narg(payload_value)::text)
  AND job_id > @after_job_id
ORDER BY job_id
LIMIT @max_rows;

-- name: GetDeadLetter :one
SELECT event_id, route, key, received_at, payload, job_id, state, attempts, max_attempts, last_error, errors, failed_at
FROM dead_letters
WHERE job_id = @job_id;

-- name: RetryDeadLetterJobs :many
-- Gives dead delivery jobs back to their route's workers with the full retry
-- budget: attempt 0, the route's max_attempts, and a fresh give_up_after
-- deadline in the metadata. River's JobRetry would instead keep the used
-- attempts and add one. The state check makes a concurrent or repeated retry
-- of the same job a no-op.
UPDATE river_job AS j
SET state        = 'available',
    attempt      = 0,
    max_attempts = r.max_attempts,
    scheduled_at = now(),
    finalized_at = NULL,
    -- River cancels a job whose metadata holds cancel_attempted_at (a
    -- cancel from River UI or the API) at its next failure; River's own
    -- JobRetry removes it, and so does this.
    metadata     = (j.metadata - 'cancel_attempted_at') || jsonb_build_object(
                       'give_up_at', now() + make_interval(secs => r.give_up_after_secs),
                       'retried_at', now())
                   -- A replay tags the jobs it revives, as those it inserts.
                   || CASE WHEN @replay_id::text = '' THEN '{}'::jsonb
                           ELSE jsonb_build_object('replay_id', @replay_id::text) END
FROM (SELECT unnest(@routes::text[])               AS route,
             unnest(@max_attempts::int[])          AS max_attempts,
             unnest(@give_up_after_secs::float8[]) AS give_up_after_secs) AS r
WHERE j.id = ANY(@job_ids::bigint[])
  AND j.queue = r.route
  AND j.kind = 'deliver'
  AND j.state IN ('discarded', 'cancelled')
RETURNING j.id;
