-- A dead letter is a delivery job that River gave up on (discarded: attempts
-- exhausted) or that was cancelled (a permanent failure such as a 4xx, or the
-- give_up_after deadline), joined to its event, unless the event has been
-- delivered since by another job.
--
-- River's partial index river_job_state_and_finalized_at_index (state,
-- finalized_at) serves the state filter and ordering by failed_at; the join
-- uses events' primary key.
CREATE VIEW dead_letters AS
SELECT
    e.id                                           AS event_id,
    e.route,
    e.key,
    e.received_at,
    outbox_payload(e.body)                         AS payload,
    j.id                                           AS job_id,
    j.state::text                                  AS state,
    j.attempt                                      AS attempts,
    j.max_attempts,
    (j.errors[array_upper(j.errors, 1)] ->> 'error')::text AS last_error,
    coalesce(to_jsonb(j.errors), '[]'::jsonb)::jsonb       AS errors,
    j.finalized_at                                 AS failed_at
FROM river_job j
JOIN events e ON e.id = (j.args ->> 'event_id')::bigint
WHERE j.kind = 'deliver'
  AND j.state IN ('discarded', 'cancelled')
  AND (e.delivered_at IS NULL OR e.delivered_at < j.finalized_at);

COMMENT ON VIEW dead_letters IS 'Webhooks webhook-outbox could not deliver: discarded or cancelled delivery jobs joined to their events.';
