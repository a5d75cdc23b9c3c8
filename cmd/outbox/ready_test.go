package main

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhook-outbox/webhook-outbox/internal/scrape"
)

// TestReadyGauge: outbox_ready says what /readyz says, without anyone
// probing /readyz. A schema moved on by a newer release makes the replica
// not ready (0), and it is ready again (1) once the schema is its own. The
// OutboxReplicaNotReady alert (deploy/prometheus/alerts.yml) reads it.
func TestReadyGauge(t *testing.T) {
	t.Parallel()
	cfg := loadTestConfig(t, "http://127.0.0.1:1/", "token")
	m := &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler), StatsInterval: 100 * time.Millisecond}
	base := startMain(t, m)
	pool, err := pgxpool.New(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	ready := func() float64 {
		v, ok := scrape.Get(t, base+"/metrics").Value("outbox_ready")
		if !ok {
			return -1
		}
		return v
	}
	readyz := func() int {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "outbox_ready 1", func() bool { return ready() == 1 })
	if s := readyz(); s != http.StatusOK {
		t.Fatalf("/readyz = %d while outbox_ready is 1", s)
	}

	// A newer release migrated the schema: this binary must not take traffic.
	if _, err := pool.Exec(context.Background(), `UPDATE schema_migrations SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "outbox_ready 0 after the schema moved on", func() bool { return ready() == 0 })
	// /readyz caches its answer for a second.
	waitFor(t, "/readyz 503 while outbox_ready is 0", func() bool { return readyz() == http.StatusServiceUnavailable })

	if _, err := pool.Exec(context.Background(), `UPDATE schema_migrations SET version = version - 1`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "outbox_ready 1 again", func() bool { return ready() == 1 })
}
