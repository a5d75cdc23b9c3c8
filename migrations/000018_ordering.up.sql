-- Ordered delivery per key (a route's `ordering`): the events of one
-- ordering value ("key" below: a route and a value, such as a conversation
-- id) are delivered one at a time, in the order intake committed them.
--
-- The rule, kept by intake and by the triggers below: of a key's delivery
-- jobs, at most one is its head, and every other unfinished one waits in
-- River's `pending` state, which River never fetches. The head is the job
-- being delivered (available, running, retryable, scheduled) or, on a route
-- with `on_dead_letter: block`, the dead letter that stopped the key (flagged
-- `ordering_blocked` in its metadata). When the head finishes, whoever
-- finishes it (outbox's completer, River's completer, River UI, retention),
-- the next pending job of the key, lowest event id first, becomes
-- available in the same transaction.
--
-- Every transaction that changes a key's head takes the key's advisory lock
-- (class 20251213) first, and looks at the key only after it: intake (with
-- its dedupe locks, in one sorted statement), retries, replays, and the
-- triggers below. Several keys are always locked in one statement sorted by
-- (class, hash), so two transactions never wait on each other's locks.

-- The ordering value of an ordered route's event, for replays: its delivery
-- jobs carry it in args.ordering_key, but completed jobs are deleted after a
-- day and a replay must keep the key's order. NULL: unordered.
ALTER TABLE events ADD COLUMN ordering_key text;

-- The ordered routes as the running config has them: serve writes it at
-- start. The triggers read on_dead_letter when a head becomes a dead letter.
CREATE TABLE outbox_ordered_routes (
    route          text        PRIMARY KEY,
    on_dead_letter text        NOT NULL CHECK (on_dead_letter IN ('continue', 'block')),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The unfinished and dead delivery jobs of ordered routes, by key and event
-- id: which key is busy (intake's probe), and which pending job is next.
-- Partial, so completed jobs (nearly all of them) never enter it, and
-- unordered routes pay nothing.
CREATE INDEX river_job_ordering_idx ON river_job (queue, (args ->> 'ordering_key'), ((args ->> 'event_id')::bigint))
    WHERE kind = 'deliver' AND args ? 'ordering_key'
      AND state IN ('pending', 'available', 'running', 'retryable', 'scheduled', 'discarded', 'cancelled');

-- outbox_ordering_hash is a key's advisory lock, in class 20251213 (dedupe
-- locks are class 20251128). A collision only serialises two keys.
CREATE FUNCTION outbox_ordering_hash(queue text, ordering_key text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtext(queue || chr(31) || ordering_key) $$;

-- outbox_ordering_jobs_exist says whether a key has a head other than job
-- except_id (a job being delivered: available, running, retryable,
-- scheduled; or a dead letter that blocks the key), or, with pending,
-- events waiting. outbox_ordering_held and outbox_ordering_busy below are
-- its two uses.
--
-- It is PL/pgSQL with a forced generic plan, so that a session plans its
-- query once: planning a query over river_job (many indexes, partial ones
-- to prove) costs about 0.7 ms here, running it 30 us, and intake and the
-- triggers call it once per key. Its conditions are written so that the
-- plan is a scan of river_job_ordering_idx alone (an OR of states would add
-- a scan of every dead letter).
CREATE FUNCTION outbox_ordering_jobs_exist(queue text, ordering_key text, except_id bigint, pending boolean) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM river_job j
        WHERE j.queue = outbox_ordering_jobs_exist.queue AND j.args ->> 'ordering_key' = outbox_ordering_jobs_exist.ordering_key
          AND j.kind = 'deliver' AND j.args ? 'ordering_key'
          AND j.state IN ('pending', 'available', 'running', 'retryable', 'scheduled', 'discarded', 'cancelled')
          AND (j.state <> 'pending' OR outbox_ordering_jobs_exist.pending)
          AND (j.state NOT IN ('discarded', 'cancelled') OR j.metadata ? 'ordering_blocked')
          AND j.id <> except_id);
END;
$$;

-- outbox_ordering_held says whether a key has a head other than job
-- except_id.
CREATE FUNCTION outbox_ordering_held(queue text, ordering_key text, except_id bigint) RETURNS boolean
    LANGUAGE sql STABLE
AS $$ SELECT outbox_ordering_jobs_exist($1, $2, $3, false) $$;

-- outbox_ordering_busy says whether a new event of the key must wait: the
-- key has a head, or events already waiting.
CREATE FUNCTION outbox_ordering_busy(queue text, ordering_key text) RETURNS boolean
    LANGUAGE sql STABLE
AS $$ SELECT outbox_ordering_jobs_exist($1, $2, 0, true) $$;

-- outbox_ordering_promote makes the next pending job (lowest event id) of
-- each given key available, unless the key has a head, and returns how many
-- it promoted. It takes the keys' locks first, sorted, and looks after
-- them, so it sees any intake of the keys that committed meanwhile. River's
-- producers are told, as River tells them of an insert, so a promoted job is
-- fetched at once rather than at the next poll.
CREATE FUNCTION outbox_ordering_promote(queues text[], ordering_keys text[]) RETURNS integer
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    promoted_queues text[];
    promoted integer;
BEGIN
    PERFORM pg_advisory_xact_lock(20251213, s.h)
    FROM (SELECT DISTINCT outbox_ordering_hash(x.q, x.k) AS h
          FROM unnest(queues, ordering_keys) AS x (q, k)
          ORDER BY 1) AS s;
    -- The promotion below has checked its keys under their locks: the
    -- update trigger need not check them again (half the cost of a
    -- promotion, measured).
    PERFORM set_config('outbox.promoting', 'on', true);
    -- A new statement: its snapshot is taken after the locks.
    WITH next AS (
        SELECT (SELECT p.id FROM river_job p
                WHERE p.queue = x.q AND p.args ->> 'ordering_key' = x.k
                  AND p.kind = 'deliver' AND p.args ? 'ordering_key' AND p.state = 'pending'
                ORDER BY (p.args ->> 'event_id')::bigint, p.id
                LIMIT 1) AS id
        FROM (SELECT DISTINCT q, k FROM unnest(queues, ordering_keys) AS u (q, k)) AS x
        WHERE NOT outbox_ordering_held(x.q, x.k, 0)
    ), done AS (
        UPDATE river_job j
        SET state = 'available', scheduled_at = now()
        FROM next
        WHERE j.id = next.id AND j.state = 'pending'
        RETURNING j.queue
    )
    SELECT array_agg(DISTINCT queue), count(*) INTO promoted_queues, promoted FROM done;
    PERFORM set_config('outbox.promoting', '', true);
    IF promoted > 0 THEN
        -- River's insert notification (pinned by TestOrderingPromotionNotifiesLikeRiver).
        PERFORM pg_notify(current_schema() || '.river_insert', json_build_object('queue', q)::text)
        FROM unnest(promoted_queues) AS q;
    END IF;
    RETURN promoted;
END;
$$;

-- Before a job of an ordered route changes state:
--   * a head that becomes a dead letter on a route with on_dead_letter:
--     block is flagged ordering_blocked, and keeps holding its key;
--   * a job made deliverable again (a retried dead letter, River UI's
--     retry of a pending or completed job) while its key has another head
--     waits as pending instead, to go next. outbox_ordering_promote's own
--     promotions, checked already, are left alone.
CREATE FUNCTION outbox_ordering_before_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.state IN ('discarded', 'cancelled') THEN
        IF OLD.state <> 'pending'
           AND EXISTS (SELECT 1 FROM outbox_ordered_routes r WHERE r.route = NEW.queue AND r.on_dead_letter = 'block') THEN
            NEW.metadata := jsonb_set(NEW.metadata, '{ordering_blocked}', 'true');
        ELSE
            NEW.metadata := NEW.metadata - 'ordering_blocked';
        END IF;
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(20251213, outbox_ordering_hash(NEW.queue, NEW.args ->> 'ordering_key'));
    NEW.metadata := NEW.metadata - 'ordering_blocked';
    IF outbox_ordering_held(NEW.queue, NEW.args ->> 'ordering_key', NEW.id) THEN
        NEW.state := 'pending';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER outbox_ordering_before_update BEFORE UPDATE ON river_job
    FOR EACH ROW
    WHEN (NEW.kind = 'deliver' AND NEW.args ? 'ordering_key' AND NEW.state IS DISTINCT FROM OLD.state
          AND (NEW.state IN ('discarded', 'cancelled')
               OR (OLD.state IN ('pending', 'completed', 'discarded', 'cancelled')
                   AND NEW.state IN ('available', 'retryable', 'scheduled')
                   AND (OLD.state <> 'pending' OR current_setting('outbox.promoting', true) IS DISTINCT FROM 'on'))))
    EXECUTE FUNCTION outbox_ordering_before_update();

-- After any UPDATE of river_job: the keys whose head stopped holding them
-- (delivered; a dead letter on a continue route; a blocking dead letter
-- released or retried) get their next job. Statement-level, so that one
-- statement finishing many heads (a completer batch) locks their keys in
-- one sorted statement.
CREATE FUNCTION outbox_ordering_after_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    qs text[];
    ks text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.args ? 'ordering_key' AND n.kind = 'deliver') THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(k.queue), array_agg(k.ordering_key) INTO qs, ks
    FROM (SELECT DISTINCT n.queue, n.args ->> 'ordering_key' AS ordering_key
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
          WHERE n.kind = 'deliver' AND n.args ? 'ordering_key'
            AND ((o.state IN ('available', 'running', 'retryable', 'scheduled')
                  AND n.state IN ('completed', 'discarded', 'cancelled'))
                 OR (o.state IN ('discarded', 'cancelled') AND o.metadata ? 'ordering_blocked'
                     AND NOT (n.state IN ('discarded', 'cancelled') AND n.metadata ? 'ordering_blocked')))) AS k;
    IF qs IS NOT NULL THEN
        PERFORM outbox_ordering_promote(qs, ks);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_ordering_after_update AFTER UPDATE ON river_job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_ordering_after_update();

-- After any DELETE from river_job: a deleted head (River UI's delete of a
-- dead letter, dead_letter_retention) releases its key.
CREATE FUNCTION outbox_ordering_after_delete() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    qs text[];
    ks text[];
BEGIN
    SELECT array_agg(k.queue), array_agg(k.ordering_key) INTO qs, ks
    FROM (SELECT DISTINCT o.queue, o.args ->> 'ordering_key' AS ordering_key
          FROM old_rows o
          WHERE o.kind = 'deliver' AND o.args ? 'ordering_key'
            AND (o.state IN ('available', 'running', 'retryable', 'scheduled')
                 OR (o.state IN ('discarded', 'cancelled') AND o.metadata ? 'ordering_blocked'))) AS k;
    IF qs IS NOT NULL THEN
        PERFORM outbox_ordering_promote(qs, ks);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_ordering_after_delete AFTER DELETE ON river_job
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_ordering_after_delete();

-- ordering_blocked_keys lists the keys of ordered routes whose events wait
-- on a head that is not being delivered now, one row per key, by reason:
--   dead_letter  the head is a dead letter holding the key (on_dead_letter:
--                block): nothing of the key moves until an operator
--                retries, releases or deletes it;
--   retrying     events wait behind a head that waits out a backoff or a
--                snooze (Retry-After, the circuit breaker); it clears by
--                itself;
--   no_head      events wait and the key has no head: an anomaly, which the
--                periodic ordering check repairs.
-- A paused route holds all its keys without listing them here. Reading it
-- probes the pending jobs of each listed head, and the heads of keys with
-- pending jobs, through river_job_ordering_idx.
CREATE VIEW ordering_blocked_keys AS
SELECT h.queue                                                AS route,
       h.args ->> 'ordering_key'                              AS ordering_key,
       CASE WHEN h.state IN ('discarded', 'cancelled') THEN 'dead_letter' ELSE 'retrying' END AS reason,
       h.id                                                   AS head_job_id,
       (h.args ->> 'event_id')::bigint                        AS head_event_id,
       h.args ->> 'key'                                       AS head_key,
       h.state::text                                          AS head_state,
       h.attempt                                              AS head_attempt,
       h.max_attempts                                         AS head_max_attempts,
       h.errors[array_length(h.errors, 1)] ->> 'error'        AS head_last_error,
       h.attempted_at                                         AS head_attempted_at,
       CASE WHEN h.state IN ('retryable', 'scheduled') THEN h.scheduled_at END AS head_next_attempt_at,
       h.finalized_at                                         AS head_failed_at,
       w.waiting                                              AS waiting
FROM river_job h
CROSS JOIN LATERAL (
    SELECT count(*) AS waiting FROM river_job p
    WHERE p.queue = h.queue AND p.args ->> 'ordering_key' = h.args ->> 'ordering_key'
      AND p.kind = 'deliver' AND p.args ? 'ordering_key' AND p.state = 'pending') AS w
WHERE h.kind = 'deliver' AND h.args ? 'ordering_key'
  AND ((h.state IN ('discarded', 'cancelled') AND h.metadata ? 'ordering_blocked')
       OR (h.state IN ('retryable', 'scheduled') AND w.waiting > 0))
UNION ALL
SELECT g.queue, g.ordering_key, 'no_head',
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       g.waiting
FROM (SELECT p.queue, p.args ->> 'ordering_key' AS ordering_key, count(*) AS waiting
      FROM river_job p
      WHERE p.kind = 'deliver' AND p.args ? 'ordering_key' AND p.state = 'pending'
      GROUP BY 1, 2) AS g
-- As a sub-select, so that the head is looked up once per key, not once per
-- pending job (a plain condition would be pushed below the GROUP BY).
WHERE NOT EXISTS (SELECT WHERE outbox_ordering_held(g.queue, g.ordering_key, 0));
