package jobs_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// BenchmarkDrainStatements drains b.N queued deliveries to a fast target
// with today's delivery worker, and reports the Postgres statements per
// delivery (River's fetch, completion and housekeeping, the event's load,
// the shared commit that records it) and the deliveries per second: the
// baseline that fleet-wide limits must not add a round trip per delivery
// to. Run it with a fixed count, for example -benchtime 3000x.
func BenchmarkDrainStatements(b *testing.B) {
	pool, counter, url := testdb.CountedPool(b)
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	b.Cleanup(target.Close)
	cfg, err := config.Parse(fmt.Appendf(nil, `
database_url: postgres://unused/db
disable_admin: true
routes:
  - name: r
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: %q}
    concurrency: 8
`, target.URL), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.New(pool)
	ctx := context.Background()

	inserter, err := jobs.NewInsertOnlyClient(pool, logger)
	if err != nil {
		b.Fatal(err)
	}
	intake := store.NewIntake(st, inserter)
	batch := make([]*outbox.NewEvent, 0, 500)
	for i := range b.N {
		batch = append(batch, &outbox.NewEvent{Route: "r", Key: fmt.Sprint(i), ContentType: "application/json", Headers: http.Header{}, Body: fmt.Appendf(nil, `{"id":"%d"}`, i), MaxAttempts: 10})
		if len(batch) == cap(batch) || i == b.N-1 {
			if _, err := intake.AcceptBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	opts := jobs.ClientOptions{Logger: logger, RiverLogger: logger}
	withDeps(b, st, cfg, &opts)
	client, err := jobs.NewClient(pool, st, cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	// Progress is read on a connection of its own, not counted.
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer watch.Close(ctx)

	start := counter.Count()
	began := time.Now()
	b.ResetTimer()
	if err := client.Start(ctx); err != nil {
		b.Fatal(err)
	}
	for {
		var delivered int
		if err := watch.QueryRow(ctx, `SELECT count(*) FROM events WHERE delivered_at IS NOT NULL`).Scan(&delivered); err != nil {
			b.Fatal(err)
		}
		if delivered == b.N {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	took := time.Since(began)
	statements := counter.Count() - start
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = client.Stop(stopCtx)
	b.ReportMetric(float64(statements)/float64(b.N), "statements/delivery")
	b.ReportMetric(float64(b.N)/took.Seconds(), "deliveries/s")
}
