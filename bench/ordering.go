package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// The ordering phase compares two routes that differ only in ordering:
// bench-plain, and bench-ordered with ordering by conversation id. Both
// get the same Genesys-like payloads, spread over -ordering-keys
// conversations.
const (
	plainRoute   = "bench-plain"
	orderedRoute = "bench-ordered"
)

// orderingRoutes is the YAML of the two routes, for the bench's config.
func orderingRoutes(sink string, concurrency int) string {
	route := `  - name: %s
    auth: {header: {name: X-Webhook-Token, value: bench-token}}
    idempotency_key: [{json: /id}]
    target: {url: "http://%s/sink", timeout: 10s}
    retry: {max_attempts: 5, initial_backoff: 1s}
    concurrency: %d
`
	return fmt.Sprintf(route, plainRoute, sink, concurrency) +
		fmt.Sprintf(route, orderedRoute, sink, concurrency) +
		"    ordering: {key: [{json: /conversationId}, {json: /detail/eventBody/conversationId}]}\n"
}

// OrderingResult is what the ordering phase measured: intake and delivery
// of an ordered route with many active keys, against the same route
// unordered.
type OrderingResult struct {
	Keys int `json:"keys"`
	// Intake, closed loop with deliveries paused, so that only intake's
	// cost is compared (the ordered route adds a lock and a probe per key).
	IntakePlain   Phase   `json:"intake_unordered"`
	IntakeOrdered Phase   `json:"intake_ordered"`
	IntakeFactor  float64 `json:"intake_factor"`
	// Drain of DrainEvents queued events spread evenly over Keys keys.
	DrainEvents         int     `json:"drain_events"`
	DrainPlainSeconds   float64 `json:"drain_unordered_seconds"`
	DrainOrderedSeconds float64 `json:"drain_ordered_seconds"`
	DrainPlainPerSec    float64 `json:"drain_unordered_per_sec"`
	DrainOrderedPerSec  float64 `json:"drain_ordered_per_sec"`
	// DrainFactor is how many times longer the ordered drain took.
	DrainFactor float64 `json:"drain_factor"`
	// The unordered drain again, with the ordering triggers on river_job
	// disabled: what the triggers cost routes without ordering.
	DrainPlainNoTriggersSeconds float64 `json:"drain_unordered_without_triggers_seconds"`
	DrainPlainNoTriggersPerSec  float64 `json:"drain_unordered_without_triggers_per_sec"`
}

// orderingTriggers are migration 000018's triggers on river_job.
var orderingTriggers = []string{"outbox_ordering_before_update", "outbox_ordering_after_update", "outbox_ordering_after_delete"}

// setOrderingTriggers enables or disables them, for the measurement of
// their cost on an unordered route (nothing ordered may run meanwhile).
func setOrderingTriggers(ctx context.Context, dbURL string, enabled bool) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	verb := "DISABLE"
	if enabled {
		verb = "ENABLE"
	}
	for _, name := range orderingTriggers {
		if _, err := conn.Exec(ctx, "ALTER TABLE river_job "+verb+" TRIGGER "+name); err != nil {
			return err
		}
	}
	return nil
}

// orderingPhase measures the ordered route against the unordered one.
// Intake alternates the two routes, twice each, so that a machine getting
// busier or quieter during the phase weighs on both alike.
func orderingPhase(ctx context.Context, o options, base, token, dbURL string, sink *sink, root string) (*OrderingResult, error) {
	res := &OrderingResult{Keys: o.orderingKeys, DrainEvents: o.orderingEvents}
	plain := newGenerator(root, base, o).forRoute(plainRoute, o.orderingKeys)
	ordered := newGenerator(root, base, o).forRoute(orderedRoute, o.orderingKeys)
	for _, route := range []string{plainRoute, orderedRoute} {
		if err := admin(ctx, base, token, "/admin/v1/routes/"+route+"/pause"); err != nil {
			return nil, err
		}
	}
	logf("ordering: intake, deliveries paused, %d keys: %s and %s alternately, %s each in two halves", o.orderingKeys, plainRoute, orderedRoute, o.duration)
	half := o.duration / 2
	var plainPhases, orderedPhases []Phase
	for range 2 {
		plainPhases = append(plainPhases, plain.closedLoop(ctx, o.clients, half))
		orderedPhases = append(orderedPhases, ordered.closedLoop(ctx, o.clients, half))
	}
	res.IntakePlain = mergePhases(plainPhases, plainRoute+", deliveries paused")
	res.IntakeOrdered = mergePhases(orderedPhases, fmt.Sprintf("%s (%d keys), deliveries paused", orderedRoute, o.orderingKeys))
	res.IntakeFactor = res.IntakePlain.AcceptedPS / res.IntakeOrdered.AcceptedPS
	for _, route := range []string{plainRoute, orderedRoute} {
		if err := admin(ctx, base, token, "/admin/v1/routes/"+route+"/resume"); err != nil {
			return nil, err
		}
	}
	if err := waitDrained(ctx, dbURL, 10*time.Minute); err != nil {
		return nil, err
	}

	drain := func(g *generator, route string) (float64, error) {
		logf("ordering: drain of %d events over %d keys on %s", o.orderingEvents, o.orderingKeys, route)
		if err := admin(ctx, base, token, "/admin/v1/routes/"+route+"/pause"); err != nil {
			return 0, err
		}
		g.fill(ctx, o.clients, o.orderingEvents)
		before := sink.count.Load()
		t0 := time.Now()
		if err := admin(ctx, base, token, "/admin/v1/routes/"+route+"/resume"); err != nil {
			return 0, err
		}
		if err := waitDrained(ctx, dbURL, 20*time.Minute); err != nil {
			return 0, err
		}
		secs := time.Since(t0).Seconds()
		if n := sink.count.Load() - before; n < int64(o.orderingEvents) {
			return 0, fmt.Errorf("%s: %d of %d events delivered", route, n, o.orderingEvents)
		}
		return secs, nil
	}
	var err error
	if res.DrainPlainSeconds, err = drain(plain, plainRoute); err != nil {
		return nil, err
	}
	if res.DrainOrderedSeconds, err = drain(ordered, orderedRoute); err != nil {
		return nil, err
	}
	logf("ordering: the unordered drain again, with the ordering triggers disabled")
	if err := setOrderingTriggers(ctx, dbURL, false); err != nil {
		return nil, err
	}
	res.DrainPlainNoTriggersSeconds, err = drain(plain, plainRoute)
	if terr := setOrderingTriggers(context.WithoutCancel(ctx), dbURL, true); err == nil {
		err = terr
	}
	if err != nil {
		return nil, err
	}
	res.DrainPlainPerSec = float64(o.orderingEvents) / res.DrainPlainSeconds
	res.DrainOrderedPerSec = float64(o.orderingEvents) / res.DrainOrderedSeconds
	res.DrainPlainNoTriggersPerSec = float64(o.orderingEvents) / res.DrainPlainNoTriggersSeconds
	res.DrainFactor = res.DrainOrderedSeconds / res.DrainPlainSeconds
	return res, nil
}

// mergePhases sums phases of one kind into one: rates are added up over
// the time they ran, and the latency percentiles are the worst of them.
func mergePhases(ps []Phase, target string) Phase {
	out := Phase{Target: target, ByStatus: map[string]int{}}
	var secs float64
	for _, p := range ps {
		out.Sent += p.Sent
		out.TransportEr += p.TransportEr
		for k, v := range p.ByStatus {
			out.ByStatus[k] += v
		}
		out.P50ms, out.P99ms, out.P999ms = max(out.P50ms, p.P50ms), max(out.P99ms, p.P99ms), max(out.P999ms, p.P999ms)
		secs += p.elapsed.Seconds()
	}
	out.AcceptedPS = float64(out.ByStatus["200"]) / secs
	return out
}

// forRoute points g at route, with payloads whose conversation id is one
// of conversations, taken round-robin from the key's number.
func (g *generator) forRoute(route string, conversations int) *generator {
	g.url = g.url[:strings.LastIndex(g.url, "/")+1] + route
	g.conversations = conversations
	return g
}

// genesysConversation is the conversation id in the testdata payloads.
const genesysConversation = "3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59"

// withConversation puts key's conversation into a payload, for a
// generator with conversations.
func (g *generator) withConversation(body []byte, key string) []byte {
	if g.conversations <= 0 {
		return body
	}
	n, _ := strconv.Atoi(key[strings.LastIndexByte(key, '-')+1:])
	conv := fmt.Sprintf("conv-%031d", n%g.conversations) // as long as a UUID
	return []byte(strings.ReplaceAll(string(body), genesysConversation, conv))
}

func printOrdering(w io.Writer, r *OrderingResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ordering, %d keys\t\n", r.Keys)
	for _, p := range []*Phase{&r.IntakePlain, &r.IntakeOrdered} {
		fmt.Fprintf(tw, "  intake %s\t%.0f accepted/s (p50 %.2f ms, p99 %.2f ms; %s)\n", p.Target, p.AcceptedPS, p.P50ms, p.P99ms, statuses(p))
	}
	fmt.Fprintf(tw, "  intake factor, unordered ÷ ordered\t%.2f×\n", r.IntakeFactor)
	fmt.Fprintf(tw, "  drain of %d events, unordered\t%.1f s (%.0f deliveries/s)\n", r.DrainEvents, r.DrainPlainSeconds, r.DrainPlainPerSec)
	fmt.Fprintf(tw, "  drain of %d events over %d keys, ordered\t%.1f s (%.0f deliveries/s)\n", r.DrainEvents, r.Keys, r.DrainOrderedSeconds, r.DrainOrderedPerSec)
	fmt.Fprintf(tw, "  delivery factor, ordered ÷ unordered time\t%.2f×\n", r.DrainFactor)
	fmt.Fprintf(tw, "  drain of %d events, unordered, ordering triggers disabled\t%.1f s (%.0f deliveries/s)\n", r.DrainEvents, r.DrainPlainNoTriggersSeconds, r.DrainPlainNoTriggersPerSec)
	_ = tw.Flush()
}
