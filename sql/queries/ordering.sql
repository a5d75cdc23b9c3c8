-- Ordered delivery per key: see migration 000018 for the rule and the
-- triggers that keep it. A key is a route (the job's queue) and an ordering
-- value (args.ordering_key). Every query here that locks keys does so in
-- one statement, sorted by hash, like the triggers and intake.

-- name: BusyOrderingKeys :many
-- Of the given keys, those whose new events must wait: the key has a head
-- or events already waiting. Run after the keys' locks, so a concurrent
-- intake or promotion of the same key has committed and is seen.
SELECT x.route::text AS route, x.ordering_key::text AS ordering_key
FROM (SELECT DISTINCT unnest(@routes::text[]) AS route, unnest(@ordering_keys::text[]) AS ordering_key) AS x
WHERE outbox_ordering_busy(x.route, x.ordering_key);

-- name: LockOrderingKeys :exec
-- Takes the locks of the given keys ("" for none), sorted.
SELECT pg_advisory_xact_lock(20251213, s.h)
FROM (SELECT DISTINCT outbox_ordering_hash(x.route, x.ordering_key) AS h
      FROM (SELECT unnest(@routes::text[]) AS route, unnest(@ordering_keys::text[]) AS ordering_key) AS x
      WHERE x.ordering_key <> ''
      ORDER BY 1) AS s;

-- name: LockOrderingKeysOfJobs :exec
-- Takes the locks of the keys of the given delivery jobs, sorted: before a
-- statement that makes many of them deliverable again (a bulk retry), whose
-- row trigger would otherwise take them in row order.
SELECT pg_advisory_xact_lock(20251213, s.h)
FROM (SELECT DISTINCT outbox_ordering_hash(j.queue, j.args ->> 'ordering_key') AS h
      FROM river_job j
      WHERE j.id = ANY(@job_ids::bigint[]) AND j.kind = 'deliver' AND j.args ? 'ordering_key'
      ORDER BY 1) AS s;

-- name: UpsertOrderedRoutes :exec
-- Records the ordered routes of the running config, with their
-- on_dead_letter, and forgets the others.
WITH cfg AS (
    SELECT unnest(@routes::text[]) AS route, unnest(@modes::text[]) AS on_dead_letter
), gone AS (
    DELETE FROM outbox_ordered_routes r WHERE r.route NOT IN (SELECT route FROM cfg)
)
INSERT INTO outbox_ordered_routes (route, on_dead_letter)
SELECT route, on_dead_letter FROM cfg
ON CONFLICT (route) DO UPDATE SET on_dead_letter = EXCLUDED.on_dead_letter, updated_at = now()
WHERE outbox_ordered_routes.on_dead_letter IS DISTINCT FROM EXCLUDED.on_dead_letter;

-- name: LockUnblockableKeys :exec
-- Takes the locks of the keys held by a blocking dead letter on a route
-- that no longer blocks (on_dead_letter now continue, or ordering removed),
-- before ReleaseUnblockableKeys.
SELECT pg_advisory_xact_lock(20251213, s.h)
FROM (SELECT DISTINCT outbox_ordering_hash(j.queue, j.args ->> 'ordering_key') AS h
      FROM river_job j
      WHERE j.kind = 'deliver' AND j.args ? 'ordering_key' AND j.state IN ('discarded', 'cancelled')
        AND j.metadata ? 'ordering_blocked'
        AND NOT EXISTS (SELECT 1 FROM outbox_ordered_routes r WHERE r.route = j.queue AND r.on_dead_letter = 'block')
      ORDER BY 1) AS s;

-- name: ReleaseUnblockableKeys :execrows
-- Clears the flag of those dead letters; the update trigger then releases
-- each key's next event. The dead letters stay dead letters.
UPDATE river_job j
SET metadata = j.metadata - 'ordering_blocked'
WHERE j.kind = 'deliver' AND j.args ? 'ordering_key' AND j.state IN ('discarded', 'cancelled')
  AND j.metadata ? 'ordering_blocked'
  AND NOT EXISTS (SELECT 1 FROM outbox_ordered_routes r WHERE r.route = j.queue AND r.on_dead_letter = 'block');

-- name: LockBlockedKeys :exec
-- Takes the locks of the given keys of one route, sorted, before
-- ReleaseBlockedKeys.
SELECT pg_advisory_xact_lock(20251213, s.h)
FROM (SELECT DISTINCT outbox_ordering_hash(@route::text, k) AS h FROM unnest(@ordering_keys::text[]) AS k ORDER BY 1) AS s;

-- name: ReleaseBlockedKeys :many
-- An operator's release of blocked keys: their blocking dead letters stop
-- holding them (and stay dead letters, to retry later if need be); the
-- update trigger releases each key's next event.
UPDATE river_job j
SET metadata = j.metadata - 'ordering_blocked'
WHERE j.queue = @route AND j.args ->> 'ordering_key' = ANY(@ordering_keys::text[])
  AND j.kind = 'deliver' AND j.args ? 'ordering_key' AND j.state IN ('discarded', 'cancelled')
  AND j.metadata ? 'ordering_blocked'
RETURNING (j.args ->> 'ordering_key')::text AS ordering_key;

-- name: ListBlockedKeys :many
-- A route's blocked keys (the ordering_blocked_keys view), in keyset pages
-- by ordering value.
SELECT route, ordering_key, reason, head_job_id, head_event_id, head_key, head_state, head_attempt, head_max_attempts,
       head_last_error, head_attempted_at, head_next_attempt_at, head_failed_at, waiting
FROM ordering_blocked_keys
WHERE route = @route
  AND (sqlc.narg(reason)::text IS NULL OR reason = sqlc.narg(reason))
  AND ordering_key > @after_ordering_key
ORDER BY ordering_key
LIMIT @max_rows;

-- name: BlockedKeyCounts :many
-- Blocked keys per route and reason, for the routes listing and the
-- gauges. It reads only ordered routes' unfinished jobs (see the view).
SELECT route::text AS route, reason::text AS reason, count(*)::bigint AS keys
FROM ordering_blocked_keys
GROUP BY 1, 2;

-- name: StrandedOrderingKeys :many
-- Keys with events waiting and no head, which the rule never leaves behind
-- (the ordering check's safety net looks for them).
SELECT route::text AS route, ordering_key::text AS ordering_key, waiting::bigint AS waiting
FROM ordering_blocked_keys
WHERE reason = 'no_head'
ORDER BY 1, 2
LIMIT @max_rows;

-- name: PromoteOrderingKeys :one
-- Promotes the next event of each given key that has no head; returns how
-- many it promoted.
SELECT outbox_ordering_promote(@routes::text[], @ordering_keys::text[])::integer AS promoted;
