package jobs

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhook-outbox/webhook-outbox/jobs/adaptive"
)

// TestConcurrencyLimitMetric reads each route's limit at scrape time, and
// passes Prometheus's lint.
func TestConcurrencyLimitMetric(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	limiters := map[string]*adaptive.Limiter{
		"genesys": adaptive.New(adaptive.Config{Ceiling: 32, Algorithm: adaptive.NewGradient()}),
		"fixed":   adaptive.New(adaptive.Config{Ceiling: 4}),
	}
	RegisterConcurrencyLimit(reg, []string{"genesys", "fixed", "gone"}, func(route string) (int, bool) {
		l := limiters[route]
		if l == nil {
			return 0, false
		}
		return l.Limit(), true
	})
	want := `
# HELP outbox_delivery_concurrency_limit Current concurrency limit of a route's deliveries on this replica: its adaptive limit (or the route's concurrency when adaptive_concurrency is false), capped by its share of the route's fleet-wide concurrency.
# TYPE outbox_delivery_concurrency_limit gauge
outbox_delivery_concurrency_limit{route="fixed"} 4
outbox_delivery_concurrency_limit{route="genesys"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), ConcurrencyLimitMetric); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
