-- How many attempts did delivered events need in the last day? A histogram:
-- most should need one; a long tail means the target is flaky.
SELECT route,
       delivery_attempts                                  AS attempts,
       count(*)                                           AS events,
       repeat('#', ceil(50.0 * count(*) / max(count(*)) OVER (PARTITION BY route))::int) AS histogram
FROM events
WHERE delivered_at > now() - interval '1 day'
GROUP BY route, delivery_attempts
ORDER BY route, attempts;
