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
			if status != 401 || !strings.Contains(string(raw), `"error"`) || header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with auth %d: %d %s", e.method, e.path, a, status, raw)
			}
		}
	}
	for _, a := range []auth{bearer, basic} {
		if status, _, raw := b.do(t, a, "GET", "/admin/v1/routes", nil); status != 200 {
			t.Errorf("routes with auth %d: %d %s", a, status, raw)
		}
	}
	if status, _, raw := b.do(t, bearer, "GET", "/admin/v1/stats?exact=true", nil); status != 200 || !decode[store.Stats](t, raw).Exact {
		t.Errorf("stats: %d %s", status, raw)
	}
	status, header, raw := b.do(t, basic, "GET", "/riverui/", nil)
	if status != 200 || !strings.HasPrefix(header.Get("Content-Type"), "text/html") || !strings.Contains(string(raw), "/riverui/assets/") {
		t.Errorf("River UI page: %d %s %.200s", status, header.Get("Content-Type"), raw)
	}
	if status, _, raw := b.do(t, bearer, "GET", "/riverui/api/jobs?state=discarded", nil); status != 200 || !strings.Contains(string(raw), `"data"`) {
		t.Errorf("River UI API: %d %.200s", status, raw)
	}
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
	if got := list(""); len(got.DeadLetters) != 10 || got.NextCursor != nil {
		t.Errorf("all: %d items, cursor %v", len(got.DeadLetters), got.NextCursor)
	}
	if got := list("route=open"); len(got.DeadLetters) != 3 || got.DeadLetters[0].State != "cancelled" {
		t.Errorf("route=open: %+v", got.DeadLetters)
	}
	if got := list("since=1h"); len(got.DeadLetters) != 8 {
		t.Errorf("since=1h: %d items, want 8", len(got.DeadLetters))
	}
	if got := list("until=1h"); len(got.DeadLetters) != 2 || !strings.HasPrefix(got.DeadLetters[0].Key, "old-") {
		t.Errorf("until=1h: %+v", got.DeadLetters)
	}
	if got := list("error=SERVICE+unavailable"); len(got.DeadLetters) != 5 {
		t.Errorf("error substring: %d items, want 5", len(got.DeadLetters))
	}
	if got := list("error=50%25"); len(got.DeadLetters) != 0 {
		t.Errorf("a %% in the error filter is literal: %d items", len(got.DeadLetters))
	}
	d := list("route=genesys&limit=1").DeadLetters[0]
	var payload map[string]any
	if err := json.Unmarshal(d.Payload, &payload); err != nil || payload["conversationId"] == nil || d.LastError == "" || d.Attempts != 3 || d.MaxAttempts != 3 {
		t.Errorf("item = %+v", d)
	}

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
			if !last.IsZero() && d.FailedAt.After(last) {
				t.Errorf("not newest first: %s after %s", d.FailedAt, last)
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
		if status != 400 || !strings.Contains(decode[map[string]string](t, raw)["error"], want) {
			t.Errorf("%s: %d %s", query, status, raw)
		}
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
	if ev.Key != key || ev.State != "dead" || len(ev.Jobs) != 1 || ev.Jobs[0].State != "discarded" ||
		len(ev.Jobs[0].Errors) != 1 || ev.Jobs[0].Errors[0].Error != "connection refused by 127.0.0.1:3000" {
		t.Errorf("event = %s", raw)
	}
	if !strings.Contains(string(raw), `"conversationId":"conv-1"`) {
		t.Errorf("payload missing: %s", raw)
	}

	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/dead-letters/"+url.PathEscape("genesys/"+key), nil)
	if status != 200 || decode[outbox.DeadLetter](t, raw).Key != key {
		t.Errorf("dead letter by ROUTE/KEY: %d %s", status, raw)
	}
	jobID := ev.Jobs[0].ID
	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/dead-letters/"+itoa(jobID), nil)
	if d := decode[outbox.DeadLetter](t, raw); status != 200 || d.JobID != jobID || len(d.Errors) != 1 {
		t.Errorf("dead letter by id: %d %s", status, raw)
	}
	if status, _, raw := b.do(t, bearer, "GET", "/admin/v1/events/genesys/nope", nil); status != 404 || !strings.Contains(string(raw), "no event genesys/nope") {
		t.Errorf("missing event: %d %s", status, raw)
	}
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
	if status != 200 || !res.DryRun || res.Matched != 4 || res.Retried != 0 || len(res.Sample) != 4 {
		t.Fatalf("dry run: %d %s", status, raw)
	}
	if n := countDead(t, b.pool); n != 6 {
		t.Fatalf("a dry run changed something: %d dead letters left", n)
	}

	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"route": "genesys"})
	if res := decode[admin.RetryResult](t, raw); status != 200 || res.Retried != 4 {
		t.Fatalf("retry by filter: %d %s", status, raw)
	}
	// The full budget again: attempt 0 of the route's max_attempts (7), due
	// now, with a fresh deadline.
	var attempt, maxAttempts int
	var state string
	var giveUpAt time.Time
	err := b.pool.QueryRow(context.Background(), `SELECT attempt, max_attempts, state, (metadata->>'give_up_at')::timestamptz FROM river_job WHERE queue = 'genesys' LIMIT 1`).Scan(&attempt, &maxAttempts, &state, &giveUpAt)
	if err != nil || attempt != 0 || maxAttempts != 7 || state != "available" || time.Until(giveUpAt) < 71*time.Hour {
		t.Errorf("retried job: attempt %d/%d %s give_up_at %s (%v)", attempt, maxAttempts, state, giveUpAt, err)
	}
	if n := countDead(t, b.pool); n != 2 {
		t.Errorf("%d dead letters left, want the 2 of route open", n)
	}

	var openID int64
	if err := b.pool.QueryRow(context.Background(), `SELECT job_id FROM dead_letters WHERE route = 'open' ORDER BY job_id LIMIT 1`).Scan(&openID); err != nil {
		t.Fatal(err)
	}
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"job_ids": []int64{openID, 999999}})
	if res := decode[admin.RetryResult](t, raw); status != 200 || res.Retried != 1 || len(res.NotRetried) != 1 {
		t.Errorf("retry by ids: %d %s", status, raw)
	}
	for _, body := range []map[string]any{{}, {"job_ids": []int64{1}, "route": "open"}, {"route": "nope"}, {"rout": "open"}} {
		status, _, raw := b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", body)
		if status != 400 && status != 404 {
			t.Errorf("retry %v: %d %s", body, status, raw)
		}
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
	if status != 200 || len(routes) != 2 || routes[0].Name != "genesys" || routes[0].Backlog.Available != 2 || routes[0].DeadLetters != 1 ||
		routes[0].OldestUndeliveredAge == nil || routes[0].Paused {
		t.Fatalf("routes: %d %s", status, raw)
	}

	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"route": "genesys", "since": "1h", "dry_run": true})
	if res := decode[admin.ReplayResult](t, raw); status != 200 || res.Matched != 3 || res.Replayed != 0 {
		t.Fatalf("replay dry run: %d %s", status, raw)
	}
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"route": "genesys", "since": "1h"})
	// The two queued events are skipped; the dead one is revived.
	if res := decode[admin.ReplayResult](t, raw); status != 200 || res.Skipped != 2 || res.Revived != 1 || res.Replayed != 0 {
		t.Fatalf("replay: %d %s", status, raw)
	}
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"route": "genesys"}); status != 400 {
		t.Errorf("replay without since: %d %s", status, raw)
	}
	// The replay is named; resumed by its id it has nothing left to do.
	first := decode[admin.ReplayResult](t, raw)
	status, _, raw = b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"resume": first.ReplayID})
	if res := decode[admin.ReplayResult](t, raw); status != 200 || first.ReplayID == "" || res.ReplayID != first.ReplayID || res.AlreadyReplayed != 3 || res.Revived+res.Replayed != 0 {
		t.Errorf("replay resumed: %d %s", status, raw)
	}
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/events/replay", map[string]any{"resume": "no-such-replay"}); status != 404 {
		t.Errorf("replay resumed with an unknown cursor: %d %s", status, raw)
	}
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/dead-letters/retry", map[string]any{"resume": "bogus"}); status != 400 || !strings.Contains(string(raw), "not a retry cursor") {
		t.Errorf("retry resumed with a bad cursor: %d %s", status, raw)
	}

	// Pause works before the route's queue has ever run.
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/routes/open/pause", nil); status != 200 || !strings.Contains(string(raw), `"paused":true`) {
		t.Fatalf("pause: %d %s", status, raw)
	}
	status, _, raw = b.do(t, bearer, "GET", "/admin/v1/routes", nil)
	if r := decode[struct{ Routes []admin.RouteStatus }](t, raw).Routes[1]; status != 200 || !r.Paused || r.PausedAt == nil {
		t.Errorf("after pause: %s", raw)
	}
	var riverPaused bool
	if err := b.pool.QueryRow(context.Background(), `SELECT paused_at IS NOT NULL FROM river_queue WHERE name = 'open'`).Scan(&riverPaused); err != nil || !riverPaused {
		t.Errorf("River's queue row is not paused (%v)", err)
	}
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/routes/open/resume", nil); status != 200 || !strings.Contains(string(raw), `"paused":false`) {
		t.Fatalf("resume: %d %s", status, raw)
	}
	if status, _, raw := b.do(t, bearer, "POST", "/admin/v1/routes/nope/pause", nil); status != 404 || !strings.Contains(decode[map[string]string](t, raw)["error"], `no route named "nope"`) {
		t.Errorf("pause unknown route: %d %s", status, raw)
	}
}
