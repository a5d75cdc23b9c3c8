-- Which answers from the target made events fail permanently (cancelled:
-- a 4xx other than 408/425/429, a redirect, or the give_up_after deadline)?
-- Intake's own rejections (401, 413, 422 ...) are not stored in Postgres, so
-- that a flood of bad requests cannot write to the database; they are in
-- the log with the sender's remote_addr.
SELECT route,
       coalesce(substring(last_error from 'target answered ([0-9]{3} [A-Za-z -]+?)( after|$)'),
                CASE WHEN last_error LIKE 'gave up:%' THEN 'give_up_after deadline' ELSE 'other' END) AS cause,
       count(*) AS dead_letters,
       max(failed_at) AS last_seen
FROM dead_letters
WHERE state = 'cancelled'
GROUP BY 1, 2
ORDER BY dead_letters DESC;
