-- Which events have waited longest for delivery, and what did their last
-- attempt say? The place to start when a route's backlog does not drain.
SELECT e.route, e.key, e.received_at, j.state, j.attempt, j.max_attempts, j.scheduled_at AS next_attempt,
       j.errors[array_upper(j.errors, 1)] ->> 'error' AS last_error
FROM river_job j
JOIN events e ON e.id = (j.args ->> 'event_id')::bigint
             AND e.received_at = (j.args ->> 'received_at')::timestamptz
WHERE j.kind = 'deliver'
  AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
ORDER BY e.received_at
LIMIT 20;
