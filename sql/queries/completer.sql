-- Queries of store.Completer, which records acknowledged deliveries in
-- shared transactions. None of them waits for a row another transaction
-- holds: a delivery whose rows are held (retention moving its event, an
-- operator's retry touching its job) is answered "busy" and recorded in a
-- later batch, so one held row never holds up the others.

-- name: SetCompleterLockTimeout :exec
-- Bounds a wait for a table-level lock (partition DDL on events_live, say):
-- the batch fails with lock_not_available and is tried again.
SELECT set_config('lock_timeout', @timeout::text, true);

-- name: LockDeliveredEvents :many
-- Locks the batch's events that no other transaction holds.
SELECT e.id
FROM events e
JOIN (SELECT unnest(@ids::bigint[])               AS id,
             unnest(@received_ats::timestamptz[]) AS received_at) AS x
  ON e.id = x.id AND e.received_at = x.received_at
FOR UPDATE OF e SKIP LOCKED;

-- name: PresentEvents :many
-- Of events LockDeliveredEvents skipped, those that exist: they are held by
-- another transaction. The others are gone, and there is nothing to mark.
SELECT e.id
FROM events e
JOIN (SELECT unnest(@ids::bigint[])               AS id,
             unnest(@received_ats::timestamptz[]) AS received_at) AS x
  ON e.id = x.id AND e.received_at = x.received_at;

-- name: LockDeliveryJobs :many
-- Locks the batch's jobs that no other transaction holds.
SELECT id FROM river_job WHERE id = ANY(@ids::bigint[]) FOR UPDATE SKIP LOCKED;

-- name: PresentJobs :many
-- Of jobs LockDeliveryJobs skipped, those that exist: held by another
-- transaction.
SELECT id FROM river_job WHERE id = ANY(@ids::bigint[]);

-- name: CompleteRunningJobs :exec
-- Completes delivery jobs that are still running, as River's own
-- completion (river.JobCompleteTx) does for one: the state and finalized_at,
-- nothing else. When the worker then returns, River's executor finds the
-- job no longer running and leaves it. river_job is River's table, but its
-- schema comes through our migrations, which a test holds to River's
-- (TestRiverMigrationsMatchRiver); River's Go driver, which would do the
-- same, is not for user code and may change without notice.
UPDATE river_job
SET state = 'completed', finalized_at = @finalized_at::timestamptz
WHERE id = ANY(@ids::bigint[]) AND state = 'running';
