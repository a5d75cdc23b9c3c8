package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhook-outbox/webhook-outbox/jobs"
)

// servedMetricNames runs the real serve wiring and returns the name of
// every metric it registers, whether or not it has a series yet.
func servedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	cfg := loadTestConfig(t, "http://127.0.0.1:1/", "token")
	m := &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler)}
	startMain(t, m)
	descs := make(chan *prometheus.Desc)
	go func() {
		m.registry.Describe(descs)
		close(descs)
	}()
	names := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if sub := fqName.FindStringSubmatch(d.String()); sub != nil {
			names[sub[1]] = true
		}
	}
	if !names["outbox_deliveries_total"] || !names[jobs.CircuitStateMetric] {
		t.Fatalf("cannot read the registry's metric names: %v", names)
	}
	return names
}

// outboxNames returns the outbox_ metric names text mentions, histogram
// series (_bucket, _sum, _count) under their metric's name.
func outboxNames(text string, known map[string]bool) []string {
	var names []string
	for _, n := range regexp.MustCompile(`\boutbox_[a-z0-9_]+`).FindAllString(text, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && known[base] {
				n = base
			}
		}
		names = append(names, n)
	}
	return names
}

// TestGrafanaDashboard checks that the dashboard is valid JSON, queries only
// metrics outbox serves, and has the panels the README promises.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	known := servedMetricNames(t)
	data, err := os.ReadFile(repoFile("deploy/grafana/webhook-outbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, n := range outboxNames(q.Expr, known) {
				if !known[n] {
					t.Errorf("panel %q queries %s, which outbox does not serve", p.Title, n)
				}
				used[n] = true
			}
		}
	}
	for _, n := range []string{
		"outbox_intake_requests_total", "outbox_intake_duration_seconds", // intake rate and latency
		"outbox_deliveries_total",               // delivery outcomes
		"outbox_oldest_undelivered_age_seconds", // backlog age
		"outbox_backlog_events",
		"outbox_dead_letters",   // dead letters
		jobs.CircuitStateMetric, // circuit state
	} {
		if !used[n] {
			t.Errorf("no dashboard panel shows %s", n)
		}
	}
}
