-- River records a permanent failure (river.JobCancel) as
-- "JobCancelError: <what happened>", so a cancelled dead letter's last_error
-- began with River's type name instead of what happened, and queries such as
-- sql/examples/06 (last_error LIKE 'gave up:%') missed them. The view now
-- shows the attempt errors as webhook-outbox wrote them: last_error and
-- each entry of errors without that prefix. Only dead letters' rows are
-- rewritten, and only when read.
CREATE FUNCTION outbox_attempt_error(err text)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT regexp_replace(err, '^JobCancelError: ', '') $$;

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
    outbox_attempt_error(j.errors[array_upper(j.errors, 1)] ->> 'error') AS last_error,
    coalesce((SELECT jsonb_agg(CASE WHEN x.err ? 'error'
                                    THEN jsonb_set(x.err, '{error}', to_jsonb(outbox_attempt_error(x.err ->> 'error')))
                                    ELSE x.err END ORDER BY x.ord)
              FROM unnest(j.errors) WITH ORDINALITY AS x (err, ord)), '[]'::jsonb)::jsonb AS errors,
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

COMMENT ON VIEW dead_letters IS 'Webhooks webhook-outbox could not deliver: discarded or cancelled delivery jobs joined to their events.';
