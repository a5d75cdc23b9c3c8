-- name: LivePartitions :many
SELECT p.name::text AS name, p.range_start::timestamptz AS range_start, p.range_end::timestamptz AS range_end, p.detach_pending::boolean AS detach_pending
FROM outbox_live_partitions() AS p (name, range_start, range_end, detach_pending);

-- name: RetainSurvivors :execrows
-- Moves the events of [range_start, range_end) that must outlive their
-- partition into events_retained: those with a delivery waiting or running,
-- and dead letters still kept. It starts from the jobs that are not
-- completed, which are few, not from the partition's rows, which are many.
UPDATE events e
SET retained = true
FROM river_job j
WHERE j.kind = 'deliver'
  -- Spelled as a list, not <> 'completed', so River's state indexes serve it:
  -- completed jobs are the many.
  AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled', 'discarded', 'cancelled')
  AND (j.args ->> 'received_at')::timestamptz >= @range_start::timestamptz
  AND (j.args ->> 'received_at')::timestamptz < @range_end::timestamptz
  AND e.id = (j.args ->> 'event_id')::bigint
  AND e.received_at = (j.args ->> 'received_at')::timestamptz
  AND NOT e.retained
  AND (j.state NOT IN ('discarded', 'cancelled') OR e.delivered_at IS NULL OR e.delivered_at < j.finalized_at);

-- name: RescueDetachedSurvivors :one
-- After a partition is detached, copies into events_retained any survivor
-- that appeared between RetainSurvivors and the detach, or since (a replay,
-- a retry from River UI), drops the detached table and forgets its pending
-- drop, in one transaction. Returns the rows rescued.
SELECT outbox_finish_partition_drop(@name::text);

-- name: RecordPartitionDrop :exec
-- Written and committed before the detach, so a run interrupted anywhere
-- after it leaves a record the next run finishes from (migration 000013).
INSERT INTO outbox_partition_drops (name) VALUES (@name) ON CONFLICT (name) DO NOTHING;

-- name: ForgetPartitionDrop :exec
DELETE FROM outbox_partition_drops WHERE name = @name;

-- name: PendingPartitionDrops :many
-- Drops an earlier run recorded and did not finish, with where each stands.
SELECT s.name::text AS name, s.state::text AS state
FROM outbox_partition_drop_states() AS s (name, state);

-- name: SetLockTimeout :exec
-- SET LOCAL lock_timeout, for the rest of the transaction.
SELECT set_config('lock_timeout', @timeout::text, true);

-- name: TryMaintenanceLock :one
-- One maintenance run at a time, across replicas and River's rescues: a
-- session-level advisory lock, held by the run's own connection, so a
-- crashed run's lock goes with its connection. The two-int key space (its
-- first number distinct from intake's) keeps it apart from other locks.
SELECT pg_try_advisory_lock(20251130, 1);

-- name: MaintenanceUnlock :one
SELECT pg_advisory_unlock(20251130, 1);

-- name: ExpiredDeadLetterBatch :many
-- Candidates for expiry: dead letters older than dead_letter_retention, in
-- job id order after a cursor. River keeps them forever; webhook-outbox
-- expires them together with their events. A candidate may be retried
-- before it is deleted, so DeleteExpiredDeadLetterJobs checks again.
SELECT id AS job_id, (args ->> 'event_id')::bigint AS event_id, (args ->> 'received_at')::timestamptz AS received_at
FROM river_job
WHERE kind = 'deliver'
  AND state IN ('discarded', 'cancelled')
  AND finalized_at < @before
  AND id > @after_id
ORDER BY id
LIMIT @max_rows;

-- name: LockEvents :many
-- Locks events rows, in id order, until the transaction ends, and returns
-- the ids of those still there. Whoever changes both an event and its jobs
-- (dead-letter expiry, replay) locks the event first, so they cannot
-- deadlock on each other.
SELECT e.id
FROM events e
WHERE (e.id, e.received_at) IN (SELECT unnest(@event_ids::bigint[]), unnest(@received_ats::timestamptz[]))
ORDER BY e.id
FOR UPDATE OF e;

-- name: DeleteExpiredDeadLetterJobs :many
-- Deletes the listed jobs that are still dead letters older than the
-- cutoff, and returns their events. A job retried or replayed since it was
-- listed is no longer discarded or cancelled, so it stays: under READ
-- COMMITTED, a row a retry changed while this statement waited for it is
-- checked again in its new state.
DELETE FROM river_job
WHERE id = ANY(@job_ids::bigint[])
  AND kind = 'deliver'
  AND state IN ('discarded', 'cancelled')
  AND finalized_at < @before
RETURNING id AS job_id, (args ->> 'event_id')::bigint AS event_id, (args ->> 'received_at')::timestamptz AS received_at;

-- name: DeleteUndeliveredEventsWithoutJobs :one
-- Deletes the listed events (those of the dead letters just expired) unless
-- they were delivered or still have a delivery job (a replay's, say), and
-- their keys with them (migration 000022). Returns the events deleted.
WITH gone AS (
    DELETE FROM events e
    WHERE (e.id, e.received_at) IN (SELECT unnest(@event_ids::bigint[]), unnest(@received_ats::timestamptz[]))
      AND e.delivered_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM river_job j WHERE j.kind = 'deliver' AND (j.args ->> 'event_id')::bigint = e.id)
    RETURNING e.id, e.route, e.key
), keys AS (
    DELETE FROM event_keys k USING gone
    WHERE k.route = gone.route AND k.key = gone.key AND k.event_id = gone.id
)
SELECT count(*) FROM gone;

-- name: DeleteExpiredRetained :one
-- Removes retained events that no longer need to outlive their partition:
-- older than event_retention and with no delivery waiting and no dead letter
-- kept, and their keys with them (migration 000022). Retained events are
-- few; batches keep each transaction short. Returns the events deleted.
WITH gone AS (
    DELETE FROM events e
    WHERE e.retained
      AND (e.id, e.received_at) IN (
          SELECT r.id, r.received_at
          FROM events r
          WHERE r.retained
            AND r.received_at < @before
            AND NOT EXISTS (SELECT 1 FROM river_job j
                            WHERE j.kind = 'deliver' AND (j.args ->> 'event_id')::bigint = r.id AND j.state <> 'completed')
          LIMIT @max_rows)
    RETURNING e.id, e.route, e.key
), keys AS (
    DELETE FROM event_keys k USING gone
    WHERE k.route = gone.route AND k.key = gone.key AND k.event_id = gone.id
)
SELECT count(*) FROM gone;

-- name: DeleteOldReplays :execrows
-- Replays untouched for event_retention: their events are gone too.
DELETE FROM outbox_replays WHERE updated_at < @before;

-- name: TableSizes :many
SELECT t.name::text AS name, t.parent::text AS parent, t.rows_estimate::bigint AS rows_estimate, t.bytes::bigint AS bytes
FROM outbox_table_sizes() AS t (name, parent, rows_estimate, bytes);

-- name: ExactEventCounts :many
SELECT tableoid::regclass::text AS name, count(*) AS rows FROM events GROUP BY 1;

-- name: OldestEvent :many
-- Zero or one row. Partitions are scanned in received_at order, so this
-- reads the oldest partition (and events_retained), not all of them.
SELECT received_at FROM events ORDER BY received_at LIMIT 1;

-- name: CountAllDeadLetters :one
SELECT count(*) FROM dead_letters;

-- name: OldestDeadLetter :many
-- Zero or one row.
SELECT failed_at FROM dead_letters WHERE failed_at IS NOT NULL ORDER BY failed_at LIMIT 1;
