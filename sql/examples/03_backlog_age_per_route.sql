-- How far behind is each route? Events waiting for delivery, split by why
-- they wait, and how long the oldest has waited.
--   available: due now, waiting for a worker (or the route is paused)
--   retryable: failed, waiting for their backoff
--   scheduled: snoozed by a Retry-After, or a distant retry
SELECT j.queue                                            AS route,
       count(*) FILTER (WHERE j.state = 'available')     AS available,
       count(*) FILTER (WHERE j.state = 'retryable')     AS retryable,
       count(*) FILTER (WHERE j.state = 'scheduled')     AS scheduled,
       count(*) FILTER (WHERE j.state = 'running')       AS running,
       date_trunc('second', now() - min(e.received_at)) AS oldest_waiting,
       (SELECT paused_at FROM river_queue q WHERE q.name = j.queue) AS paused_at
FROM river_job j
JOIN events e ON e.id = (j.args ->> 'event_id')::bigint
             AND e.received_at = (j.args ->> 'received_at')::timestamptz
WHERE j.kind = 'deliver'
  AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
GROUP BY j.queue
ORDER BY oldest_waiting DESC;
