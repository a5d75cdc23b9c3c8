-- name: DeliveryBacklog :many
-- Delivery jobs not yet finished, per route (a route's jobs run in the River
-- queue named after it) and state. The state filter is the leading column of
-- River's river_job_prioritized_fetching_index (state, queue, ...), so this
-- reads only unfinished jobs, never the completed and dead ones, which are
-- most of the table. The age is computed by Postgres so that replicas with
-- skewed clocks agree. Like DeadLetterCounts, it runs on a timer in each
-- replica, never per scrape.
SELECT
    queue                                                          AS route,
    state::text                                                    AS state,
    count(*)::bigint                                               AS jobs,
    extract(epoch FROM now() - min(created_at))::double precision AS oldest_age_seconds
FROM river_job
WHERE kind = 'deliver'
  AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
GROUP BY queue, state;

-- name: DeadLetterCounts :many
-- Rows of the dead_letters view per route, so the gauge always agrees with
-- what an operator's `select count(*) from dead_letters` shows. EXPLAIN on 2M
-- events and 20k jobs: the view's state filter is an index scan on River's
-- river_job_prioritized_fetching_index (state leads it), then each dead job
-- finds its event by events' primary key (a nested loop), so the cost grows
-- with the dead letters kept (dead_letter_retention), not with traffic.
SELECT route, count(*)::bigint AS dead_letters
FROM dead_letters
GROUP BY route;
