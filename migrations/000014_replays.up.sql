-- outbox_replays remembers each replay and how far it got, so that running
-- the same replay again (the same command, an API call repeated after its
-- answer was cut off, or an explicit resume) continues after the last event
-- it handled instead of sending the window again. Replays of one id take
-- their row's lock for each batch, so two runs of the same replay at once
-- share the work and never handle an event twice.
CREATE TABLE outbox_replays (
    id                text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    route             text        NOT NULL,
    -- The window [since, until), fixed by the replay's first run; with a
    -- key, only that event of it (a single-event replay).
    since             timestamptz NOT NULL,
    until             timestamptz NOT NULL,
    key               text,
    -- The last event handled, in the (received_at, id) order replays walk.
    after_received_at timestamptz NOT NULL,
    after_id          bigint      NOT NULL DEFAULT 0,
    replayed          bigint      NOT NULL DEFAULT 0,
    revived           bigint      NOT NULL DEFAULT 0,
    skipped           bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);

COMMENT ON TABLE outbox_replays IS 'Replays of events and their progress; retention forgets them after event_retention.';
