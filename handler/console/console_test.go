package console_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/handler"
	"github.com/webhook-outbox/webhook-outbox/handler/console"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

const adminToken = "0123456789abcdef0123456789abcdef"

const testConfig = `
database_url: postgres://unused/db
admin_token: ` + adminToken + `
routes:
  - name: genesys
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:9/genesys"}
    retry: {max_attempts: 7, give_up_after: 36h}
  - name: billing
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:9/billing"}
`

type bundle struct {
	srv  *httptest.Server
	pool *pgxpool.Pool
	logs *strings.Builder
}

// setup serves the console behind the real router and admin guard, on a
// fresh database.
func setup(t *testing.T) *bundle {
	t.Helper()
	pool, _ := testdb.Pool(t)
	cfg, err := config.Parse([]byte(testConfig), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	logs := &strings.Builder{}
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, nil))
	st := store.New(pool)
	client, err := jobs.NewInsertOnlyClient(pool, logger)
	if err != nil {
		t.Fatal(err)
	}
	intake, err := handler.NewIntake(cfg, store.NewIntake(st, client), logger)
	if err != nil {
		t.Fatal(err)
	}
	ops := admin.New(st, client, cfg)
	// genesys's circuit is open for the fleet, and a replica holds a
	// share of 3 of billing's concurrency, as the replicas record them.
	if _, _, err := st.RecordCircuitFailure(context.Background(), "genesys", store.BreakerSettings{Failures: 1, Cooldown: time.Hour}, "target answered 503"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RenewFleetLease(context.Background(), store.LeaseRequest{Route: "billing", Holder: "replica-a", Want: 3, InFlight: 2, Ceiling: 4, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	con, err := console.New(console.Options{
		Operator: ops, Reader: st, Config: cfg, AdminToken: adminToken, Logger: logger, RiverUI: handler.RiverUIPrefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler.NewRouter(handler.RouterOptions{
		Intake: intake, Readiness: st, Logger: logger, Admin: ops, AdminToken: adminToken, Console: con,
	}))
	t.Cleanup(srv.Close)
	return &bundle{srv: srv, pool: pool, logs: logs}
}

type lockedWriter struct {
	w *strings.Builder
}

var logMu = make(chan struct{}, 1)

func (l *lockedWriter) Write(p []byte) (int, error) {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return l.w.Write(p)
}

func (b *bundle) logText() string {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return b.logs.String()
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// get fetches a console page as an operator's browser does.
func (b *bundle) get(t *testing.T, path string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+path, nil)
	req.SetBasicAuth("operator", adminToken)
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// post submits a form as the console's own page does: same origin, with
// the form's token, unless edit changes the request.
func (b *bundle) post(t *testing.T, path string, form url.Values, edit func(*http.Request)) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", b.srv.URL)
	req.SetBasicAuth("operator", adminToken)
	if edit != nil {
		edit(req)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// token reads the form token from a page.
func token(t *testing.T, page string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the page has no form token:\n%s", page)
	}
	return m[1]
}

// deadLetter stores one event with the given body and headers, and a
// discarded delivery job with errs as its attempts' errors. It returns the
// job id.
func deadLetter(t *testing.T, pool *pgxpool.Pool, route, key, body, headers string, errs ...string) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `SELECT outbox_ensure_partitions(now() - interval '2 day', now() + interval '1 day', interval '1 day')`); err != nil {
		t.Fatal(err)
	}
	var id int64
	err := pool.QueryRow(ctx, `
		WITH ev AS (
			INSERT INTO events (route, key, content_type, headers, body, received_at)
			VALUES ($1, $2, 'application/json', $3::jsonb, convert_to($4, 'UTF8'), now() - interval '10 minutes')
			RETURNING id, route, key, received_at
		)
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, finalized_at, scheduled_at, created_at, errors)
		SELECT jsonb_build_object('event_id', id, 'route', route, 'key', key, 'received_at', received_at), 'deliver', $6, route, 'discarded', $6,
		       now() - interval '5 minutes', now() - interval '5 minutes', now() - interval '5 minutes', received_at,
		       (SELECT array_agg(jsonb_build_object('at', now() - interval '9 minutes' + g.n * interval '1 minute', 'attempt', g.n, 'error', g.e) ORDER BY g.n)
		        FROM unnest($5::text[]) WITH ORDINALITY AS g(e, n))
		FROM ev
		RETURNING id`, route, key, headers, body, errs, len(errs)).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func jobState(t *testing.T, pool *pgxpool.Pool, id int64) (state string, attempt, maxAttempts int) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT state::text, attempt, max_attempts FROM river_job WHERE id = $1`, id).Scan(&state, &attempt, &maxAttempts); err != nil {
		t.Fatal(err)
	}
	return state, attempt, maxAttempts
}

func wantContains(t *testing.T, page string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(page, w) {
			t.Errorf("the page does not contain %q", w)
		}
	}
}

func wantNotContains(t *testing.T, page string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(page, b) {
			t.Errorf("the page contains %q", b)
		}
	}
}

// TestPagesEscapeHostileContent stores a dead letter whose payload, header
// and error are built to break out of HTML, and checks every page that
// shows it: the text appears, escaped, and never as markup.
func TestPagesEscapeHostileContent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"id":"evil-1","name":"<script>alert(1)</script>","quote":"\"><img src=x onerror=alert(2)>","conversationId":"c-1"}`
	headers := `{"X-Evil": ["<b>bold</b>\"' onmouseover=alert(3)"], "User-Agent": ["sender/1.0"]}`
	id := deadLetter(t, b.pool, "genesys", `evil-1"><svg onload=alert(4)>`, body, headers,
		"target answered 500 Internal Server Error after 12ms: <iframe src=javascript:alert(5)>",
		"target answered 503 Service Unavailable after 1.5s: <script>alert(6)</script>")

	hostile := []string{"<script>alert", "<img src=x", "<b>bold</b>", "<svg onload", "<iframe", `" onmouseover=alert(3)`}
	pages := map[string]string{
		"list":   "/console/dead-letters",
		"detail": fmt.Sprintf("/console/dead-letters/%d", id),
		"event":  "/console/event?" + url.Values{"route": {"genesys"}, "key": {`evil-1"><svg onload=alert(4)>`}}.Encode(),
		"search": "/console/dead-letters?payload=" + url.QueryEscape("conversationId = c-1"),
		"retry":  "/console/dead-letters/retry?route=genesys",
		"events": "/console/events?route=genesys&since=1h",
	}
	for name, path := range pages {
		status, h, page := b.get(t, path)
		if status != http.StatusOK {
			t.Fatalf("%s: %s answered %d:\n%s", name, path, status, page)
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP is %q", name, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Frame-Options %q, X-Content-Type-Options %q", name, h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
		}
		wantNotContains(t, page, hostile...)
		wantContains(t, page, "evil-1&#34;&gt;&lt;svg onload=alert(4)&gt;")
	}
	_, _, detail := b.get(t, pages["detail"])
	wantContains(t, detail,
		"&lt;script&gt;alert(1)&lt;/script&gt;",         // the payload, escaped
		"&lt;b&gt;bold&lt;/b&gt;&#34;&#39; onmouseover", // the header value
		"&lt;iframe src=javascript:alert(5)&gt;",        // an attempt's error
		"X-Evil", "sender/1.0",
	)
	// Nothing but the console's own script runs: no inline script at all.
	if n := strings.Count(detail, "<script"); n != 1 || !strings.Contains(detail, `<script src="/console/static/console.js" defer></script>`) {
		t.Errorf("the detail page has %d script tags", n)
	}
}

// TestDeadLetterDetail checks what an operator reads on a dead letter's
// page: the payload pretty-printed and as stored, the attempts with status
// and duration, the give-up deadline, the Retry button, and River UI.
func TestDeadLetterDetail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"id":"k-1",  "conversationId": "conv-abc", "n": 1}`
	id := deadLetter(t, b.pool, "genesys", "k-1", body, `{"User-Agent":["genesys"]}`,
		"target answered 503 Service Unavailable after 212ms: db down",
		"no answer within 10s",
		"connection refused by 127.0.0.1:9",
		"gave up: not delivered within give_up_after (36h0m0s); last attempt: target answered 502 Bad Gateway after 1.25s: upstream")
	status, _, page := b.get(t, fmt.Sprintf("/console/dead-letters/%d", id))
	if status != http.StatusOK {
		t.Fatalf("detail answered %d:\n%s", status, page)
	}
	wantContains(t, page,
		`{&#34;id&#34;:&#34;k-1&#34;,  &#34;conversationId&#34;: &#34;conv-abc&#34;, &#34;n&#34;: 1}`, // as stored, spaces kept
		"  &#34;conversationId&#34;: &#34;conv-abc&#34;,",                                             // pretty-printed
		`<button type="submit" class="button">Retry</button>`,
		`data-confirm="Retry k-1 with a full budget (7 attempts, give up after 36h)?"`,
		fmt.Sprintf(`href="/riverui/jobs/%d"`, id),
		">503</span> Service Unavailable", "212ms",
		"10s", ">502</span> Bad Gateway", "1.25s",
		"connection refused by 127.0.0.1:9",
		"Give-up deadline", "User-Agent",
		"/console/events/",
	)
	// A job that is not a dead letter is a clean 404.
	if status, _, _ := b.get(t, "/console/dead-letters/999999"); status != http.StatusNotFound {
		t.Errorf("an unknown job answered %d, want 404", status)
	}
}

// TestRawBodyIsADownload checks that the stored bytes are served exactly,
// as an attachment the browser never renders.
func TestRawBodyIsADownload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"id":"raw-1", "html":"<script>alert(1)</script>"}`
	deadLetter(t, b.pool, "genesys", "raw-1", body, `{}`, "x")
	var eventID int64
	if err := b.pool.QueryRow(context.Background(), `SELECT id FROM events WHERE key = 'raw-1'`).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	status, h, got := b.get(t, fmt.Sprintf("/console/events/%d/body", eventID))
	if status != http.StatusOK || got != body {
		t.Fatalf("raw body answered %d %q, want 200 %q", status, got, body)
	}
	if h.Get("Content-Type") != "application/octet-stream" || !strings.HasPrefix(h.Get("Content-Disposition"), "attachment") || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("raw body headers: %v", h)
	}
}

// TestLargePayloadIsPreviewed checks that a payload larger than the
// preview is cut, says so, and links to the whole.
func TestLargePayloadIsPreviewed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	big := `{"id":"big-1","blob":"` + strings.Repeat("é", 200_000) + `"}` // 400 KB
	id := deadLetter(t, b.pool, "genesys", "big-1", big, `{}`, "x")
	status, _, page := b.get(t, fmt.Sprintf("/console/dead-letters/%d", id))
	if status != http.StatusOK {
		t.Fatalf("detail answered %d", status)
	}
	if len(page) > 200_000 {
		t.Errorf("the page is %d bytes for a 400 KB payload; want a bounded preview", len(page))
	}
	wantContains(t, page, "the first 64.0 KiB are shown", "Download raw bytes")
	wantNotContains(t, page, "Pretty-printed", "\uFFFD")
}

// TestRetryOne presses Retry: the job gets the route's full budget, the
// answer is a 303 to the event, which shows the result, and the action is
// logged with the client's address.
func TestRetryOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := deadLetter(t, b.pool, "genesys", "k-9", `{"id":"k-9"}`, `{}`, "a", "b", "c")
	_, _, page := b.get(t, fmt.Sprintf("/console/dead-letters/%d", id))
	status, h, _ := b.post(t, fmt.Sprintf("/console/dead-letters/%d/retry", id), url.Values{"csrf": {token(t, page)}}, nil)
	if status != http.StatusSeeOther {
		t.Fatalf("retry answered %d, want 303", status)
	}
	if state, attempt, maxAttempts := jobState(t, b.pool, id); state != "available" || attempt != 0 || maxAttempts != 7 {
		t.Errorf("after retry the job is %s %d/%d, want available 0/7 (the route's full budget)", state, attempt, maxAttempts)
	}
	loc := h.Get("Location")
	if !strings.HasPrefix(loc, "/console/event?") {
		t.Fatalf("retry redirected to %q", loc)
	}
	_, _, result := b.get(t, loc)
	wantContains(t, result, "Retried job", "full budget", "waiting")
	if logs := b.logText(); !strings.Contains(logs, `action="retry dead letter"`) || !strings.Contains(logs, "client=127.0.0.1") || !strings.Contains(logs, fmt.Sprintf("job_id=%d", id)) {
		t.Errorf("the retry is not logged with its client:\n%s", logs)
	}
	// A crafted flash message is not shown.
	_, _, forged := b.get(t, "/console/routes?flash=Your+session+expired&sig=abc")
	wantNotContains(t, forged, "Your session expired")
}

// TestPostsNeedTokenAndSameOrigin checks that a POST without the form's
// token, with a wrong one, from another site, or without the admin token
// changes nothing.
func TestPostsNeedTokenAndSameOrigin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := deadLetter(t, b.pool, "genesys", "k-1", `{"id":"k-1"}`, `{}`, "x")
	_, _, page := b.get(t, fmt.Sprintf("/console/dead-letters/%d", id))
	good := token(t, page)
	path := fmt.Sprintf("/console/dead-letters/%d/retry", id)
	cases := []struct {
		name string
		form url.Values
		edit func(*http.Request)
		want int
	}{
		{"no token", url.Values{}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"csrf": {"x" + good[1:]}}, nil, http.StatusForbidden},
		{"cross-site", url.Values{"csrf": {good}}, func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			r.Header.Set("Origin", "https://evil.example")
		}, http.StatusForbidden},
		{"cross-origin without Sec-Fetch-Site", url.Values{"csrf": {good}}, func(r *http.Request) {
			r.Header.Del("Sec-Fetch-Site")
			r.Header.Set("Origin", "https://evil.example")
		}, http.StatusForbidden},
		{"no admin token", url.Values{"csrf": {good}}, func(r *http.Request) { r.Header.Del("Authorization") }, http.StatusUnauthorized},
	}
	for _, c := range cases {
		status, _, _ := b.post(t, path, c.form, c.edit)
		if status != c.want {
			t.Errorf("%s: answered %d, want %d", c.name, status, c.want)
		}
		if state, _, _ := jobState(t, b.pool, id); state != "discarded" {
			t.Fatalf("%s: the job became %s", c.name, state)
		}
	}
	for _, p := range []string{"/console/routes/genesys/pause", "/console/dead-letters/retry", "/console/events/replay", "/console/event/replay"} {
		if status, _, _ := b.post(t, p, url.Values{"route": {"genesys"}, "since": {"1h"}, "key": {"k-1"}}, nil); status != http.StatusForbidden {
			t.Errorf("POST %s without a token answered %d, want 403", p, status)
		}
	}
	var paused int
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM route_pauses`).Scan(&paused)
	if paused != 0 {
		t.Error("a tokenless pause paused the route")
	}
	// Pages are behind the admin token too.
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/console/dead-letters", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("without credentials the console answered %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestDeadLettersFilterAndRetryMatching filters by route, error text and
// payload condition, pages with the cursor, and retries all that match
// after the count.
func TestDeadLettersFilterAndRetryMatching(t *testing.T) {
	t.Parallel()
	b := setup(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "g-", N: 60, Error: "target answered 503 Service Unavailable after 5ms"})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "billing", KeyPrefix: "b-", N: 3, Error: "target answered 410 Gone after 5ms", State: "cancelled"})

	_, _, page := b.get(t, "/console/dead-letters?route=genesys")
	if n := strings.Count(page, `<td class="key">`); n != 50 {
		t.Errorf("first page shows %d rows, want 50", n)
	}
	next := regexp.MustCompile(`href="(/console/dead-letters\?[^"]*cursor=[^"]+)"`).FindStringSubmatch(page)
	if next == nil {
		t.Fatal("no next page link")
	}
	_, _, page2 := b.get(t, strings.ReplaceAll(next[1], "&amp;", "&"))
	if n := strings.Count(page2, `<td class="key">`); n != 10 {
		t.Errorf("second page shows %d rows, want 10", n)
	}
	_, _, gone := b.get(t, "/console/dead-letters?error=410+gone")
	if n := strings.Count(gone, `<td class="key">`); n != 3 || !strings.Contains(gone, ">b-1<") {
		t.Errorf("error filter shows %d rows", n)
	}
	_, _, one := b.get(t, "/console/dead-letters?payload="+url.QueryEscape("$.conversationId = \"conv-42\""))
	if n := strings.Count(one, `<td class="key">`); n != 1 || !strings.Contains(one, ">g-42<") {
		t.Errorf("payload filter shows %d rows:\n%s", n, one)
	}
	if status, _, bad := b.get(t, "/console/dead-letters?payload=no-equals-sign"); status != http.StatusBadRequest || !strings.Contains(bad, "has no &#34;=&#34;") {
		t.Errorf("a bad payload condition answered %d", status)
	}

	// Retry all matching: the count first, then the retry.
	_, _, confirm := b.get(t, "/console/dead-letters/retry?route=genesys&payload="+url.QueryEscape("/n = 7"))
	wantContains(t, confirm, "<strong>1</strong> dead letter matches", "genesys: 7 attempts, give up after 36h", ">g-7<")
	status, h, _ := b.post(t, "/console/dead-letters/retry", url.Values{"csrf": {token(t, confirm)}, "route": {"genesys"}, "payload": {"/n = 7"}}, nil)
	if status != http.StatusSeeOther {
		t.Fatalf("retry all matching answered %d", status)
	}
	var retried []string
	rows, _ := b.pool.Query(context.Background(), `SELECT args->>'key' FROM river_job WHERE state = 'available'`)
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		retried = append(retried, k)
	}
	if len(retried) != 1 || retried[0] != "g-7" {
		t.Errorf("retried %v, want [g-7]", retried)
	}
	_, _, after := b.get(t, h.Get("Location"))
	wantContains(t, after, "Retried 1 dead letter with a full budget")
}

// TestOverviewAndRoutes checks the overview's numbers and chart, and
// pausing and resuming a route.
func TestOverviewAndRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "g-", N: 4, Error: "boom"})
	// Deliveries a few minutes ago, and a failed attempt of a waiting job.
	if _, err := b.pool.Exec(context.Background(), `
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, finalized_at, scheduled_at, created_at, errors)
		SELECT '{}', 'deliver', 5, 'billing', 'completed', 1, now() - interval '3 minutes', now() - interval '3 minutes', now(), now(), NULL FROM generate_series(1, 9);
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, scheduled_at, created_at, errors)
		VALUES ('{}', 'deliver', 5, 'billing', 'retryable', 1, now() - interval '2 minutes', now() + interval '1 hour', now() - interval '20 minutes',
		        ARRAY[jsonb_build_object('at', now() - interval '2 minutes', 'attempt', 1, 'error', 'x')])`); err != nil {
		t.Fatal(err)
	}
	status, _, page := b.get(t, "/console/")
	if status != http.StatusOK {
		t.Fatalf("overview answered %d:\n%s", status, page)
	}
	wantContains(t, page,
		`aria-label="Route billing over the last hour: 9 deliveries and 1 failed attempts, per minute"`,
		`aria-label="Route genesys over the last hour: 0 deliveries and 4 failed attempts, per minute"`,
		`<span class="badge breaker-open">open</span>`, // genesys, as the fleet's circuit says
		`<dd>3 of `, // billing's share held by a replica
		`href="/console/dead-letters?route=genesys">4</a>`,
	)
	if n := strings.Count(page, `class="delivered"/>`); n != 1 {
		t.Errorf("the charts have %d delivery bars, want 1 (one minute of billing)", n)
	}
	// The second look reads only the last minutes, and agrees.
	_, _, again := b.get(t, "/console/")
	wantContains(t, again, `9 deliveries and 1 failed attempts`)

	_, _, routes := b.get(t, "/console/routes")
	wantContains(t, routes, "Intake goes on; deliveries wait.", `action="/console/routes/genesys/pause"`)
	status, h, _ := b.post(t, "/console/routes/genesys/pause", url.Values{"csrf": {token(t, routes)}}, nil)
	if status != http.StatusSeeOther {
		t.Fatalf("pause answered %d", status)
	}
	_, _, paused := b.get(t, h.Get("Location"))
	wantContains(t, paused, "Route genesys is paused on every replica: intake goes on, deliveries wait", `action="/console/routes/genesys/resume"`)
	var n int
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_queue WHERE name = 'genesys' AND paused_at IS NOT NULL`).Scan(&n)
	if n != 1 {
		t.Error("the route's queue is not paused")
	}
	if status, _, _ := b.post(t, "/console/routes/genesys/resume", url.Values{"csrf": {token(t, routes)}}, nil); status != http.StatusSeeOther {
		t.Fatalf("resume answered %d", status)
	}
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_queue WHERE name = 'genesys' AND paused_at IS NOT NULL`).Scan(&n)
	if n != 0 {
		t.Error("the route's queue is still paused")
	}
	if status, _, _ := b.post(t, "/console/routes/nope/pause", url.Values{"csrf": {token(t, routes)}}, nil); status != http.StatusBadRequest {
		t.Errorf("pausing an unknown route answered %d, want 400", status)
	}
	if !strings.Contains(b.logText(), `action="pause route" client=127.0.0.1 route=genesys`) {
		t.Errorf("the pause is not logged:\n%s", b.logText())
	}
}

// TestEventsFindAndReplay finds events by key and by payload, replays one
// (a dead letter is revived with a full budget), and replays a range after
// a dry-run count.
func TestEventsFindAndReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "g-", N: 3, Error: "boom"})

	status, h, _ := b.get(t, "/console/events?key=g-2")
	if status != http.StatusSeeOther || h.Get("Location") != "/console/event?key=g-2&route=genesys" {
		t.Fatalf("finding g-2 in any route answered %d %q", status, h.Get("Location"))
	}
	_, _, ev := b.get(t, h.Get("Location"))
	wantContains(t, ev, `<span class="badge dead">dead</span>`, "conv-2", ">Replay</button>")
	if status, _, missing := b.get(t, "/console/events?route=genesys&key=nope"); status != http.StatusNotFound || !strings.Contains(missing, "No event with key") {
		t.Errorf("an unknown key answered %d", status)
	}
	_, _, found := b.get(t, "/console/events?route=genesys&payload="+url.QueryEscape("conversationId = conv-3"))
	if n := strings.Count(found, `<td class="key">`); n != 1 || !strings.Contains(found, ">g-3<") {
		t.Errorf("payload search found %d", n)
	}

	status, h, _ = b.post(t, "/console/event/replay", url.Values{"csrf": {token(t, ev)}, "route": {"genesys"}, "key": {"g-2"}}, nil)
	if status != http.StatusSeeOther {
		t.Fatalf("replay answered %d", status)
	}
	_, _, replayed := b.get(t, h.Get("Location"))
	wantContains(t, replayed, "the dead letter is queued for delivery again with a full budget", "waiting")
	var state string
	var maxAttempts int
	_ = b.pool.QueryRow(context.Background(), `SELECT state::text, max_attempts FROM river_job WHERE args->>'key' = 'g-2'`).Scan(&state, &maxAttempts)
	if state != "available" || maxAttempts != 7 {
		t.Errorf("replayed dead letter is %s with %d attempts, want available with 7", state, maxAttempts)
	}

	_, _, confirm := b.get(t, "/console/events/replay?route=genesys&since=2h")
	wantContains(t, confirm, "<strong>3</strong> events of route <strong>genesys</strong>")
	m := regexp.MustCompile(`name="since" value="([^"]+)"`).FindStringSubmatch(confirm)
	u := regexp.MustCompile(`name="until" value="([^"]+)"`).FindStringSubmatch(confirm)
	status, h, _ = b.post(t, "/console/events/replay", url.Values{"csrf": {token(t, confirm)}, "route": {"genesys"}, "since": {m[1]}, "until": {u[1]}}, nil)
	if status != http.StatusSeeOther {
		t.Fatalf("replay range answered %d", status)
	}
	_, _, done := b.get(t, h.Get("Location"))
	wantContains(t, done, "Replayed 3 events of route genesys: 0 queued again, 2 revived with a full budget, 1 skipped")
}

// TestHundredThousandDeadLetters times the pages over 100,000 dead letters.
// It asserts what the pages show, not how fast; the times are logged (go
// test -v) and reported in docs/console.md.
func TestHundredThousandDeadLetters(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 100,000 dead letters")
	}
	t.Parallel()
	b := setup(t)
	start := time.Now()
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "g-", N: 100_000, Error: "target answered 503 Service Unavailable after 5ms"})
	if _, err := b.pool.Exec(context.Background(), `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded 100,000 dead letters in %s", time.Since(start).Round(time.Millisecond))
	var id int64
	_ = b.pool.QueryRow(context.Background(), `SELECT job_id FROM dead_letters WHERE key = 'g-50000'`).Scan(&id)
	pages := []struct{ name, path, want string }{
		{"overview", "/console/", `href="/console/dead-letters?route=genesys">100,000</a>`},
		{"dead letters, first page", "/console/dead-letters", `<td class="key">`},
		{"dead letters, error filter", "/console/dead-letters?error=503", `<td class="key">`},
		{"dead letters, payload search", "/console/dead-letters?payload=" + url.QueryEscape("conversationId = conv-99990"), ">g-99990<"},
		{"dead letter detail", fmt.Sprintf("/console/dead-letters/%d", id), "conv-50000"},
		{"retry all matching, count", "/console/dead-letters/retry?route=genesys", "<strong>100,000</strong>"},
		{"routes", "/console/routes", "100,000"},
	}
	for _, p := range pages {
		t0 := time.Now()
		status, _, page := b.get(t, p.path)
		elapsed := time.Since(t0)
		if status != http.StatusOK || !strings.Contains(page, p.want) {
			t.Errorf("%s: %s answered %d without %q", p.name, p.path, status, p.want)
		}
		t.Logf("%-32s %8s", p.name, elapsed.Round(time.Millisecond))
	}
}
