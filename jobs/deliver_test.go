package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// target is a real HTTP server that records what it receives and answers
// with a scripted handler.
type target struct {
	*httptest.Server
	mu       sync.Mutex
	received []received
}

type received struct {
	header http.Header
	body   []byte
}

func newTarget(t *testing.T, answer http.HandlerFunc) *target {
	t.Helper()
	tg := &target{}
	tg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		tg.mu.Lock()
		tg.received = append(tg.received, received{header: r.Header.Clone(), body: body})
		tg.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) requests() []received {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return slices.Clone(tg.received)
}

type bundle struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	intake *store.Intake
	limits *jobs.Limits
	logs   *logBuffer
}

// logBuffer collects what the delivery worker logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// withDeps gives opts the completer and the fleet limits a client needs,
// started now and closed at the test's end, after the client (cleanups
// run last registered first, so register the client's after this).
func withDeps(t testing.TB, st *store.Store, cfg *config.Config, opts *jobs.ClientOptions) {
	t.Helper()
	opts.Completer = jobs.NewCompleter(st, 0)
	opts.Limits = jobs.NewLimits(st, cfg, opts.Logger)
	opts.Limits.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = opts.Limits.Stop(ctx)
		opts.Completer.Close()
	})
}

// setup runs a real River client with the delivery worker against a fresh
// database, for one route named "r" configured by routeYAML.
func setup(t *testing.T, targetURL, routeYAML string) *bundle {
	t.Helper()
	return setupTop(t, targetURL, routeYAML, "")
}

// setupTop is setup with extra top-level config, and options for the
// River client.
func setupTop(t *testing.T, targetURL, routeYAML, top string, options ...func(*jobs.ClientOptions)) *bundle {
	t.Helper()
	pool, _ := testdb.Pool(t)
	doc := fmt.Sprintf(`
database_url: postgres://unused/db
disable_admin: true
%s
routes:
  - name: r
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: %q, timeout: 2s, headers: {Authorization: Bearer internal-token}}
%s`, top, targetURL, routeYAML)
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	riverLogger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.New(pool)
	opts := jobs.ClientOptions{Logger: logger, RiverLogger: riverLogger}
	withDeps(t, st, cfg, &opts)
	for _, o := range options {
		o(&opts)
	}
	client, err := jobs.NewClient(pool, st, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = client.Stop(stopCtx)
		cancel()
	})
	return &bundle{pool: pool, client: client, intake: store.NewIntake(st, client), limits: opts.Limits, logs: logs}
}

func (b *bundle) accept(t *testing.T, body string, maxAttempts int) outbox.Accepted {
	t.Helper()
	var doc struct{ ID string }
	_ = json.Unmarshal([]byte(body), &doc)
	res, err := b.intake.Accept(context.Background(), &outbox.NewEvent{
		Route: "r", Key: doc.ID, ContentType: "application/json; charset=utf-8", Headers: http.Header{}, Body: []byte(body), MaxAttempts: maxAttempts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitJob polls the job until done says so, and returns it.
func (b *bundle) waitJob(t *testing.T, id int64, timeout time.Duration, done func(*rivertype.JobRow) bool) *rivertype.JobRow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		job, err := b.client.JobGet(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if done(job) {
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still %s after attempt %d (errors %v)", id, job.State, job.Attempt, job.Errors)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func afterFirstAttempt(job *rivertype.JobRow) bool {
	switch job.State {
	case rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded, rivertype.JobStateRetryable:
		return true
	case rivertype.JobStateScheduled:
		return job.Attempt > 0 || job.Metadata != nil && bytes.Contains(job.Metadata, []byte("snoozes"))
	}
	return false
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestDeliveryOutcomes covers each way a target can answer, and checks what
// the job looks like after the first attempt.
func TestDeliveryOutcomes(t *testing.T) {
	t.Parallel()
	status := func(code int, header ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			for i := 0; i+1 < len(header); i += 2 {
				w.Header().Set(header[i], header[i+1])
			}
			w.WriteHeader(code)
			fmt.Fprint(w, "target says no")
		}
	}
	const backoff = `    retry: {initial_backoff: 10s, max_backoff: 20s, max_attempts: 5}`
	cases := []struct {
		name   string
		answer http.HandlerFunc
		url    string // overrides the target's URL
		route  string
		// expectations after the first attempt
		state       rivertype.JobState
		attempt     int
		errContains string
		// the next attempt is due this far from the first attempt's start
		dueMin, dueMax time.Duration
	}{
		{name: "200 delivered", answer: status(200), state: rivertype.JobStateCompleted, attempt: 1},
		{name: "204 delivered", answer: status(204), state: rivertype.JobStateCompleted, attempt: 1},
		{name: "500 retries with backoff", answer: status(500), state: rivertype.JobStateRetryable, attempt: 1,
			errContains: "target answered 500 Internal Server Error after", dueMin: 9 * time.Second, dueMax: 11 * time.Second},
		{name: "500 error carries the body", answer: status(500), state: rivertype.JobStateRetryable, attempt: 1,
			errContains: ": target says no"},
		{name: "503 with Retry-After snoozes without an attempt", answer: status(503, "Retry-After", "15"), state: rivertype.JobStateScheduled, attempt: 0,
			dueMin: 14 * time.Second, dueMax: 16 * time.Second},
		{name: "429 with an HTTP-date Retry-After snoozes", answer: func(w http.ResponseWriter, r *http.Request) {
			status(429, "Retry-After", time.Now().Add(12*time.Second).UTC().Format(http.TimeFormat))(w, r)
		}, state: rivertype.JobStateScheduled, attempt: 0, dueMin: 10 * time.Second, dueMax: 13 * time.Second},
		{name: "Retry-After is capped at max_backoff", answer: status(503, "Retry-After", "3600"), state: rivertype.JobStateScheduled, attempt: 0,
			dueMin: 19 * time.Second, dueMax: 21 * time.Second},
		{name: "a Retry-After too large for any clock is capped at max_backoff", answer: status(503, "Retry-After", "99999999999999999999"),
			state: rivertype.JobStateScheduled, attempt: 0, dueMin: 19 * time.Second, dueMax: 21 * time.Second},
		{name: "429 without Retry-After retries", answer: status(429), state: rivertype.JobStateRetryable, attempt: 1,
			errContains: "target answered 429 Too Many Requests", dueMin: 9 * time.Second, dueMax: 11 * time.Second},
		{name: "503 without Retry-After retries", answer: status(503), state: rivertype.JobStateRetryable, attempt: 1,
			errContains: "target answered 503 Service Unavailable"},
		{name: "408 retries", answer: status(408), state: rivertype.JobStateRetryable, attempt: 1, errContains: "408 Request Timeout"},
		{name: "425 retries", answer: status(425), state: rivertype.JobStateRetryable, attempt: 1, errContains: "425 Too Early"},
		{name: "410 is permanent", answer: status(410), state: rivertype.JobStateCancelled, attempt: 1,
			errContains: "target answered 410 Gone after"},
		{name: "400 is permanent", answer: status(400), state: rivertype.JobStateCancelled, attempt: 1, errContains: "400 Bad Request"},
		{name: "redirect is permanent", answer: status(301, "Location", "http://elsewhere/"), state: rivertype.JobStateCancelled, attempt: 1,
			errContains: "does not follow redirects"},
		{name: "timeout retries", answer: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}, route: "    retry: {initial_backoff: 10s}\n", state: rivertype.JobStateRetryable, attempt: 1,
			// River stamps the error with the attempt's start: add the 2s timeout.
			errContains: "no answer within 2s", dueMin: 11 * time.Second, dueMax: 13500 * time.Millisecond},
		{name: "refused connection retries", url: "http://" + closedPort(t) + "/x", state: rivertype.JobStateRetryable, attempt: 1,
			errContains: "connection refused by 127.0.0.1:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			answer := c.answer
			if answer == nil {
				answer = status(200)
			}
			tg := newTarget(t, answer)
			url := tg.URL + "/hook"
			if c.url != "" {
				url = c.url
			}
			route := c.route
			if route == "" {
				route = backoff
			}
			b := setup(t, url, route)
			body := `{"id":"evt-1","conversationId":"c-1"}`
			res := b.accept(t, body, 5)
			job := b.waitJob(t, res.JobID, 15*time.Second, afterFirstAttempt)

			if job.State != c.state || job.Attempt != c.attempt {
				t.Fatalf("state %s attempt %d, want %s attempt %d (errors %+v)", job.State, job.Attempt, c.state, c.attempt, job.Errors)
			}
			if c.errContains != "" {
				if len(job.Errors) != 1 || !strings.Contains(job.Errors[0].Error, c.errContains) {
					t.Fatalf("errors %+v, want one containing %q", job.Errors, c.errContains)
				}
			} else if c.state != rivertype.JobStateRetryable && len(job.Errors) != 0 {
				t.Errorf("errors %+v, want none", job.Errors)
			}
			if c.dueMax > 0 {
				from := time.Now()
				if len(job.Errors) > 0 {
					from = job.Errors[0].At
				} else if job.AttemptedAt != nil {
					from = *job.AttemptedAt
				}
				due := job.ScheduledAt.Sub(from)
				// River stamps the error at the attempt's start, but
				// NextRetry runs when Work returns, a little later on a
				// busy machine: allow for that, far less than a jitter
				// beyond ±10% would add.
				const workSlack = 300 * time.Millisecond
				if due < c.dueMin || due > c.dueMax+workSlack {
					t.Errorf("next attempt due in %s, want between %s and %s", due, c.dueMin, c.dueMax)
				}
			}
			if c.state == rivertype.JobStateCompleted {
				var deliveredAttempts *int32
				if err := b.pool.QueryRow(context.Background(), `SELECT delivery_attempts FROM events WHERE id = $1 AND delivered_at IS NOT NULL`, res.EventID).Scan(&deliveredAttempts); err != nil {
					t.Fatalf("event not marked delivered: %v", err)
				}
				reqs := tg.requests()
				if len(reqs) != 1 {
					t.Fatalf("target got %d requests, want 1", len(reqs))
				}
				r := reqs[0]
				if string(r.body) != body {
					t.Errorf("target got body %q, want the stored bytes", r.body)
				}
				for name, want := range map[string]string{
					"Content-Type": "application/json; charset=utf-8", "X-Outbox-Route": "r", "X-Outbox-Key": "evt-1",
					"X-Outbox-Attempt": "1", "Authorization": "Bearer internal-token",
				} {
					if got := r.header.Get(name); got != want {
						t.Errorf("delivery header %s = %q, want %q", name, got, want)
					}
				}
			}
		})
	}
}

// TestDeadLetterAfterMaxAttempts exhausts the attempts and finds the event
// in the dead_letters view, with its error and a queryable payload.
func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database is down", http.StatusInternalServerError)
	})
	b := setup(t, tg.URL, "    retry: {initial_backoff: 50ms, max_backoff: 100ms, max_attempts: 3}")
	res := b.accept(t, `{"id":"dead-1","conversationId":"conv-dead"}`, 3)
	b.waitJob(t, res.JobID, 20*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateDiscarded })

	var (
		eventID, jobID        int64
		route, key, state     string
		attempts, maxAttempts int
		lastError             string
		errorsJSON            []byte
		failedAt              *time.Time
	)
	err := b.pool.QueryRow(context.Background(), `
		SELECT event_id, route, key, job_id, state, attempts, max_attempts, last_error, errors, failed_at
		FROM dead_letters WHERE payload->>'conversationId' = 'conv-dead'`).
		Scan(&eventID, &route, &key, &jobID, &state, &attempts, &maxAttempts, &lastError, &errorsJSON, &failedAt)
	if err != nil {
		t.Fatalf("dead letter not found by payload: %v", err)
	}
	if eventID != res.EventID || jobID != res.JobID || route != "r" || key != "dead-1" || state != "discarded" || attempts != 3 || maxAttempts != 3 || failedAt == nil {
		t.Errorf("dead letter = event %d job %d %s/%s %s %d/%d failed_at %v", eventID, jobID, route, key, state, attempts, maxAttempts, failedAt)
	}
	if !strings.HasPrefix(lastError, "target answered 500 Internal Server Error after ") || !strings.HasSuffix(lastError, ": database is down") {
		t.Errorf("last_error = %q", lastError)
	}
	var errs []struct {
		Attempt int    `json:"attempt"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal(errorsJSON, &errs); err != nil || len(errs) != 3 || errs[2].Attempt != 3 {
		t.Errorf("errors = %s (%v)", errorsJSON, err)
	}
	attemptsSeen := []string{}
	for _, r := range tg.requests() {
		attemptsSeen = append(attemptsSeen, r.header.Get("X-Outbox-Attempt"))
	}
	if !slices.Equal(attemptsSeen, []string{"1", "2", "3"}) {
		t.Errorf("target saw X-Outbox-Attempt %v, want 1, 2, 3", attemptsSeen)
	}
}

// TestGiveUpAfterEndsSnoozes keeps answering 503 with a long Retry-After:
// snoozes use no attempts, but the event still becomes a dead letter at
// give_up_after.
func TestGiveUpAfterEndsSnoozes(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	b := setup(t, tg.URL, "    retry: {give_up_after: 1500ms, initial_backoff: 1s, max_backoff: 1h}")
	res := b.accept(t, `{"id":"snoozy"}`, 5)
	job := b.waitJob(t, res.JobID, 15*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCancelled })
	last := job.Errors[len(job.Errors)-1].Error
	if !strings.Contains(last, "gave up: not delivered within give_up_after (1.5s)") || !strings.Contains(last, "503 Service Unavailable") {
		t.Errorf("last error = %q", last)
	}
	if n := len(tg.requests()); n != 2 {
		t.Errorf("target got %d requests, want 2 (one snoozed until the deadline, one at it)", n)
	}
	var dead int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letters WHERE key = 'snoozy' AND state = 'cancelled'`).Scan(&dead); err != nil || dead != 1 {
		t.Errorf("dead letters for snoozy = %d (%v), want 1", dead, err)
	}
}

func TestMissingEventIsCancelled(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) {})
	b := setup(t, tg.URL, "")
	job, err := b.client.Insert(context.Background(), outbox.DeliverArgs{EventID: 999999, Route: "r", Key: "ghost"}, &river.InsertOpts{Queue: "r"})
	if err != nil {
		t.Fatal(err)
	}
	got := b.waitJob(t, job.Job.ID, 10*time.Second, afterFirstAttempt)
	if got.State != rivertype.JobStateCancelled || !strings.Contains(got.Errors[0].Error, "event 999999 is no longer stored") {
		t.Errorf("state %s errors %+v", got.State, got.Errors)
	}
	if len(tg.requests()) != 0 {
		t.Errorf("the target was called for an event that does not exist")
	}
}

// TestConcurrencyCapsRequestsInFlight: River runs WorkersPerSlot workers
// per slot, but the target never sees more than the route's concurrency
// at once, and every event is delivered.
func TestConcurrencyCapsRequestsInFlight(t *testing.T) {
	t.Parallel()
	var inFlight, peak atomic.Int32
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
		inFlight.Add(-1)
	})
	b := setup(t, tg.URL, "    concurrency: 3")
	const n = 40
	for i := range n {
		b.accept(t, fmt.Sprintf(`{"id":"c-%d"}`, i), 5)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(tg.requests()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delivered", len(tg.requests()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("the target saw %d requests at once; concurrency is 3", p)
	}
}
