package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/webhook-outbox/webhook-outbox/internal/scrape"
)

// TestMetricsEndToEnd runs the real serve wiring against a real target and
// scrapes /metrics as Prometheus would, while events are accepted,
// duplicated, delivered, retried, snoozed, cancelled and dead-lettered.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	target := &scriptedTarget{seen: map[string]int{}, answer: func(w http.ResponseWriter, key string, n int) {
		switch {
		case key == "evt-flaky" && n == 1, key == "evt-dead":
			http.Error(w, "down for a moment", http.StatusInternalServerError)
		case key == "evt-gone":
			http.Error(w, "no such customer", http.StatusGone)
		case key == "evt-slow" && n == 1:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case key == "evt-held":
			<-release
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}}
	srv := newHTTPTestServer(t, target)
	cfg := loadTestConfig(t, srv.URL+"/hook", "genesys-token")
	cfg.Routes[0].Retry.MaxAttempts = 2 // a second failure is a dead letter
	m := &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler), StatsInterval: 100 * time.Millisecond}
	base := startMain(t, m)
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld) // runs before startMain's Close, which waits for the held delivery
	metrics := base + "/metrics"

	value := func(name string, labels ...string) float64 {
		v, _ := scrape.Get(t, metrics).Value(name, labels...)
		return v
	}
	waitMetric := func(want float64, name string, labels ...string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%s%v = %v", name, labels, want), func() bool { return value(name, labels...) == want })
	}
	deliveries := func(outcome string) []string {
		return []string{"route", "genesys", "outcome", outcome}
	}
	genesys := []string{"route", "genesys"}

	// Before any traffic: runtime metrics, and the route's series at 0.
	first := scrape.Get(t, metrics)
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "go_build_info"} {
		if !first.Has(name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for _, o := range []string{"delivered", "retry", "snoozed", "cancelled", "discarded"} {
		if v, ok := first.Value("outbox_deliveries_total", deliveries(o)...); !ok || v != 0 {
			t.Errorf("before traffic, outbox_deliveries_total{outcome=%q} = %v (present %v), want 0", o, v, ok)
		}
	}
	if v, ok := first.Value("outbox_circuit_state", genesys...); !ok || v != 0 {
		t.Errorf("before traffic, outbox_circuit_state{route=genesys} = %v (present %v), want 0 (closed)", v, ok)
	}

	// One intake and its delivery.
	if resp := post(t, base, "genesys-token", `{"id":"evt-ok"}`, nil); resp.StatusCode != 200 {
		t.Fatalf("post: %d", resp.StatusCode)
	}
	waitMetric(1, "outbox_deliveries_total", deliveries("delivered")...)
	m1 := scrape.Get(t, metrics)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"outbox_intake_requests_total", []string{"route", "genesys", "status", "200"}, 1},
		{"outbox_intake_events_total", []string{"route", "genesys", "result", "accepted"}, 1},
		{"outbox_intake_events_total", []string{"route", "genesys", "result", "duplicate"}, 0},
		{"outbox_intake_duration_seconds", genesys, 1},
		{"outbox_delivery_duration_seconds", genesys, 1},
		{"outbox_delivery_attempts", genesys, 1},
		{"outbox_delivery_lag_seconds", genesys, 1},
	} {
		if got, ok := m1.Value(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("after one delivery, %s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}

	// A redelivery by the sender, and a sender with a wrong token.
	post(t, base, "genesys-token", `{"id":"evt-ok"}`, nil)
	post(t, base, "not-the-token", `{"id":"evt-x"}`, nil)
	waitMetric(1, "outbox_intake_events_total", "route", "genesys", "result", "duplicate")
	waitMetric(1, "outbox_intake_requests_total", "route", "genesys", "status", "401")

	// A retry: the first attempt fails, the second is delivered.
	post(t, base, "genesys-token", `{"id":"evt-flaky"}`, nil)
	waitMetric(2, "outbox_deliveries_total", deliveries("delivered")...)
	if got := value("outbox_deliveries_total", deliveries("retry")...); got != 1 {
		t.Errorf("retries = %v, want 1", got)
	}

	// A dead letter: both attempts fail, and River discards the job.
	post(t, base, "genesys-token", `{"id":"evt-dead"}`, nil)
	waitMetric(1, "outbox_deliveries_total", deliveries("discarded")...)
	if got := value("outbox_deliveries_total", deliveries("retry")...); got != 2 {
		t.Errorf("retries = %v, want 2", got)
	}
	waitMetric(1, "outbox_dead_letters", genesys...)

	// A permanent failure is cancelled, and is a dead letter too.
	post(t, base, "genesys-token", `{"id":"evt-gone"}`, nil)
	waitMetric(1, "outbox_deliveries_total", deliveries("cancelled")...)
	waitMetric(2, "outbox_dead_letters", genesys...)

	// Retry-After snoozes without using an attempt, then delivers.
	post(t, base, "genesys-token", `{"id":"evt-slow"}`, nil)
	waitMetric(3, "outbox_deliveries_total", deliveries("delivered")...)
	m2 := scrape.Get(t, metrics)
	if got, _ := m2.Value("outbox_deliveries_total", deliveries("snoozed")...); got != 1 {
		t.Errorf("snoozes = %v, want 1", got)
	}
	// Attempts per delivered event: ok 1, flaky 2, slow 1 (the snooze is free).
	if n, _ := m2.Value("outbox_delivery_attempts", genesys...); n != 3 {
		t.Errorf("outbox_delivery_attempts count = %v, want 3", n)
	}
	if sum, _ := m2.HistogramSum("outbox_delivery_attempts", genesys...); sum != 4 {
		t.Errorf("outbox_delivery_attempts sum = %v, want 4", sum)
	}
	// Every attempt was timed: 3 delivered, 2 retries, 1 discard, 1 cancel, 1 snooze.
	if n, _ := m2.Value("outbox_delivery_duration_seconds", genesys...); n != 8 {
		t.Errorf("outbox_delivery_duration_seconds count = %v, want 8", n)
	}

	// The backlog while a delivery is in flight, then after it.
	post(t, base, "genesys-token", `{"id":"evt-held"}`, nil)
	waitFor(t, "the target to hold a delivery", func() bool { return target.count("evt-held") == 1 })
	waitMetric(1, "outbox_backlog_events", "route", "genesys", "state", "running")
	waitFor(t, "the oldest undelivered age to grow", func() bool {
		return value("outbox_oldest_undelivered_age_seconds", genesys...) > 0
	})
	releaseHeld()
	waitMetric(4, "outbox_deliveries_total", deliveries("delivered")...)
	waitMetric(0, "outbox_backlog_events", "route", "genesys", "state", "running")
	waitMetric(0, "outbox_oldest_undelivered_age_seconds", genesys...)

	last := scrape.Get(t, metrics)
	if v, _ := last.Value("outbox_stats_refreshed_timestamp_seconds"); v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("outbox_stats_refreshed_timestamp_seconds = %v, want a recent Unix time", v)
	}
	if v, _ := last.Value("outbox_intake_requests_total", "route", "genesys", "status", "200"); v != 7 {
		t.Errorf("intake 200s = %v, want 7", v)
	}
	if strings.Contains(last.Raw, "evt-") {
		t.Errorf("an event key appears in /metrics")
	}
	// Names, types and help follow Prometheus conventions.
	problems, err := promlint.New(strings.NewReader(last.Raw)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "outbox_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}
