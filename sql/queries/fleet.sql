-- Fleet-wide target protection (migration 000017): leases on each route's
-- concurrency and rate limit, and one circuit breaker per route.

-- name: RenewFleetLease :one
-- One round trip per renewal, not per delivery; see outbox_fleet_lease.
SELECT granted::integer AS granted, rate::float8 AS rate, holders::integer AS holders
FROM outbox_fleet_lease(@route::text, @holder::text, @want::integer, @inflight::integer,
                        @ceiling::integer, @rate_limit::float8, make_interval(secs => @ttl_secs::float8));

-- name: ReleaseFleetLeases :exec
-- A replica shutting down gives its shares back at once instead of letting
-- them expire.
DELETE FROM fleet_leases WHERE holder = @holder;

-- name: ListFleetLeases :many
SELECT route, holder, slots, want, rate, inflight, renewed_at, expires_at
FROM fleet_leases
WHERE expires_at > now()
ORDER BY route, holder;

-- name: ListCircuits :many
SELECT route, state, since, consecutive_failures, cooldown_ms, open_until, probe_holder, probe_until, opened, last_error, updated_at
FROM route_circuits
ORDER BY route;

-- name: RecordCircuitFailure :one
-- See outbox_circuit_failure. No row comes back when the circuit is not
-- closed: the failure came from a request sent before it opened.
SELECT route, state, since, consecutive_failures, cooldown_ms, open_until, probe_holder, probe_until, opened, last_error, updated_at
FROM outbox_circuit_failure(@route::text, @threshold::integer, @cooldown_ms::bigint, @message::text);

-- name: RecordCircuitSuccess :exec
-- An answer that shows the target is up ends a run of failures. Replicas
-- call it only when they know of one, so a healthy route writes nothing.
UPDATE route_circuits SET consecutive_failures = 0, updated_at = now()
WHERE route = @route AND state = 'closed' AND consecutive_failures > 0;

-- name: TryCircuitProbe :one
-- Takes the probe: once the cooldown is over, or when the replica that
-- held it let probe_until pass (it was killed, or its request hung), one
-- replica, and only one, moves the circuit to half-open and may send one
-- request. The row lock serialises the replicas that try at once.
UPDATE route_circuits
SET state = 'half-open',
    since = CASE WHEN state = 'open' THEN now() ELSE since END,
    probe_holder = @holder::text,
    probe_until = now() + make_interval(secs => @probe_ttl_secs::float8),
    updated_at = now()
WHERE route = @route::text
  AND ((state = 'open' AND open_until <= now())
    OR (state = 'half-open' AND (probe_holder IS NULL OR probe_until <= now())))
RETURNING route, state, since, consecutive_failures, cooldown_ms, open_until, probe_holder, probe_until, opened, last_error, updated_at;

-- name: CloseCircuit :one
-- The probe succeeded: the circuit closes for the whole fleet.
UPDATE route_circuits
SET state = 'closed', since = now(), consecutive_failures = 0, cooldown_ms = 0, open_until = NULL,
    probe_holder = NULL, probe_until = NULL, updated_at = now()
WHERE route = @route::text AND state = 'half-open' AND probe_holder = @holder::text
RETURNING route, state, since, consecutive_failures, cooldown_ms, open_until, probe_holder, probe_until, opened, last_error, updated_at;

-- name: ReopenCircuit :one
-- The probe failed: open again for twice the last cooldown, at most
-- max_cooldown.
UPDATE route_circuits
SET state = 'open', since = now(),
    cooldown_ms = least(greatest(cooldown_ms, @base_ms::bigint) * 2, @max_ms::bigint),
    open_until = now() + least(greatest(cooldown_ms, @base_ms::bigint) * 2, @max_ms::bigint) * interval '1 millisecond',
    opened = opened + 1, last_error = @message::text, probe_holder = NULL, probe_until = NULL, updated_at = now()
WHERE route = @route::text AND state = 'half-open' AND probe_holder = @holder::text
RETURNING route, state, since, consecutive_failures, cooldown_ms, open_until, probe_holder, probe_until, opened, last_error, updated_at;

-- name: ReleaseCircuitProbe :exec
-- The probe was not sent (the event could not be loaded, a shutdown):
-- another replica may take it at once.
UPDATE route_circuits SET probe_holder = NULL, probe_until = NULL, updated_at = now()
WHERE route = @route::text AND state = 'half-open' AND probe_holder = @holder::text;
