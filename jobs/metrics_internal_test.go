package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// outcomeOf must agree with what River's job executor does with the same
// result, or the dashboards count retries that were discards.
func TestOutcomeFollowsRiver(t *testing.T) {
	t.Parallel()
	live := context.Background()
	stopped, stop := context.WithCancelCause(context.Background())
	stop(errors.New("client stopping"))
	remote, cancelRemote := context.WithCancelCause(context.Background())
	cancelRemote(rivertype.ErrJobCancelledRemotely)

	failed := errors.New("target answered 500 Internal Server Error after 3ms")
	for _, c := range []struct {
		name          string
		ctx           context.Context
		err           error
		attempt, most int
		want          string
	}{
		{"success", live, nil, 1, 3, OutcomeDelivered},
		{"failure with attempts left", live, failed, 1, 3, OutcomeRetry},
		{"failure on the last attempt", live, failed, 3, 3, OutcomeDiscarded},
		{"snooze on the last attempt", live, river.JobSnooze(time.Second), 3, 3, OutcomeSnoozed},
		{"cancel with attempts left", live, river.JobCancel(failed), 1, 3, OutcomeCancelled},
		{"cut short by shutdown", stopped, fmt.Errorf("request failed: %w", context.Canceled), 3, 3, OutcomeInterrupted},
		{"cancelled through the API while running", remote, context.Canceled, 1, 3, OutcomeCancelled},
		// River only spares an attempt when the error says "cancelled".
		{"failure during shutdown", stopped, failed, 1, 3, OutcomeRetry},
	} {
		job := &rivertype.JobRow{Attempt: c.attempt, MaxAttempts: c.most}
		if got := outcomeOf(c.ctx, job, c.err); got != c.want {
			t.Errorf("%s: outcome %q, want %q", c.name, got, c.want)
		}
	}
}

// TestCircuitStateMetric reads each route's fleet circuit at scrape time.
func TestCircuitStateMetric(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	states := map[string]outbox.CircuitState{"genesys": outbox.CircuitOpen, "ok": outbox.CircuitClosed}
	RegisterCircuitState(reg, []string{"genesys", "ok", "gone"}, func(route string) (outbox.CircuitState, bool) {
		s, ok := states[route]
		return s, ok
	})
	want := `
# HELP outbox_circuit_state State of the circuit breaker a route's target has for the whole fleet, as this replica last read it: 0 closed, 1 half-open, 2 open.
# TYPE outbox_circuit_state gauge
outbox_circuit_state{route="genesys"} 2
outbox_circuit_state{route="ok"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), CircuitStateMetric); err != nil {
		t.Error(err)
	}
}

// Metric names and help follow Prometheus conventions (promlint).
func TestDeliveryMetricsLint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, []string{"r"})
	RegisterCircuitState(reg, []string{"r"}, func(string) (outbox.CircuitState, bool) { return outbox.CircuitClosed, true })
	m.record("r", OutcomeDelivered, &rivertype.JobRow{Attempt: 1, CreatedAt: time.Now()}, time.Millisecond)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
