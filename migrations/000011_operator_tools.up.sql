-- Replay selects events by route and time window (outbox replay, POST
-- /admin/v1/events/replay), in keyset order (received_at, id).
CREATE INDEX events_route_received_at_idx ON events (route, received_at, id);

-- An event's delivery jobs: what `GET /admin/v1/events/{route}/{key}`
-- shows, and how replay finds an event's active or dead job. River's own
-- indexes do not cover args.
CREATE INDEX river_job_deliver_event_id_idx ON river_job (((args ->> 'event_id')::bigint)) WHERE kind = 'deliver';

-- Dead letters per route in job id order: the keyset that bulk retries walk
-- in batches. Partial, so it costs nothing for the jobs that succeed.
CREATE INDEX river_job_dead_letter_idx ON river_job (queue, id) WHERE kind = 'deliver' AND state IN ('discarded', 'cancelled');

-- The pause state of routes, kept by webhook-outbox. River keeps its own in
-- river_queue.paused_at, but River's queue cleaner deletes queue rows idle for
-- 24 hours, and a pause with them; this table lets serve put it back.
CREATE TABLE route_pauses (
    route     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
