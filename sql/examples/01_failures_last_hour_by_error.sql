-- What failed for good in the last hour, grouped by error?
-- The "after 212ms" part of each error is dropped so that the same failure
-- groups together however long it took.
SELECT route,
       regexp_replace(last_error, ' after [0-9.]+(ns|µs|ms|s|m|h)+', '') AS error,
       count(*)                                                     AS dead_letters,
       min(failed_at)                                               AS first_failed,
       max(failed_at)                                               AS last_failed
FROM dead_letters
WHERE failed_at > now() - interval '1 hour'
GROUP BY 1, 2
ORDER BY dead_letters DESC;
