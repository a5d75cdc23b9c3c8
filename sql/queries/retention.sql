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
-- that appeared between RetainSurvivors and the detach (a replay, say), then
-- drops the detached table. Returns the rows rescued.
SELECT outbox_finish_partition_drop(@name::text);

-- name: ExpiredDeadLetterBatch :many
-- Dead letters older than dead_letter_retention, oldest first. River keeps
-- them forever; webhook-outbox expires them together with their events.
SELECT id AS job_id, (args ->> 'event_id')::bigint AS event_id, (args ->> 'received_at')::timestamptz AS received_at
FROM river_job
WHERE kind = 'deliver'
  AND state IN ('discarded', 'cancelled')
  AND finalized_at < @before
ORDER BY id
LIMIT @max_rows;

-- name: DeleteJobs :execrows
DELETE FROM river_job WHERE id = ANY(@job_ids::bigint[]);

-- name: DeleteUndeliveredEventsWithoutJobs :execrows
-- Deletes the listed events unless they were delivered or still have a
-- delivery job (a replay's, say).
DELETE FROM events e
WHERE (e.id, e.received_at) IN (SELECT unnest(@event_ids::bigint[]), unnest(@received_ats::timestamptz[]))
  AND e.delivered_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM river_job j WHERE j.kind = 'deliver' AND (j.args ->> 'event_id')::bigint = e.id);

-- name: DeleteExpiredRetained :execrows
-- Removes retained events that no longer need to outlive their partition:
-- older than event_retention and with no delivery waiting and no dead letter
-- kept. Retained events are few; batches keep each transaction short.
DELETE FROM events e
WHERE e.retained
  AND (e.id, e.received_at) IN (
      SELECT r.id, r.received_at
      FROM events r
      WHERE r.retained
        AND r.received_at < @before
        AND NOT EXISTS (SELECT 1 FROM river_job j
                        WHERE j.kind = 'deliver' AND (j.args ->> 'event_id')::bigint = r.id AND j.state <> 'completed')
      LIMIT @max_rows);

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
