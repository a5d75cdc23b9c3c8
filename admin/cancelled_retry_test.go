package admin_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// TestRetryAfterCancelInRiverUIGetsTheFullBudget cancels a running delivery
// through River's API, as River UI's Cancel button does, then retries the
// dead letter: the retried job must get its full budget, and be delivered
// after a failure, not cancelled again at its first error (River keeps
// metadata.cancel_attempted_at, and cancels a job carrying it when it
// fails).
func TestRetryAfterCancelInRiverUIGetsTheFullBudget(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so the server notices the client hanging up
		switch requests.Add(1) {
		case 1: // hangs until the job is cancelled
			close(started)
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case 2:
			http.Error(w, "still sick", http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer target.Close()
	defer close(release)

	pool, _ := testdb.Pool(t)
	cfg := genesysConfig(t, target.URL, "retry: {max_attempts: 5, initial_backoff: 1s, max_backoff: 1s}")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, client := startWorkers(ctx, t, pool, cfg)
	svc := admin.New(st, client, cfg)

	acc, err := store.NewIntake(st, client).Accept(ctx, &outbox.NewEvent{Route: "genesys", Key: "k", ContentType: "application/json", Body: []byte(`{"id":"k"}`), MaxAttempts: 5})
	require.NoError(t, err)
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatal("the delivery did not reach the target within 60s")
	}
	_, err = client.JobCancel(ctx, acc.JobID)
	require.NoError(t, err)
	state := waitForState(t, pool, acc.JobID, "cancelled", "completed")
	require.Equal(t, "cancelled", state)

	res, err := svc.RetryDeadLetters(ctx, admin.RetryRequest{IDs: []admin.Identifier{{JobID: acc.JobID}}})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Retried)

	state = waitForState(t, pool, acc.JobID, "cancelled", "completed", "discarded")
	require.Equal(t, "completed", state, "the retried dead letter was %s after %d requests: it did not get its full budget", state, requests.Load())
	require.Equal(t, int32(3), requests.Load(), "the hung attempt, one failure, one success")
}

// waitForState polls job id until its state is one of states, for up to a
// minute, and returns it.
func waitForState(t *testing.T, pool *pgxpool.Pool, id int64, states ...string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var state string
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT state::text FROM river_job WHERE id = $1`, id).Scan(&state))
		if slices.Contains(states, state) {
			return state
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d is %s after a minute, want one of %v", id, state, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWorkers starts what serve runs for cfg's deliveries on pool (River's
// workers, the completer and the routes' limits), stopped at the test's
// end.
func startWorkers(ctx context.Context, t *testing.T, pool *pgxpool.Pool, cfg *config.Config) (*store.Store, *river.Client[pgx.Tx]) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.New(pool)
	completer, limits := jobs.NewCompleter(st, 0), jobs.NewLimits(st, cfg, logger)
	limits.Start(context.Background())
	t.Cleanup(func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = limits.Stop(stopCtx)
		completer.Close()
	})
	client, err := jobs.NewClient(pool, st, cfg, jobs.ClientOptions{Logger: logger, RiverLogger: logger, Completer: completer, Limits: limits})
	require.NoError(t, err)
	require.NoError(t, client.Start(ctx))
	t.Cleanup(func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = client.Stop(stopCtx)
	})
	return st, client
}

// genesysConfig is a config with one route, genesys, delivering to
// targetURL; route adds a line to the route's settings.
func genesysConfig(t *testing.T, targetURL, route string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
database_url: postgres://unused
disable_admin: true
routes:
  - name: genesys
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: %q, timeout: 30s}
    %s
`, targetURL, route)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}
