package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// convTarget is an internal service that needs each conversation's events
// in order. Events are keyed CONV-NNN; the conversation is X-Outbox-Route
// and CONV. On every request it checks that the events before it were all
// acknowledged (or, where allowed, failed for good), and it counts requests
// of one conversation that overlap.
type convTarget struct {
	*httptest.Server
	// answer decides the status of a request; nil answers 200.
	answer atomic.Pointer[func(conv string, n int) int]

	mu         sync.Mutex
	acked      map[string][]int        // conversation -> events acknowledged, in order
	failed     map[string]map[int]bool // conversation -> events refused with a 4xx
	inflight   map[string]int
	overlaps   int
	violations []string
}

func newConvTarget(t *testing.T) *convTarget {
	t.Helper()
	ct := &convTarget{}
	ct.reset()
	ct.Server = httptest.NewServer(http.HandlerFunc(ct.serve))
	t.Cleanup(ct.Close)
	return ct
}

// reset forgets what was received, for a second round (a replay).
func (ct *convTarget) reset() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.acked, ct.failed, ct.inflight = map[string][]int{}, map[string]map[int]bool{}, map[string]int{}
}

func (ct *convTarget) setAnswer(f func(conv string, n int) int) { ct.answer.Store(&f) }

func splitKey(key string) (string, int) {
	i := strings.LastIndexByte(key, '-')
	n, _ := strconv.Atoi(key[i+1:])
	return key[:i], n
}

func (ct *convTarget) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	name, n := splitKey(r.Header.Get("X-Outbox-Key"))
	conv := r.Header.Get("X-Outbox-Route") + "/" + name
	ct.mu.Lock()
	ct.inflight[conv]++
	if ct.inflight[conv] > 1 {
		ct.overlaps++
		ct.violations = append(ct.violations, fmt.Sprintf("%s-%03d arrived while another event of %s was in flight", conv, n, conv))
	}
	done := map[int]bool{}
	for _, m := range ct.acked[conv] {
		done[m] = true
	}
	for m := range n {
		if !done[m] && !ct.failed[conv][m] {
			ct.violations = append(ct.violations, fmt.Sprintf("%s-%03d arrived before %s-%03d was delivered", conv, n, conv, m))
			break
		}
	}
	ct.mu.Unlock()

	status := http.StatusOK
	if f := ct.answer.Load(); f != nil {
		status = (*f)(conv, n)
	}
	time.Sleep(2 * time.Millisecond) // a little work, so overlaps would show

	ct.mu.Lock()
	ct.inflight[conv]--
	switch {
	case status < 300:
		if done[n] {
			ct.violations = append(ct.violations, fmt.Sprintf("%s-%03d delivered twice", conv, n))
		}
		ct.acked[conv] = append(ct.acked[conv], n)
	case status < 500:
		if ct.failed[conv] == nil {
			ct.failed[conv] = map[int]bool{}
		}
		ct.failed[conv][n] = true
	}
	ct.mu.Unlock()
	w.WriteHeader(status)
}

// ackedOf returns what conv had acknowledged.
func (ct *convTarget) ackedOf(conv string) []int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return slices.Clone(ct.acked[conv])
}

func (ct *convTarget) check(t *testing.T) {
	t.Helper()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if len(ct.violations) > 0 {
		t.Errorf("%d ordering violations (overlaps %d), e.g.:\n  %s", len(ct.violations), ct.overlaps,
			strings.Join(ct.violations[:min(10, len(ct.violations))], "\n  "))
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

const orderedDoc = `
listen: "127.0.0.1:0"
database_url: %q
admin_token: ` + testAdminToken + `
shutdown_timeout: 10s
routes:
  - name: conv
    auth: {none: true}
    idempotency_key: [{json: /id}]
    ordering: {key: [{json: /conversationId}]}
    target: {url: "%[2]s/conv", timeout: 5s}
    retry: {initial_backoff: 100ms, max_backoff: 400ms, max_attempts: 1000}
    concurrency: 8
    circuit_breaker: {failures: 100000}
  - name: blocking
    auth: {none: true}
    idempotency_key: [{json: /id}]
    ordering: {key: [{json: /conversationId}], on_dead_letter: block}
    target: {url: "%[2]s/blocking", timeout: 5s}
    retry: {initial_backoff: 100ms, max_backoff: 400ms, max_attempts: 1000}
    concurrency: 8
    circuit_breaker: {failures: 100000}
`

// orderedReplicas starts n replicas of the real serve wiring on one
// database, with the two ordered routes of orderedDoc, and returns their
// base URLs, a pool, and the config file's path for the CLI.
func orderedReplicas(t *testing.T, n int, target string) ([]string, *pgxpool.Pool, string) {
	t.Helper()
	pool, dbURL := testdb.Pool(t)
	path := filepath.Join(t.TempDir(), "outbox.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, orderedDoc, dbURL, target), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for range n {
		m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), StatsInterval: 100 * time.Millisecond}
		bases = append(bases, startMain(t, m))
	}
	return bases, pool, path
}

// sendConversations posts each conversation's events in turn, each after
// the previous one was acknowledged (so commit order is the event order),
// the conversations concurrently, to the replicas in turn.
func sendConversations(t *testing.T, bases []string, route string, convs []string, events int) {
	t.Helper()
	var wg sync.WaitGroup
	for c, conv := range convs {
		wg.Go(func() {
			for n := range events {
				body := fmt.Appendf(nil, `{"id":"%s-%03d","conversationId":%q,"n":%d}`, conv, n, conv, n)
				resp, err := http.Post(bases[(c+n)%len(bases)]+"/webhooks/"+route, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(raw), `"accepted"`) {
					t.Errorf("%s-%03d: %d %s", conv, n, resp.StatusCode, raw)
					return
				}
			}
		})
	}
	wg.Wait()
}

func adminDo(t *testing.T, method, url string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, raw)
		}
	}
	if resp.StatusCode != 200 {
		t.Logf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// TestOrderedConversations delivers interleaved conversations through two
// replicas while one conversation's event fails again and again, one's
// becomes a dead letter (on_dead_letter: continue), and two's become dead
// letters on a route with on_dead_letter: block, one retried by the
// operator, one released. Each conversation's events reach the target
// once each, in order, never two at once, none before its predecessor was
// delivered; and only the conversations with a failing event wait: the
// failing event succeeds only once every other conversation is through.
func TestOrderedConversations(t *testing.T) {
	t.Parallel()
	const events = 12
	ct := newConvTarget(t)
	bases, pool, cfgPath := orderedReplicas(t, 2, ct.URL)
	var others []string
	for i := range 16 {
		others = append(others, fmt.Sprintf("ok%02d", i))
	}
	othersDone := func() bool {
		for _, c := range others {
			if len(ct.ackedOf("conv/"+c)) < events {
				return false
			}
		}
		return true
	}
	var allowBlocked atomic.Bool
	ct.setAnswer(func(conv string, n int) int {
		switch {
		case conv == "conv/fail" && n == 3 && !othersDone():
			return http.StatusInternalServerError // retried until the others are through
		case conv == "conv/dead" && n == 2:
			return http.StatusUnprocessableEntity // a dead letter; the conversation goes on
		case (conv == "blocking/retried" || conv == "blocking/released") && n == 2 && !allowBlocked.Load():
			return http.StatusUnprocessableEntity // a dead letter that blocks the conversation
		}
		return http.StatusOK
	})
	var wg sync.WaitGroup
	wg.Go(func() { sendConversations(t, bases, "conv", append([]string{"fail", "dead"}, others...), events) })
	wg.Go(func() { sendConversations(t, bases, "blocking", []string{"retried", "released"}, events) })
	wg.Wait()

	waitFor(t, "every conversation of route conv to be delivered", func() bool {
		return othersDone() && len(ct.ackedOf("conv/fail")) == events && len(ct.ackedOf("conv/dead")) == events-1
	})
	for _, c := range append([]string{"fail"}, others...) {
		if got := ct.ackedOf("conv/" + c); !slices.Equal(got, seq(0, events)) {
			t.Errorf("conv/%s delivered %v, want %v", c, got, seq(0, events))
		}
	}
	if got, want := ct.ackedOf("conv/dead"), append(seq(0, 2), seq(3, events)...); !slices.Equal(got, want) {
		t.Errorf("conv/dead delivered %v, want %v (event 2 a dead letter)", got, want)
	}

	// On the blocking route, both conversations stop at their dead letter.
	var page admin.BlockedKeysPage
	waitFor(t, "two blocked keys", func() bool {
		page = admin.BlockedKeysPage{}
		return adminDo(t, http.MethodGet, bases[0]+"/admin/v1/routes/blocking/blocked-keys", nil, &page) == 200 && len(page.Keys) == 2
	})
	heads := map[string]*outbox.KeyHead{}
	for _, k := range page.Keys {
		if k.Reason != outbox.BlockedByDeadLetter || k.Head == nil || k.Waiting != events-3 || k.Head.Key != k.OrderingKey+"-002" {
			t.Errorf("blocked key %+v (head %+v), want held by its event 2 with %d waiting", k, k.Head, events-3)
			continue
		}
		heads[k.OrderingKey] = k.Head
	}
	for _, c := range []string{"retried", "released"} {
		if got := ct.ackedOf("blocking/" + c); !slices.Equal(got, seq(0, 2)) {
			t.Errorf("blocking/%s delivered %v before an operator acted, want [0 1]", c, got)
		}
	}
	var routes struct{ Routes []admin.RouteStatus }
	adminDo(t, http.MethodGet, bases[1]+"/admin/v1/routes", nil, &routes)
	for _, r := range routes.Routes {
		if r.Name == "blocking" && (r.Ordering == nil || r.Ordering.BlockedKeys != 2 || r.Ordering.ByReason.DeadLetter != 2 || r.Backlog.Waiting != 2*(events-3)) {
			t.Errorf("routes listing of blocking: %+v %+v", r.Ordering, r.Backlog)
		}
	}
	// The same in /metrics and the CLI.
	waitFor(t, "the blocked-keys gauge", func() bool {
		resp, err := http.Get(bases[0] + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(raw), `outbox_ordering_blocked_keys{reason="dead_letter",route="blocking"} 2`) &&
			strings.Contains(string(raw), `outbox_ordering_blocked_keys{reason="dead_letter",route="conv"} 0`)
	})
	code, out, _ := cli(t, "ordering", "blocked", "--route", "blocking", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "released      dead_letter  9") || !strings.Contains(out, "retried-002") || !strings.Contains(out, "422 Unprocessable Entity") || strings.Contains(out, "JobCancelError") {
		t.Errorf("ordering blocked: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "routes", "list", "--config", cfgPath)
	if code != 0 || !regexp.MustCompile(`(?m)^blocking +active +closed +\S+ +0 +0 +0 +0 +18 +2 +2 `).MatchString(out) {
		t.Errorf("routes list: %d\n%s", code, out)
	}
	if code, _, errOut := cli(t, "ordering", "blocked", "--route", "nope", "--config", cfgPath); code != 1 || !strings.Contains(errOut, `no route named "nope"`) {
		t.Errorf("ordering blocked of an unknown route: %d %s", code, errOut)
	}
	if t.Failed() {
		t.FailNow()
	}
	// The operator retries one head (it goes first, then the rest) and
	// releases the other key (its head stays a dead letter).
	allowBlocked.Store(true)
	if code := adminDo(t, http.MethodPost, bases[0]+"/admin/v1/dead-letters/retry", map[string]any{"job_ids": []int64{heads["retried"].JobID}}, nil); code != 200 {
		t.Fatalf("retry: %d", code)
	}
	var rel admin.ReleaseResult
	if code := adminDo(t, http.MethodPost, bases[1]+"/admin/v1/routes/blocking/blocked-keys/release", map[string]any{"keys": []string{"released"}}, &rel); code != 200 || !slices.Equal(rel.Released, []string{"released"}) {
		t.Fatalf("release: %d %+v", code, rel)
	}
	waitFor(t, "the blocking route's conversations to be delivered", func() bool {
		return len(ct.ackedOf("blocking/retried")) == events && len(ct.ackedOf("blocking/released")) == events-1
	})
	if got := ct.ackedOf("blocking/retried"); !slices.Equal(got, seq(0, events)) {
		t.Errorf("blocking/retried delivered %v, want %v", got, seq(0, events))
	}
	if got, want := ct.ackedOf("blocking/released"), append(seq(0, 2), seq(3, events)...); !slices.Equal(got, want) {
		t.Errorf("blocking/released delivered %v, want %v", got, want)
	}
	var dead int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letters WHERE key IN ('dead-002', 'released-002')`).Scan(&dead); err != nil || dead != 2 {
		t.Errorf("dead letters of the released and the continued conversation: %d, %v; want 2", dead, err)
	}
	ct.check(t)
}

// TestOrderedPauseAndReplay pauses an ordered route: nothing of any
// conversation is delivered while it is paused, and all in order after the
// resume. Then a replay of the window delivers every conversation again,
// in order.
func TestOrderedPauseAndReplay(t *testing.T) {
	t.Parallel()
	const events = 8
	ct := newConvTarget(t)
	bases, pool, _ := orderedReplicas(t, 1, ct.URL)
	start := time.Now().Add(-time.Second)
	if code := adminDo(t, http.MethodPost, bases[0]+"/admin/v1/routes/conv/pause", nil, nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	convs := []string{"a", "b", "c", "d"}
	sendConversations(t, bases, "conv", convs, events)
	// Stored, and none handed to a worker for several of River's polls.
	time.Sleep(time.Second)
	var moved int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'deliver' AND state NOT IN ('available', 'pending')`).Scan(&moved); err != nil || moved != 0 {
		t.Fatalf("%d jobs left available or pending while paused (%v)", moved, err)
	}
	if code := adminDo(t, http.MethodPost, bases[0]+"/admin/v1/routes/conv/resume", nil, nil); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	waitFor(t, "all conversations delivered after the resume", func() bool {
		for _, c := range convs {
			if len(ct.ackedOf("conv/"+c)) < events {
				return false
			}
		}
		return true
	})
	ct.check(t)

	ct.reset()
	var res admin.ReplayResult
	if code := adminDo(t, http.MethodPost, bases[0]+"/admin/v1/events/replay", map[string]any{"route": "conv", "since": start.Format(time.RFC3339Nano)}, &res); code != 200 || res.Replayed != int64(len(convs)*events) {
		t.Fatalf("replay: %d %+v", code, res)
	}
	waitFor(t, "all conversations delivered again", func() bool {
		for _, c := range convs {
			if len(ct.ackedOf("conv/"+c)) < events {
				return false
			}
		}
		return true
	})
	for _, c := range convs {
		if got := ct.ackedOf("conv/" + c); !slices.Equal(got, seq(0, events)) {
			t.Errorf("conv/%s replayed as %v, want %v", c, got, seq(0, events))
		}
	}
	ct.check(t)
}
