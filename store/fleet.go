package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// This file is the Postgres side of fleet-wide target protection (issue
// 12): leases on each route's concurrency and rate limit, and one circuit
// breaker per route for all replicas. Both tables are soft state (see
// migration 000017); no call here runs once per delivery.

// NewHolderID returns a name for this process in fleet_leases and
// route_circuits: the host, the process id and a random suffix, so that a
// restarted replica never inherits the leases of the process it replaced.
func NewHolderID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "replica"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// LeaseRequest is one replica's renewal of its lease on a route.
type LeaseRequest struct {
	Route, Holder string
	// Want is how many requests the replica would have in flight: its
	// adaptive limit (or the route's concurrency when fixed) while it has
	// work, 0 when it has none. Shares are fair over what replicas want.
	Want int
	// InFlight is how many requests the replica has in flight now. They
	// stay counted against the route until they finish, whatever the new
	// grant.
	InFlight int
	// Ceiling is the route's concurrency; RateLimit its rate_limit (0 for
	// none).
	Ceiling   int
	RateLimit float64
	// TTL is how long the lease lasts without another renewal: how long a
	// killed replica's share stays taken.
	TTL time.Duration
}

// LeaseGrant is a replica's share of a route after a renewal.
type LeaseGrant struct {
	// Slots is how many requests the replica may have in flight to the
	// route's target until its next renewal.
	Slots int
	// Rate is its share of the route's rate_limit, in requests per second
	// (0 when the route has none, or the others hold it all for now).
	Rate float64
	// Holders is how many replicas share the route now.
	Holders int
}

// RenewFleetLease renews a replica's lease on a route in one statement, and
// returns its share. The sum of the replicas' shares never passes the
// route's concurrency or rate_limit. A request with nothing wanted and
// nothing in flight gives the lease up.
func (s *Store) RenewFleetLease(ctx context.Context, r LeaseRequest) (LeaseGrant, error) {
	row, err := s.q.RenewFleetLease(ctx, dbsqlc.RenewFleetLeaseParams{
		Route: r.Route, Holder: r.Holder, Want: int32(max(r.Want, 0)), Inflight: int32(max(r.InFlight, 0)),
		Ceiling: int32(r.Ceiling), RateLimit: r.RateLimit, TtlSecs: r.TTL.Seconds(),
	})
	if err != nil {
		return LeaseGrant{}, fmt.Errorf("error renewing the fleet lease on route %s: %w", r.Route, err)
	}
	return LeaseGrant{Slots: int(row.Granted), Rate: row.Rate, Holders: int(row.Holders)}, nil
}

// ReleaseFleetLeases gives up every lease of holder, at shutdown, so that
// the other replicas need not wait for them to expire.
func (s *Store) ReleaseFleetLeases(ctx context.Context, holder string) error {
	if err := s.q.ReleaseFleetLeases(ctx, holder); err != nil {
		return fmt.Errorf("error releasing the fleet leases of %s: %w", holder, err)
	}
	return nil
}

// FleetLease is one replica's current share of a route, for operators.
type FleetLease struct {
	Route, Holder string
	// Slots is what the replica holds: its grant, or more while requests
	// sent under an earlier, larger grant finish.
	Slots, Want, InFlight int
	Rate                  float64
	RenewedAt, ExpiresAt  time.Time
}

// FleetLeases lists the live leases of every route.
func (s *Store) FleetLeases(ctx context.Context) ([]FleetLease, error) {
	rows, err := s.q.ListFleetLeases(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading fleet leases: %w", err)
	}
	out := make([]FleetLease, len(rows))
	for i, r := range rows {
		out[i] = FleetLease{
			Route: r.Route, Holder: r.Holder, Slots: int(r.Slots), Want: int(r.Want), InFlight: int(r.Inflight),
			Rate: r.Rate, RenewedAt: r.RenewedAt, ExpiresAt: r.ExpiresAt,
		}
	}
	return out, nil
}

// Circuit is a route's fleet-wide circuit breaker.
type Circuit struct {
	Route string
	// State is closed, open or half-open.
	State outbox.CircuitState
	// Since is when the circuit entered State.
	Since time.Time
	// ConsecutiveFailures is the fleet's current run of retryable failures.
	ConsecutiveFailures int
	// Cooldown is how long the circuit stays (or last stayed) open.
	Cooldown time.Duration
	// OpenUntil is when a probe may be sent; zero unless open.
	OpenUntil time.Time
	// ProbeHolder is the replica sending the probe, while half-open.
	ProbeHolder string
	// ProbeUntil is when another replica may take the probe over.
	ProbeUntil time.Time
	// Opened counts the openings, re-openings after failed probes included.
	Opened int64
	// LastError is the failure that last opened the circuit.
	LastError string
	// UpdatedAt is the last change.
	UpdatedAt time.Time
}

// BreakerSettings are a route's circuit_breaker settings.
type BreakerSettings struct {
	Failures              int
	Cooldown, MaxCooldown time.Duration
}

func circuitFromRow(r dbsqlc.RouteCircuit) Circuit {
	c := Circuit{
		Route: r.Route, State: outbox.CircuitState(r.State), Since: r.Since, ConsecutiveFailures: int(r.ConsecutiveFailures),
		Cooldown: time.Duration(r.CooldownMs) * time.Millisecond, Opened: r.Opened, LastError: r.LastError,
		UpdatedAt: r.UpdatedAt,
	}
	if r.OpenUntil != nil && r.State == string(outbox.CircuitOpen) {
		c.OpenUntil = *r.OpenUntil
	}
	if r.ProbeHolder != nil {
		c.ProbeHolder = *r.ProbeHolder
	}
	if r.ProbeUntil != nil {
		c.ProbeUntil = *r.ProbeUntil
	}
	return c
}

// Circuits returns every route's circuit that has a row, by route. A route
// without one is closed with no failures.
func (s *Store) Circuits(ctx context.Context) (map[string]Circuit, error) {
	rows, err := s.q.ListCircuits(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading circuit breakers: %w", err)
	}
	out := make(map[string]Circuit, len(rows))
	for _, r := range rows {
		out[r.Route] = circuitFromRow(r)
	}
	return out, nil
}

// RecordCircuitFailure counts a retryable failure of route's target while
// its circuit is closed, and opens the circuit at the threshold. It
// reports false when the circuit was not closed: the failure came from a
// request sent before it opened, and changes nothing.
func (s *Store) RecordCircuitFailure(ctx context.Context, route string, b BreakerSettings, message string) (Circuit, bool, error) {
	row, err := s.q.RecordCircuitFailure(ctx, dbsqlc.RecordCircuitFailureParams{
		Route: route, Threshold: int32(max(b.Failures, 1)), CooldownMs: b.Cooldown.Milliseconds(), Message: message,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Circuit{}, false, nil
	}
	if err != nil {
		return Circuit{}, false, fmt.Errorf("error recording a failure on the circuit of route %s: %w", route, err)
	}
	return circuitFromRow(row), true, nil
}

// RecordCircuitSuccess ends the fleet's run of failures on route, if any.
func (s *Store) RecordCircuitSuccess(ctx context.Context, route string) error {
	if err := s.q.RecordCircuitSuccess(ctx, route); err != nil {
		return fmt.Errorf("error recording a success on the circuit of route %s: %w", route, err)
	}
	return nil
}

// TryCircuitProbe takes the route's probe for holder, once the cooldown is
// over or the previous prober let its ttl pass. Of the replicas that try
// at once, exactly one gets true; it must settle the probe with
// CircuitProbeDone or ReleaseCircuitProbe.
func (s *Store) TryCircuitProbe(ctx context.Context, route, holder string, ttl time.Duration) (Circuit, bool, error) {
	row, err := s.q.TryCircuitProbe(ctx, dbsqlc.TryCircuitProbeParams{Route: route, Holder: holder, ProbeTtlSecs: ttl.Seconds()})
	if errors.Is(err, pgx.ErrNoRows) {
		return Circuit{}, false, nil
	}
	if err != nil {
		return Circuit{}, false, fmt.Errorf("error taking the probe of route %s: %w", route, err)
	}
	return circuitFromRow(row), true, nil
}

// CircuitProbeDone settles holder's probe: ok closes the circuit for the
// fleet; a failure opens it again for twice the last cooldown, at most
// MaxCooldown. It reports false when holder no longer held the probe
// (it expired and another replica took it).
func (s *Store) CircuitProbeDone(ctx context.Context, route, holder string, ok bool, b BreakerSettings, message string) (Circuit, bool, error) {
	var row dbsqlc.RouteCircuit
	var err error
	if ok {
		row, err = s.q.CloseCircuit(ctx, dbsqlc.CloseCircuitParams{Route: route, Holder: holder})
	} else {
		row, err = s.q.ReopenCircuit(ctx, dbsqlc.ReopenCircuitParams{
			Route: route, Holder: holder, BaseMs: b.Cooldown.Milliseconds(),
			MaxMs: max(b.MaxCooldown, b.Cooldown).Milliseconds(), Message: message,
		})
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return Circuit{}, false, nil
	}
	if err != nil {
		return Circuit{}, false, fmt.Errorf("error settling the probe of route %s: %w", route, err)
	}
	return circuitFromRow(row), true, nil
}

// ReleaseCircuitProbe gives back a probe that was not sent, so another
// replica may send one at once.
func (s *Store) ReleaseCircuitProbe(ctx context.Context, route, holder string) error {
	if err := s.q.ReleaseCircuitProbe(ctx, dbsqlc.ReleaseCircuitProbeParams{Route: route, Holder: holder}); err != nil {
		return fmt.Errorf("error releasing the probe of route %s: %w", route, err)
	}
	return nil
}
