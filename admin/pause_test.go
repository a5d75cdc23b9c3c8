package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// TestPauseHoldsForWebhooksTakenRightAfter: once a pause has answered, this
// replica's workers have stopped fetching, so webhooks taken right after it
// stay queued, none reaches the target, and all are delivered after the
// resume. Pause returns on the workers' confirmation, well before its 2 s
// bound.
func TestPauseHoldsForWebhooksTakenRightAfter(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer target.Close()
	pool, _ := testdb.Pool(t)
	cfg := genesysConfig(t, target.URL, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, client := startWorkers(ctx, t, pool, cfg)
	svc := admin.New(st, client, cfg).WithLocalWorkers()
	intake := store.NewIntake(st, client)
	accept := func(key string) {
		_, err := intake.Accept(ctx, &outbox.NewEvent{Route: "genesys", Key: key, ContentType: "application/json", Body: []byte(`{"id":"` + key + `"}`), MaxAttempts: 5})
		require.NoError(t, err)
	}
	// The workers run: a first webhook is delivered.
	accept("before")
	require.Eventually(t, func() bool { return requests.Load() == 1 }, time.Minute, 10*time.Millisecond)

	began := time.Now()
	require.NoError(t, svc.Pause(ctx, "genesys"))
	require.Less(t, time.Since(began), time.Second, "the pause should return on the workers' confirmation, not at its 2 s bound")
	const after = 20
	for i := range after {
		accept(fmt.Sprintf("after-%02d", i))
	}
	time.Sleep(time.Second) // several of River's fetch polls (200 ms)
	var available int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'deliver' AND state = 'available'`).Scan(&available))
	require.Equal(t, after, available, "every webhook taken after the pause waits")
	require.Equal(t, int32(1), requests.Load(), "nothing reached the target while paused")

	require.NoError(t, svc.Resume(ctx, "genesys"))
	require.Eventually(t, func() bool { return requests.Load() == 1+after }, time.Minute, 10*time.Millisecond)
}
