-- Fleet-wide target protection (issue 12). Postgres is the only state the
-- replicas share, so a route's `concurrency`, `rate_limit` and circuit
-- breaker hold for the whole fleet through these two tables.
--
-- Both are UNLOGGED: they are soft state that every replica rewrites within
-- seconds, so they cost no WAL and no fsync. A Postgres crash (or a failover
-- to a standby) empties them; replicas then take their shares again on their
-- next renewal, and every circuit starts closed.

-- fleet_leases holds each replica's share of a route's `concurrency` (slots)
-- and `rate_limit` (rate). A replica sends at most `granted` requests at
-- once (the function's answer) and holds `slots` = the larger of that and
-- what it still has in flight, so the sum of slots over a route never
-- passes its concurrency. A row lives until expires_at: a replica renews
-- it every few seconds while it has work, and a killed replica's share
-- returns to the others once its row expires.
CREATE UNLOGGED TABLE fleet_leases (
    route      text             NOT NULL,
    holder     text             NOT NULL,
    slots      integer          NOT NULL,
    want       integer          NOT NULL,
    rate       double precision NOT NULL,
    inflight   integer          NOT NULL,
    renewed_at timestamptz      NOT NULL DEFAULT now(),
    expires_at timestamptz      NOT NULL,
    PRIMARY KEY (route, holder)
);

-- outbox_fleet_lease renews one replica's lease on a route, in one round
-- trip, and returns how many requests it may now have in flight (granted),
-- its share of the rate limit in requests per second (rate), and how many
-- replicas share the route (holders).
--
-- Shares are max-min fair over what each replica wants (its adaptive
-- limit, or the concurrency when fixed): a replica wanting less than an
-- even split gets what it wants, the rest split the remainder evenly, and
-- when the split does not come out even the first holders by name get one
-- more. A replica never takes more than the others leave free: when a
-- newcomer's fair share is held by others, it gets what is free now and the
-- rest once they renew (every few seconds) and shrink to their own share.
-- The rate limit is split evenly between the replicas that want any slots,
-- under the same rule.
--
-- Renewals of one route are serialised with a transaction-scoped advisory
-- lock (class 20261201, apart from intake's key locks, class 20251128).
-- A replica that wants nothing and has nothing in flight drops its row.
CREATE FUNCTION outbox_fleet_lease(p_route text, p_holder text, p_want integer, p_inflight integer,
                                   p_ceiling integer, p_rate_limit double precision, p_ttl interval)
    RETURNS TABLE (granted integer, rate double precision, holders integer)
    LANGUAGE plpgsql
AS $$
DECLARE
    current_slots integer;
    others_slots  integer;
    others_rate   double precision;
    remaining     integer := p_ceiling;
    unsatisfied   integer;
    level         integer;
    extra         integer;
    my_rank       integer;
    share         integer;
    n_active      integer;
    my_rate       double precision := 0;
    rec           record;
BEGIN
    PERFORM pg_advisory_xact_lock(20261201, hashtext(p_route));
    DELETE FROM fleet_leases WHERE route = p_route AND expires_at <= now();
    SELECT l.slots INTO current_slots FROM fleet_leases l WHERE l.route = p_route AND l.holder = p_holder;
    IF p_want <= 0 AND p_inflight <= 0 THEN
        DELETE FROM fleet_leases WHERE route = p_route AND holder = p_holder;
        RETURN QUERY SELECT 0, 0::double precision, (SELECT count(*)::integer FROM fleet_leases l WHERE l.route = p_route);
        RETURN;
    END IF;
    SELECT coalesce(sum(l.slots), 0), coalesce(sum(l.rate), 0) INTO others_slots, others_rate
    FROM fleet_leases l WHERE l.route = p_route AND l.holder <> p_holder;

    SELECT count(*)::integer + CASE WHEN p_want > 0 THEN 1 ELSE 0 END INTO n_active
    FROM fleet_leases l WHERE l.route = p_route AND l.holder <> p_holder AND l.want > 0;
    share := 0;
    IF p_want > 0 THEN
        -- Max-min fair share: meet the small wants in full, in increasing
        -- order, while each fits an even split of what remains; the rest
        -- split what is left evenly, the first by name getting one more
        -- when it does not divide.
        unsatisfied := n_active;
        FOR rec IN
            SELECT w.holder, w.want FROM (
                SELECT l.holder, l.want FROM fleet_leases l WHERE l.route = p_route AND l.holder <> p_holder AND l.want > 0
                UNION ALL
                SELECT p_holder, p_want
            ) AS w ORDER BY w.want, w.holder
        LOOP
            EXIT WHEN rec.want * unsatisfied > remaining;
            IF rec.holder = p_holder THEN
                share := rec.want;
            END IF;
            remaining := remaining - rec.want;
            unsatisfied := unsatisfied - 1;
        END LOOP;
        IF share = 0 THEN
            level := remaining / unsatisfied;
            extra := remaining % unsatisfied;
            SELECT count(*)::integer INTO my_rank FROM fleet_leases l
            WHERE l.route = p_route AND l.holder <> p_holder AND l.want > level AND l.holder < p_holder;
            share := least(level + CASE WHEN my_rank < extra THEN 1 ELSE 0 END, p_want);
        END IF;
        my_rate := least(p_rate_limit / n_active, greatest(p_rate_limit - others_rate, 0));
    END IF;
    share := greatest(least(share, p_ceiling - others_slots), 0);

    INSERT INTO fleet_leases AS l (route, holder, slots, want, rate, inflight, renewed_at, expires_at)
    VALUES (p_route, p_holder, greatest(share, least(p_inflight, coalesce(current_slots, 0))), greatest(p_want, 0),
            my_rate, p_inflight, now(), now() + p_ttl)
    ON CONFLICT (route, holder) DO UPDATE
        SET slots = excluded.slots, want = excluded.want, rate = excluded.rate, inflight = excluded.inflight,
            renewed_at = excluded.renewed_at, expires_at = excluded.expires_at;
    RETURN QUERY SELECT share, my_rate, n_active;
END;
$$;

-- route_circuits is each route's circuit breaker, one for the fleet. While
-- closed, replicas count retryable failures in a row here; at the route's
-- circuit_breaker.failures it opens for cooldown_ms, and then exactly one
-- replica (probe_holder) may send a probe until probe_until; its outcome
-- closes the circuit or opens it again for twice as long, up to
-- max_cooldown. `outbox routes list` reads it.
CREATE UNLOGGED TABLE route_circuits (
    route                text        PRIMARY KEY,
    state                text        NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half-open')),
    since                timestamptz NOT NULL DEFAULT now(),
    consecutive_failures integer     NOT NULL DEFAULT 0,
    cooldown_ms          bigint      NOT NULL DEFAULT 0,
    open_until           timestamptz,
    probe_holder         text,
    probe_until          timestamptz,
    opened               bigint      NOT NULL DEFAULT 0,
    last_error           text        NOT NULL DEFAULT '',
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- outbox_circuit_failure records a retryable failure of a route's target
-- while its circuit is closed: one more in a row, and at p_threshold the
-- circuit opens for p_cooldown_ms. A failure reported while the circuit is
-- open or half-open came from a request sent before it opened; it changes
-- nothing, and no row comes back. The row is created on first use (the
-- table is emptied by a Postgres crash).
CREATE FUNCTION outbox_circuit_failure(p_route text, p_threshold integer, p_cooldown_ms bigint, p_message text)
    RETURNS SETOF route_circuits
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO route_circuits (route) VALUES (p_route) ON CONFLICT (route) DO NOTHING;
    RETURN QUERY
    UPDATE route_circuits AS c
    SET consecutive_failures = c.consecutive_failures + 1,
        state       = CASE WHEN c.consecutive_failures + 1 >= p_threshold THEN 'open' ELSE 'closed' END,
        since       = CASE WHEN c.consecutive_failures + 1 >= p_threshold THEN now() ELSE c.since END,
        cooldown_ms = CASE WHEN c.consecutive_failures + 1 >= p_threshold THEN p_cooldown_ms ELSE c.cooldown_ms END,
        open_until  = CASE WHEN c.consecutive_failures + 1 >= p_threshold
                           THEN now() + p_cooldown_ms * interval '1 millisecond' ELSE c.open_until END,
        opened      = c.opened + CASE WHEN c.consecutive_failures + 1 >= p_threshold THEN 1 ELSE 0 END,
        last_error  = CASE WHEN c.consecutive_failures + 1 >= p_threshold THEN p_message ELSE c.last_error END,
        updated_at  = now()
    WHERE c.route = p_route AND c.state = 'closed'
    RETURNING c.*;
END;
$$;
