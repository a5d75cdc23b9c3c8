package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// cli runs an outbox command line in-process, as the binary would.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

type cliBundle struct {
	cfgPath string
	pool    *pgxpool.Pool
}

func setupCLI(t *testing.T, targetURL string) *cliBundle {
	t.Helper()
	t.Setenv("TEST_GENESYS_TOKEN", "genesys-token")
	pool, dbURL := testdb.Pool(t)
	return &cliBundle{cfgPath: writeConfig(t, dbURL, targetURL, ""), pool: pool}
}

func (b *cliBundle) jobID(t *testing.T, key string) int64 {
	t.Helper()
	var id int64
	if err := b.pool.QueryRow(context.Background(), `SELECT job_id FROM dead_letters WHERE key = $1`, key).Scan(&id); err != nil {
		t.Fatalf("dead letter %s: %v", key, err)
	}
	return id
}

// TestCLICommands runs every operator command, as a table and as JSON, with
// and without --dry-run, and checks exit codes and output.
func TestCLICommands(t *testing.T) {
	b := setupCLI(t, "http://127.0.0.1:1/")
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "conv-key-", N: 25, Error: "target answered 503 Service Unavailable after 4ms: db down"})
	c := []string{"--config", b.cfgPath}

	code, out, errOut := cli(t, append([]string{"dlq", "list", "--limit", "5"}, c...)...)
	if code != 0 || !strings.HasPrefix(out, "JOB ID") || strings.Count(out, "conv-key-") != 5 || !strings.Contains(out, "(5 of 25 shown") {
		t.Errorf("dlq list: %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, append([]string{"dlq", "list", "--json", "--route", "genesys", "--error", "DB DOWN"}, c...)...)
	var items []outbox.DeadLetter
	if err := json.Unmarshal([]byte(out), &items); code != 0 || err != nil || len(items) != 25 || items[0].LastError == "" {
		t.Errorf("dlq list --json: %d %v\n%.300s", code, err, out)
	}
	code, out, _ = cli(t, append([]string{"dlq", "list", "--since", "1s"}, c...)...)
	if code != 0 || !strings.Contains(out, "no dead letters match") {
		t.Errorf("dlq list --since 1s: %d %s", code, out)
	}

	id := b.jobID(t, "conv-key-7")
	code, out, _ = cli(t, append([]string{"dlq", "show", fmt.Sprint(id)}, c...)...)
	if code != 0 || !strings.Contains(out, "genesys/conv-key-7") || !strings.Contains(out, "discarded after 3 of 3 attempts") ||
		!strings.Contains(out, `"conversationId": "conv-7"`) || !strings.Contains(out, "db down") {
		t.Errorf("dlq show: %d\n%s", code, out)
	}
	code, out, _ = cli(t, append([]string{"dlq", "show", "genesys/conv-key-7", "--json"}, c...)...)
	var d outbox.DeadLetter
	if err := json.Unmarshal([]byte(out), &d); code != 0 || err != nil || d.JobID != id || len(d.Errors) != 1 {
		t.Errorf("dlq show ROUTE/KEY --json: %d %v %s", code, err, out)
	}

	code, out, _ = cli(t, append([]string{"dlq", "retry", "--route", "genesys", "--dry-run"}, c...)...)
	if code != 0 || !strings.HasPrefix(out, "would retry 25 dead letters\n") || !strings.Contains(out, "… and 15 more") {
		t.Errorf("dlq retry --dry-run: %d\n%s", code, out)
	}
	code, out, _ = cli(t, append([]string{"dlq", "retry", fmt.Sprint(id), "genesys/conv-key-8"}, c...)...)
	if code != 0 || !strings.HasPrefix(out, "retried 2 dead letters") {
		t.Errorf("dlq retry IDs: %d\n%s", code, out)
	}
	code, out, _ = cli(t, append([]string{"dlq", "retry", "--route", "genesys", "--json"}, c...)...)
	var res admin.RetryResult
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Retried != 23 {
		t.Errorf("dlq retry --json: %d %v %s", code, err, out)
	}
	code, out, errOut = cli(t, append([]string{"dlq", "retry", fmt.Sprint(id)}, c...)...)
	if code != 1 || !strings.Contains(out, "is not a dead letter") || !strings.Contains(errOut, "1 of 1 IDs were not dead letters") {
		t.Errorf("retrying a retried job: %d %s %s", code, out, errOut)
	}

	code, out, _ = cli(t, append([]string{"replay", "--route", "genesys", "--since", "2h", "--dry-run"}, c...)...)
	if code != 0 || !strings.HasPrefix(out, "would replay 25 events\n") {
		t.Errorf("replay --dry-run: %d\n%s", code, out)
	}
	code, out, _ = cli(t, append([]string{"replay", "--route", "genesys", "--since", "2h", "--json"}, c...)...)
	var rr admin.ReplayResult
	if err := json.Unmarshal([]byte(out), &rr); code != 0 || err != nil || rr.Skipped != 25 {
		t.Errorf("replay of queued events must skip them all: %d %v %s", code, err, out)
	}

	code, out, _ = cli(t, append([]string{"routes", "pause", "genesys"}, c...)...)
	if code != 0 || !strings.Contains(out, "paused route genesys") {
		t.Errorf("routes pause: %d %s", code, out)
	}
	code, out, _ = cli(t, append([]string{"routes", "list"}, c...)...)
	if code != 0 || !regexp.MustCompile(`genesys +paused +closed +idle/\d+ +25 `).MatchString(out) {
		t.Errorf("routes list: %d\n%s", code, out)
	}
	code, out, _ = cli(t, append([]string{"routes", "resume", "genesys"}, c...)...)
	if code != 0 || !strings.Contains(out, "resumed route genesys") {
		t.Errorf("routes resume: %d %s", code, out)
	}
	code, out, _ = cli(t, append([]string{"routes", "list", "--json"}, c...)...)
	var routes []admin.RouteStatus
	if err := json.Unmarshal([]byte(out), &routes); code != 0 || err != nil || len(routes) != 1 || routes[0].Paused || routes[0].Backlog.Available != 25 {
		t.Errorf("routes list --json: %d %v %s", code, err, out)
	}

	code, out, _ = cli(t, append([]string{"stats"}, c...)...)
	if code != 0 || !strings.Contains(out, "events_retained") || !strings.Contains(out, "dead letters: 0") {
		t.Errorf("stats: %d\n%s", code, out)
	}
	code, out, _ = cli(t, append([]string{"stats", "--exact", "--json"}, c...)...)
	var st store.Stats
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || !st.Exact || st.EventsRows != 25 || st.OldestEvent == nil {
		t.Errorf("stats --exact --json: %d %v %s", code, err, out)
	}

	for _, bad := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq"}, 2, "use list, show or retry"},
		{[]string{"dlq", "show"}, 2, "takes one ID"},
		{[]string{"dlq", "show", "nonsense"}, 2, "neither a job id"},
		{[]string{"dlq", "retry"}, 2, "needs IDs"},
		{[]string{"dlq", "retry", "1", "--route", "genesys"}, 2, "not both"},
		{[]string{"dlq", "list", "--since", "yesterday"}, 2, "is not a time"},
		{[]string{"replay", "--route", "genesys"}, 2, "needs --route R and --since T"},
		{[]string{"replay", "--route", "nope", "--since", "1h"}, 1, `no route named "nope"`},
		{[]string{"replay", "--resume", "no-such-replay"}, 1, `no replay "no-such-replay"`},
		{[]string{"dlq", "retry", "--resume", "x", "--route", "genesys"}, 2, "the cursor holds the filter"},
		{[]string{"dlq", "retry", "--resume", "x"}, 2, "is not a retry cursor"},
		{[]string{"routes", "pause"}, 2, "takes one route name"},
		{[]string{"routes", "pause", "nope"}, 1, `no route named "nope"`},
	} {
		code, _, errOut := cli(t, append(bad.args, c...)...)
		if code != bad.code || !strings.Contains(errOut, bad.want) {
			t.Errorf("outbox %v: exit %d (want %d), stderr %q (want %q)", bad.args, code, bad.code, errOut, bad.want)
		}
	}
}

// TestBulkRetryInterruptedAndRerun retries 10,000 dead letters, interrupts
// the run halfway, resumes it with its cursor, and then lets the workers
// deliver: every event reaches the target exactly once.
func TestBulkRetryInterruptedAndRerun(t *testing.T) {
	const n = 10000
	rec := newRecorder(t)
	b := setupCLI(t, rec.URL+"/hook")
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "bulk-", N: n, Error: "target answered 500 Internal Server Error after 1ms"})
	cfg, err := config.Load(b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	svc, closeDB, err := openAdmin(ctx, b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDB()
	f := outbox.DeadLetterFilter{Route: "genesys"}
	first, err := svc.RetryDeadLetters(ctx, admin.RetryRequest{Filter: &f, Progress: func(done, total int64) {
		if done >= n/2 {
			cancel() // Ctrl-C halfway
		}
	}})
	if err == nil || first.NextCursor == "" || !strings.Contains(err.Error(), "outbox dlq retry --resume "+first.NextCursor) {
		t.Fatalf("interrupted run: err %v", err)
	}
	if first.Retried < n/2 || first.Retried >= n {
		t.Fatalf("interrupted run retried %d, want about half of %d", first.Retried, n)
	}
	t.Logf("first run retried %d of %d before the interrupt", first.Retried, n)

	// The rest, resumed through the CLI with the cursor, with progress
	// lines on a non-terminal.
	code, out, errOut := cli(t, "dlq", "retry", "--resume", first.NextCursor, "--config", b.cfgPath)
	if code != 0 || out != fmt.Sprintf("retried %d dead letters\n", n-first.Retried)+sampleLines(out) {
		t.Fatalf("re-run: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, fmt.Sprintf("retried %d of %d dead letters (100%%)", n-first.Retried, n-first.Retried)) {
		t.Errorf("no progress lines on stderr: %q", errOut)
	}
	var dead int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil || dead != 0 {
		t.Fatalf("%d dead letters remain (%v)", dead, err)
	}

	// Now the workers deliver everything, once.
	cfg.Routes[0].Concurrency = 50
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	}()
	rec.waitFor(t, n, 3*time.Minute)
	time.Sleep(time.Second)
	seen := map[string]int{}
	for _, d := range rec.deliveries() {
		seen[d.header.Get("X-Outbox-Key")]++
	}
	if len(seen) != n {
		t.Errorf("target saw %d distinct keys, want %d", len(seen), n)
	}
	for key, times := range seen {
		if times != 1 {
			t.Errorf("key %s delivered %d times", key, times)
		}
	}
}

// sampleLines returns the dry-run style sample lines after the first line,
// so a test can compare the first line exactly.
func sampleLines(out string) string {
	_, rest, _ := strings.Cut(out, "\n")
	return rest
}

// TestReplayAfterJobRowsCleaned delivers events, deletes their job rows as
// River's cleaner does after a day, and replays them: the target gets them
// again with the same X-Outbox-Key.
func TestReplayAfterJobRowsCleaned(t *testing.T) {
	rec := newRecorder(t)
	b := setupCLI(t, rec.URL+"/hook")
	cfg, err := config.Load(b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	}()
	base := "http://" + m.Addr()
	for i := range 3 {
		if status, raw := postWebhook(t, base, fmt.Appendf(nil, `{"id":"lost-%d"}`, i)); status != 200 {
			t.Fatalf("post: %d %s", status, raw)
		}
	}
	rec.waitFor(t, 3, 15*time.Second)
	if _, err := b.pool.Exec(context.Background(), `DELETE FROM river_job`); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, "replay", "--route", "genesys", "--since", "10m", "--config", b.cfgPath)
	if code != 0 || !strings.HasPrefix(out, "replayed 3 events: 3 new deliveries") {
		t.Fatalf("replay: %d\n%s%s", code, out, errOut)
	}
	got := rec.waitFor(t, 6, 15*time.Second)
	keys := map[string]int{}
	for _, d := range got {
		keys[d.header.Get("X-Outbox-Key")]++
	}
	for i := range 3 {
		if k := fmt.Sprintf("lost-%d", i); keys[k] != 2 {
			t.Errorf("%s delivered %d times, want 2 (original and replay, same key)", k, keys[k])
		}
	}
}

// TestPauseSurvivesRestartAndQueueCleaner pauses a route through the admin
// API, restarts serve, and deletes River's queue row as its cleaner does
// after a day idle: the route stays paused across both, intake goes on, and
// resume delivers the backlog.
func TestPauseSurvivesRestartAndQueueCleaner(t *testing.T) {
	rec := newRecorder(t)
	b := setupCLI(t, rec.URL+"/hook")
	cfg, err := config.Load(b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *Main {
		m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if err := m.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return m
	}
	stop := func(m *Main) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Error(err)
		}
	}
	adminPost := func(base, path string) int {
		req, _ := http.NewRequest("POST", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	m := start()
	if code := adminPost("http://"+m.Addr(), "/admin/v1/routes/genesys/pause"); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	stop(m)

	// River's queue cleaner would delete the row of a queue idle for 24h.
	if _, err := b.pool.Exec(context.Background(), `DELETE FROM river_queue`); err != nil {
		t.Fatal(err)
	}
	m = start()
	defer func() { stop(m) }()
	base := "http://" + m.Addr()
	for i := range 5 {
		if status, raw := postWebhook(t, base, fmt.Appendf(nil, `{"id":"paused-%d"}`, i)); status != 200 {
			t.Fatalf("intake while paused: %d %s", status, raw)
		}
	}
	time.Sleep(2 * time.Second)
	if n := len(rec.deliveries()); n != 0 {
		t.Fatalf("a paused route delivered %d events after a restart", n)
	}
	code, out, _ := cli(t, "routes", "list", "--config", b.cfgPath)
	if code != 0 || !regexp.MustCompile(`genesys +paused +closed +\S+ +5 `).MatchString(out) {
		t.Errorf("routes list while paused:\n%s", out)
	}
	if code := adminPost(base, "/admin/v1/routes/genesys/resume"); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	rec.waitFor(t, 5, 15*time.Second)
}
