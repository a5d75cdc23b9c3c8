package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/handler"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

type adminBundle struct {
	server *httptest.Server
	pool   *pgxpool.Pool
}

func setupAdmin(t *testing.T) *adminBundle {
	t.Helper()
	return setupAdminWith(t, nil)
}

// setupAdminWith is setupAdmin with edit applied to the router's options.
func setupAdminWith(t *testing.T, edit func(*handler.RouterOptions)) *adminBundle {
	t.Helper()
	pool, _ := testdb.Pool(t)
	cfg, err := config.Parse([]byte(baseConfig), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.New(pool)
	client, err := jobs.NewInsertOnlyClient(pool, logger)
	if err != nil {
		t.Fatal(err)
	}
	intake, err := handler.NewIntake(cfg, store.NewIntake(st, client), logger)
	if err != nil {
		t.Fatal(err)
	}
	ui, err := handler.NewRiverUI(client, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := ui.Start(ctx); err != nil {
		t.Fatal(err)
	}
	opts := handler.RouterOptions{
		Intake: intake, Readiness: st, Logger: logger,
		Admin: admin.New(st, client, cfg), AdminToken: adminToken, RiverUI: ui,
	}
	if edit != nil {
		edit(&opts)
	}
	srv := httptest.NewServer(handler.NewRouter(opts))
	t.Cleanup(srv.Close)
	return &adminBundle{server: srv, pool: pool}
}

type auth int

const (
	bearer auth = iota
	basic
	noAuth
	wrongToken
)

func (b *adminBundle) do(t *testing.T, a auth, method, path string, body any) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.server.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch a {
	case bearer:
		req.Header.Set("Authorization", "Bearer "+adminToken)
	case basic:
		req.SetBasicAuth("any-user", adminToken)
	case wrongToken:
		req.Header.Set("Authorization", "Bearer "+strings.Repeat("x", len(adminToken)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

func decode[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("not the expected JSON: %v: %s", err, raw)
	}
	return v
}

// TestAdminRequiresToken checks every admin endpoint and River UI answer
// 401 with a JSON error without the token or with a wrong one, and accept it
// as Bearer and as the Basic password.
func TestAdminRequiresToken(t *testing.T) {
	t.Parallel()
	// Ten wrong tokens from one address, then the right one: the default
	// failure throttle would answer 429 by then (see
	// TestAdminFailuresAreSlowedDown).
	b := setupAdminWith(t, func(o *handler.RouterOptions) { o.AdminFailures.Burst = 100 })
	endpoints := []struct{ method, path string }{
		{"GET", "/admin/v1/dead-letters"},
		{"GET", "/admin/v1/dead-letters/1"},
		{"POST", "/admin/v1/dead-letters/retry"},
		{"GET", "/admin/v1/events/genesys/some-key"},
		{"POST", "/admin/v1/events/replay"},
		{"GET", "/admin/v1/routes"},
		{"GET", "/admin/v1/stats"},
		{"POST", "/admin/v1/routes/genesys/pause"},
		{"POST", "/admin/v1/routes/genesys/resume"},
		{"GET", "/riverui/"},
		{"GET", "/riverui/api/jobs?state=discarded"},
	}
	for _, e := range endpoints {
		for _, a := range []auth{noAuth, wrongToken} {
			status, header, raw := b.do(t, a, e.method, e.path, nil)
			assert.Equal(t, 401, status, "%s %s with auth %d: %s", e.method, e.path, a, raw)
			assert.Contains(t, string(raw), `"error"`, "%s %s with auth %d", e.method, e.path, a)
			assert.NotEmpty(t, header.Get("WWW-Authenticate"), "%s %s with auth %d: WWW-Authenticate", e.method, e.path, a)
		}
	}
	for _, a := range []auth{bearer, basic} {
		if status, _, raw := b.do(t, a, "GET", "/admin/v1/routes", nil); status != 200 {
			t.Errorf("routes with auth %d: %d %s", a, status, raw)
		}
	}
	status, _, raw := b.do(t, bearer, "GET", "/admin/v1/stats?exact=true", nil)
	require.Equal(t, 200, status, "stats: %s", raw)
	assert.True(t, decode[store.Stats](t, raw).Exact, "stats: %s", raw)

	status, header, raw := b.do(t, basic, "GET", "/riverui/", nil)
	assert.Equal(t, 200, status, "River UI page: %.200s", raw)
	assert.True(t, strings.HasPrefix(header.Get("Content-Type"), "text/html"), "River UI page Content-Type: %s", header.Get("Content-Type"))
	assert.True(t, strings.Contains(string(raw), "/riverui/assets/"), "River UI page does not link its assets: %.200s", raw)

	status, _, raw = b.do(t, bearer, "GET", "/riverui/api/jobs?state=discarded", nil)
	assert.Equal(t, 200, status, "River UI API: %.200s", raw)
	assert.True(t, strings.Contains(string(raw), `"data"`), "River UI API: %.200s", raw)
}

func TestAdminDeadLettersListFilterAndPage(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "g-", N: 5, Error: "target answered 503 Service Unavailable after 3ms: down", FailedAgo: 10 * time.Minute})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "old-", N: 2, Error: "no answer within 10s", FailedAgo: 3 * time.Hour})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "open", KeyPrefix: "o-", N: 3, State: "cancelled", Error: "target answered 410 Gone after 1ms"})

	type page struct {
		DeadLetters []outbox.DeadLetter `json:"dead_letters"`
		NextCursor  *string             `json:"next_cursor"`
	}
	list := func(query string) page {
		status, _, raw := b.do(t, bearer, "GET", "/admin/v1/dead-letters?"+query, nil)
		if status != 200 {
			t.Fatalf("list %s: %d %s", query, status, raw)
		}
		return decode[page](t, raw)
	}
	all := list("")
	assert.Len(t, all.DeadLetters, 10, "all")
	assert.Nil(t, all.NextCursor, "all: the one page has a next cursor")
	open := list("route=open")
	require.Len(t, open.DeadLetters, 3, "route=open")
	assert.Equal(t, "cancelled", open.DeadLetters[0].State, "route=open: %+v", open.DeadLetters)
	if got := list("since=1h"); len(got.DeadLetters) != 8 {
		t.Errorf("since=1h: %d items, want 8", len(got.DeadLetters))
	}
	until := list("until=1h")
	require.Len(t, until.DeadLetters, 2, "until=1h")
	assert.True(t, strings.HasPrefix(until.DeadLetters[0].Key, "old-"), "until=1h: %+v", until.DeadLetters)
	if got := list("error=SERVICE+unavailable"); len(got.DeadLetters) != 5 {
		t.Errorf("error substring: %d items, want 5", len(got.DeadLetters))
	}
	if got := list("error=50%25"); len(got.DeadLetters) != 0 {
		t.Errorf("a %% in the error filter is literal: %d items", len(got.DeadLetters))
	}
	d := list("route=genesys&limit=1").DeadLetters[0]
	var payload map[string]any
	require.NoError(t, json.Unmarshal(d.Payload, &payload), "item = %+v", d)
	assert.NotNil(t, payload["conversationId"], "item = %+v", d)
	assert.NotEmpty(t, d.LastError, "item = %+v", d)
	assert.Equal(t, 3, d.Attempts, "item = %+v", d)
	assert.Equal(t, 3, d.MaxAttempts, "item = %+v", d)

	// Pages of 3 walk all 10, newest failure first, without repeats.
	seen := map[int64]bool{}
	cursor := ""
	var last time.Time
	for pages := 0; ; pages++ {
		q := "limit=3"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		p := list(q)
		for _, d := range p.DeadLetters {
			if seen[d.JobID] {
				t.Fatalf("job %d on two pages", d.JobID)
			}
			if !last.IsZero() {
				assert.False(t, d.FailedAt.After(last), "not newest first: %s after %s", d.FailedAt, last)
			}
			seen[d.JobID], last = true, d.FailedAt
		}
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 10 {
		t.Errorf("pages held %d dead letters, want 10", len(seen))
	}

	for query, want := range map[string]string{
		"since=yesterday": "is not a time", "limit=0": "limit must be", "cursor=nope": "is not one this server returned", "colour=red": `unknown parameter "colour"`,
	} {
		status, _, raw := b.do(t, bearer, "GET", "/admin/v1/dead-letters?"+query, nil)
		assert.Equal(t, 400, status, "%s: %s", query, raw)
		assert.Contains(t, decode[map[string]string](t, raw)["error"], want, "%s", query)
	}
}

func TestAdminShowEventAndDeadLetter(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "k/slash|", N: 1, Error: "connection refused by 127.0.0.1:3000"})
	key := "k/slash|1"

	status, _, raw := b.do(t, bearer, "GET", "/admin/v1/events/genesys/"+url.PathEscape(key), nil)
	if status != 200 {
		t.Fatalf("show event: %d %s", status, raw)
	}
	ev := decode[outbox.EventDetail](t, raw)
	assert.Equal(t, key, ev.Key, "event = %s", raw)
	assert.Equal(t, outbox.EventState("dead"), ev.State, "event = %s", raw)
	require.Len(t, ev.Jobs, 1, "event = %s", raw)
	assert.Equal(t, "discarded", ev.Jobs[0].State, "event = %s", raw)
	require.Len(t, ev.Jobs[0].Errors, 1, "event = %s", raw)
	assert.Equal(t, "connection refused by 127.0.0.1:3000", ev.Jobs[0].Errors[0].Error, "event = %s", raw)
	if !strings.Contains(string(raw), `"conversationId":"conv-1"`) {
		t.Errorf("payload missing: %s", raw)
	}

	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/dead-letters/"+url.PathEscape("genesys/"+key), nil)
	require.Equal(t, 200, status, "dead letter by ROUTE/KEY: %s", raw)
	assert.Equal(t, key, decode[outbox.DeadLetter](t, raw).Key, "dead letter by ROUTE/KEY: %s", raw)
	jobID := ev.Jobs[0].ID
	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/dead-letters/"+itoa(jobID), nil)
	d := decode[outbox.DeadLetter](t, raw)
	assert.Equal(t, 200, status, "dead letter by id: %s", raw)
	assert.Equal(t, jobID, d.JobID, "dead letter by id: %s", raw)
	assert.Len(t, d.Errors, 1, "dead letter by id: %s", raw)
	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/events/genesys/nope", nil)
	assert.Equal(t, 404, status, "missing event: %s", raw)
	assert.Contains(t, string(raw), "no event genesys/nope", "missing event")
	if status, _, raw := b.do(t, bearer, "GET", "/admin/v1/dead-letters/999999", nil); status != 404 {
		t.Errorf("missing dead letter: %d %s", status, raw)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestAdminRetry(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "r-", N: 4, Error: "target answered 500 Internal Server Error after 2ms"})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "open", KeyPrefix: "o-", N: 2, Error: "target answered 500 Internal Server Error after 2ms"})

	status, _, raw := b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"route": "genesys", "dry_run": true})
	res := decode[admin.RetryResult](t, raw)
	require.Equal(t, 200, status, "dry run: %s", raw)
	require.True(t, res.DryRun, "dry run: %s", raw)
	require.EqualValues(t, 4, res.Matched, "dry run: %s", raw)
	require.EqualValues(t, 0, res.Retried, "dry run: %s", raw)
	require.Len(t, res.Sample, 4, "dry run: %s", raw)
	if n := countDead(t, b.pool); n != 6 {
		t.Fatalf("a dry run changed something: %d dead letters left", n)
	}

	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"route": "genesys"})
	res = decode[admin.RetryResult](t, raw)
	require.Equal(t, 200, status, "retry by filter: %s", raw)
	require.EqualValues(t, 4, res.Retried, "retry by filter: %s", raw)
	// The full budget again: attempt 0 of the route's max_attempts (7), due
	// now, with a fresh deadline.
	var attempt, maxAttempts int
	var state string
	var giveUpAt time.Time
	err := b.pool.QueryRow(context.Background(), `SELECT attempt, max_attempts, state, (metadata->>'give_up_at')::timestamptz FROM river_job WHERE queue = 'genesys' LIMIT 1`).Scan(&attempt, &maxAttempts, &state, &giveUpAt)
	require.NoError(t, err, "retried job")
	assert.Equal(t, 0, attempt, "retried job: attempt")
	assert.Equal(t, 7, maxAttempts, "retried job: max_attempts")
	assert.Equal(t, "available", state, "retried job: state")
	assert.GreaterOrEqual(t, time.Until(giveUpAt), 71*time.Hour, "retried job: give_up_at %s", giveUpAt)
	if n := countDead(t, b.pool); n != 2 {
		t.Errorf("%d dead letters left, want the 2 of route open", n)
	}

	var openID int64
	if err := b.pool.QueryRow(context.Background(), `SELECT job_id FROM dead_letters WHERE route = 'open' ORDER BY job_id LIMIT 1`).Scan(&openID); err != nil {
		t.Fatal(err)
	}
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"job_ids": []int64{openID, 999999}})
	res = decode[admin.RetryResult](t, raw)
	assert.Equal(t, 200, status, "retry by ids: %s", raw)
	assert.EqualValues(t, 1, res.Retried, "retry by ids: %s", raw)
	assert.Len(t, res.NotRetried, 1, "retry by ids: %s", raw)
	for _, body := range []map[string]any{{}, {"job_ids": []int64{1}, "route": "open"}, {"route": "nope"}, {"rout": "open"}} {
		status, _, raw := b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", body)
		assert.Contains(t, []int{400, 404}, status, "retry %v: %s", body, raw)
	}
}

func countDead(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letters`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAdminReplayRoutesAndPause(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	// Two accepted events (queued), one dead letter.
	for _, id := range []string{"a", "b"} {
		req, _ := http.NewRequest("POST", b.server.URL+"/webhooks/genesys", strings.NewReader(`{"id":"`+id+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Webhook-Token", genesysToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "d-", N: 1, Error: "boom"})

	status, _, raw := b.do(t, bearer, "GET", "/admin/v1/routes", nil)
	routes := decode[struct{ Routes []admin.RouteStatus }](t, raw).Routes
	require.Equal(t, 200, status, "routes: %s", raw)
	require.Len(t, routes, 2, "routes: %s", raw)
	require.Equal(t, "genesys", routes[0].Name, "routes: %s", raw)
	require.EqualValues(t, 2, routes[0].Backlog.Available, "routes: %s", raw)
	require.EqualValues(t, 1, routes[0].DeadLetters, "routes: %s", raw)
	require.NotNil(t, routes[0].OldestUndeliveredAge, "routes: %s", raw)
	require.False(t, routes[0].Paused, "routes: %s", raw)

	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"route": "genesys", "since": "1h", "dry_run": true})
	dry := decode[admin.ReplayResult](t, raw)
	require.Equal(t, 200, status, "replay dry run: %s", raw)
	require.EqualValues(t, 3, dry.Matched, "replay dry run: %s", raw)
	require.EqualValues(t, 0, dry.Replayed, "replay dry run: %s", raw)
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"route": "genesys", "since": "1h"})
	// The two queued events are skipped; the dead one is revived.
	replayed := decode[admin.ReplayResult](t, raw)
	require.Equal(t, 200, status, "replay: %s", raw)
	require.EqualValues(t, 2, replayed.Skipped, "replay: %s", raw)
	require.EqualValues(t, 1, replayed.Revived, "replay: %s", raw)
	require.EqualValues(t, 0, replayed.Replayed, "replay: %s", raw)
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"route": "genesys"}); status != 400 {
		t.Errorf("replay without since: %d %s", status, raw)
	}
	// The replay is named; resumed by its id it has nothing left to do.
	first := decode[admin.ReplayResult](t, raw)
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"resume": first.ReplayID})
	resumed := decode[admin.ReplayResult](t, raw)
	assert.Equal(t, 200, status, "replay resumed: %s", raw)
	assert.NotEmpty(t, first.ReplayID, "the replay has no id")
	assert.Equal(t, first.ReplayID, resumed.ReplayID, "replay resumed: %s", raw)
	assert.EqualValues(t, 3, resumed.AlreadyReplayed, "replay resumed: %s", raw)
	assert.Zero(t, resumed.Revived+resumed.Replayed, "replay resumed: %s", raw)
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"resume": "no-such-replay"}); status != 404 {
		t.Errorf("replay resumed with an unknown cursor: %d %s", status, raw)
	}
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"resume": "bogus"})
	assert.Equal(t, 400, status, "retry resumed with a bad cursor: %s", raw)
	assert.Contains(t, string(raw), "not a retry cursor", "retry resumed with a bad cursor")

	// Pause works before the route's queue has ever run.
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/routes/open/pause", nil)
	require.Equal(t, 200, status, "pause: %s", raw)
	require.Contains(t, string(raw), `"paused":true`, "pause")
	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/routes", nil)
	r := decode[struct{ Routes []admin.RouteStatus }](t, raw).Routes[1]
	assert.Equal(t, 200, status, "after pause: %s", raw)
	assert.True(t, r.Paused, "after pause: %s", raw)
	assert.NotNil(t, r.PausedAt, "after pause: %s", raw)
	var riverPaused bool
	err := b.pool.QueryRow(context.Background(), `SELECT paused_at IS NOT NULL FROM river_queue WHERE name = 'open'`).Scan(&riverPaused)
	assert.NoError(t, err, "River's queue row")
	assert.True(t, riverPaused, "River's queue row is not paused")
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/routes/open/resume", nil)
	require.Equal(t, 200, status, "resume: %s", raw)
	require.Contains(t, string(raw), `"paused":false`, "resume")
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/routes/nope/pause", nil)
	assert.Equal(t, 404, status, "pause unknown route: %s", raw)
	assert.Contains(t, decode[map[string]string](t, raw)["error"], `no route named "nope"`, "pause unknown route")
}
