-- Which dead letters would `outbox dlq retry --route genesys --since 2h
-- --error 503` touch? The same filter as the CLI: route, failed_at window,
-- and a case-insensitive substring of the last error.
SELECT job_id, key, failed_at, attempts, last_error
FROM dead_letters
WHERE route = 'genesys'
  AND failed_at >= now() - interval '2 hours'
  AND last_error ILIKE '%503%'
ORDER BY job_id;
