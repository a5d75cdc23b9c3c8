-- The view as 000012 made it.
CREATE OR REPLACE VIEW dead_letters AS
SELECT
    e.id                                                    AS event_id,
    j.queue                                                 AS route,
    e.key,
    e.received_at,
    outbox_payload(e.body)                                  AS payload,
    j.id                                                    AS job_id,
    j.state::text                                           AS state,
    j.attempt                                               AS attempts,
    j.max_attempts,
    (j.errors[array_upper(j.errors, 1)] ->> 'error')::text  AS last_error,
    coalesce(to_jsonb(j.errors), '[]'::jsonb)::jsonb        AS errors,
    j.finalized_at                                          AS failed_at
FROM river_job j
CROSS JOIN LATERAL (
    SELECT ev.id, ev.key, ev.received_at, ev.body, ev.delivered_at
    FROM events ev
    WHERE ev.id = (j.args ->> 'event_id')::bigint
      AND ev.received_at = (j.args ->> 'received_at')::timestamptz
    LIMIT 1
) e
WHERE j.kind = 'deliver'
  AND j.state IN ('discarded', 'cancelled')
  AND (e.delivered_at IS NULL OR e.delivered_at < j.finalized_at);

DROP FUNCTION outbox_attempt_error(text);
