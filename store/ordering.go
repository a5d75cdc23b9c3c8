package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// Ordered delivery per key. Migration 000018 holds the rule and the
// triggers that keep it; this file is what the Go side does: queue new jobs
// of a busy key as pending, record the ordered routes' on_dead_letter, list
// and release blocked keys, and the periodic safety net.

type orderingKey struct{ route, value string }

// sequenceJobs queues the jobs of ordered events that must wait as River
// pending jobs: those of a key that already has a head or waiting events,
// and, within jobs, all but the lowest event id of each key. The caller
// holds the keys' locks (LockOrderingKeys), so no other
// transaction changes the keys between this probe and its commit.
func sequenceJobs(ctx context.Context, q *dbsqlc.Queries, jobs []river.InsertManyParams) error {
	first := map[orderingKey]int{} // key -> index in jobs of its lowest event id
	var probe dbsqlc.BusyOrderingKeysParams
	for i, j := range jobs {
		args, ok := j.Args.(outbox.DeliverArgs)
		if !ok || args.OrderingKey == "" {
			continue
		}
		k := orderingKey{args.Route, args.OrderingKey}
		at, seen := first[k]
		if !seen {
			probe.Routes = append(probe.Routes, k.route)
			probe.OrderingKeys = append(probe.OrderingKeys, k.value)
		}
		if !seen || args.EventID < jobs[at].Args.(outbox.DeliverArgs).EventID {
			first[k] = i
		}
	}
	if len(first) == 0 {
		return nil
	}
	busy, err := q.BusyOrderingKeys(ctx, probe)
	if err != nil {
		return fmt.Errorf("error looking up ordering keys: %w", err)
	}
	isBusy := make(map[orderingKey]bool, len(busy))
	for _, b := range busy {
		isBusy[orderingKey{b.Route, b.OrderingKey}] = true
	}
	for i := range jobs {
		args, ok := jobs[i].Args.(outbox.DeliverArgs)
		if !ok || args.OrderingKey == "" {
			continue
		}
		k := orderingKey{args.Route, args.OrderingKey}
		if isBusy[k] || first[k] != i {
			opts := *jobs[i].InsertOpts
			opts.Pending = true
			jobs[i].InsertOpts = &opts
		}
	}
	return nil
}

// lockOrderingKeys takes the ordering locks of events' keys, sorted.
func lockOrderingKeys(ctx context.Context, q *dbsqlc.Queries, route string, values []string) error {
	params := dbsqlc.LockOrderingKeysParams{Routes: make([]string, len(values)), OrderingKeys: values}
	for i := range values {
		params.Routes[i] = route
	}
	if err := q.LockOrderingKeys(ctx, params); err != nil {
		return fmt.Errorf("error locking ordering keys: %w", err)
	}
	return nil
}

// OrderedRoute is a route with ordering, as the running config has it.
type OrderedRoute struct {
	Route string
	// OnDeadLetter is config.OnDeadLetterContinue or OnDeadLetterBlock.
	OnDeadLetter string
}

// SetOrderedRoutes records the ordered routes and their on_dead_letter, as
// the database's triggers read them when a key's head becomes a dead
// letter, and forgets routes no longer ordered. Keys held by a dead letter
// on a route that no longer blocks are then released (see CheckOrdering).
func (s *Store) SetOrderedRoutes(ctx context.Context, routes []OrderedRoute) error {
	params := dbsqlc.UpsertOrderedRoutesParams{Routes: []string{}, Modes: []string{}}
	for _, r := range routes {
		params.Routes = append(params.Routes, r.Route)
		params.Modes = append(params.Modes, r.OnDeadLetter)
	}
	if err := s.q.UpsertOrderedRoutes(ctx, params); err != nil {
		return fmt.Errorf("error recording ordered routes: %w", err)
	}
	return nil
}

// OrderingCheck says what one run of CheckOrdering repaired.
type OrderingCheck struct {
	// Released counts keys that were held by a dead letter on a route
	// that no longer blocks (its on_dead_letter changed to continue, or
	// ordering was removed), and now go on.
	Released int64
	// Stranded are keys found with events waiting and no head, which the
	// rule never leaves; their next event was promoted.
	Stranded []outbox.BlockedKey
	// Promoted counts the events promoted for them.
	Promoted int
}

// strandedBatch bounds the keys one check promotes.
const strandedBatch = 1000

// CheckOrdering is the ordering safety net, run periodically: it releases
// the keys held by dead letters on routes that no longer block (a dead
// letter flagged while the config was being switched), and promotes the
// next event of any key left with waiting events and no head. The second
// should never find anything: the triggers promote in the same transaction
// that finishes a head. Both take the keys' locks, sorted, before they look.
func (s *Store) CheckOrdering(ctx context.Context) (OrderingCheck, error) {
	var out OrderingCheck
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		if err := q.LockUnblockableKeys(ctx); err != nil {
			return fmt.Errorf("error locking ordering keys: %w", err)
		}
		n, err := q.ReleaseUnblockableKeys(ctx)
		if err != nil {
			return fmt.Errorf("error releasing ordering keys: %w", err)
		}
		out.Released = n
		return nil
	})
	if err != nil {
		return out, err
	}
	rows, err := s.q.StrandedOrderingKeys(ctx, strandedBatch)
	if err != nil {
		return out, fmt.Errorf("error looking for ordering keys without a head: %w", err)
	}
	if len(rows) == 0 {
		return out, nil
	}
	params := dbsqlc.PromoteOrderingKeysParams{}
	for _, r := range rows {
		params.Routes = append(params.Routes, r.Route)
		params.OrderingKeys = append(params.OrderingKeys, r.OrderingKey)
		out.Stranded = append(out.Stranded, outbox.BlockedKey{Route: r.Route, OrderingKey: r.OrderingKey, Reason: outbox.BlockedNoHead, Waiting: r.Waiting})
	}
	promoted, err := s.q.PromoteOrderingKeys(ctx, params)
	if err != nil {
		return out, fmt.Errorf("error promoting ordering keys without a head: %w", err)
	}
	out.Promoted = int(promoted)
	return out, nil
}

// BlockedKeys returns up to limit blocked keys of route (of one reason, if
// reason is set), in ordering value order after the value after ("" for the
// first page), and the value to pass for the next page ("" on the last).
func (s *Store) BlockedKeys(ctx context.Context, route string, reason outbox.BlockReason, after string, limit int) ([]outbox.BlockedKey, string, error) {
	params := dbsqlc.ListBlockedKeysParams{Route: route, AfterOrderingKey: after, MaxRows: int32(limit + 1)}
	if reason != "" {
		params.Reason = new(string(reason))
	}
	rows, err := s.q.ListBlockedKeys(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("error listing blocked keys: %w", err)
	}
	out := make([]outbox.BlockedKey, 0, min(len(rows), limit))
	for i, r := range rows {
		if i == limit {
			break
		}
		out = append(out, blockedKeyFrom(r))
	}
	next := ""
	if len(rows) > limit {
		next = out[len(out)-1].OrderingKey
	}
	return out, next, nil
}

func blockedKeyFrom(r dbsqlc.OrderingBlockedKey) outbox.BlockedKey {
	k := outbox.BlockedKey{Route: r.Route, OrderingKey: r.OrderingKey, Reason: outbox.BlockReason(r.Reason), Waiting: r.Waiting}
	if r.HeadJobID == nil {
		return k
	}
	k.Head = &outbox.KeyHead{
		JobID: *r.HeadJobID, EventID: deref(r.HeadEventID), Key: deref(r.HeadKey), State: deref(r.HeadState),
		Attempt: int(deref(r.HeadAttempt)), MaxAttempts: int(deref(r.HeadMaxAttempts)), LastError: attemptError(deref(r.HeadLastError)),
		AttemptedAt: r.HeadAttemptedAt, NextAttemptAt: r.HeadNextAttemptAt, FailedAt: r.HeadFailedAt,
	}
	return k
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// ReleaseBlockedKeys lets the given keys of route, held by a dead letter,
// go on: each dead letter stops holding its key and stays a dead letter
// (retry it later if need be), and the key's next event is delivered. It
// returns the keys it released, sorted; a key not held by a dead letter is
// left alone.
func (s *Store) ReleaseBlockedKeys(ctx context.Context, route string, keys []string) ([]string, error) {
	var released []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		if err := q.LockBlockedKeys(ctx, dbsqlc.LockBlockedKeysParams{Route: route, OrderingKeys: keys}); err != nil {
			return fmt.Errorf("error locking ordering keys: %w", err)
		}
		var err error
		released, err = q.ReleaseBlockedKeys(ctx, dbsqlc.ReleaseBlockedKeysParams{Route: route, OrderingKeys: keys})
		if err != nil {
			return fmt.Errorf("error releasing ordering keys: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(released)
	return slices.Compact(released), nil
}

// blockedKeyCounts reads the blocked keys per route and reason.
func blockedKeyCounts(ctx context.Context, q *dbsqlc.Queries) (map[string]outbox.BlockedKeyCounts, error) {
	rows, err := q.BlockedKeyCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("error counting blocked ordering keys: %w", err)
	}
	out := map[string]outbox.BlockedKeyCounts{}
	for _, r := range rows {
		c := out[r.Route]
		switch outbox.BlockReason(r.Reason) {
		case outbox.BlockedByDeadLetter:
			c.DeadLetter += r.Keys
		case outbox.BlockedByRetry:
			c.Retrying += r.Keys
		default:
			c.NoHead += r.Keys
		}
		out[r.Route] = c
	}
	return out, nil
}
