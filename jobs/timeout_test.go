package jobs_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/webhook-outbox/webhook-outbox/jobs"
)

// jobTimeouts gives the delivery of the listed keys a job deadline of d.
func jobTimeouts(d time.Duration, keys ...string) func(*jobs.ClientOptions) {
	return func(o *jobs.ClientOptions) {
		jobs.SetJobTimeout(o, func(key string) time.Duration {
			for _, k := range keys {
				if k == key {
					return d
				}
			}
			return 0
		})
	}
}

// failures is the route's current run of failures on its circuit breaker.
func (b *bundle) failures(t *testing.T) int {
	t.Helper()
	st, ok := b.limits.Circuit("r")
	if !ok {
		t.Fatal("no breaker for route r")
	}
	return st.ConsecutiveFailures
}

// TestJobTimeoutIsNotAShutdownNorTheTargetsFault stages a delivery job's
// own deadline (Deliverer.Timeout) passing at each point of a delivery.
// It is logged and recorded as a timeout, never as a shutdown, and it
// never counts as a failure of the target on the circuit breaker, since
// the target never used its whole target.timeout. A target that does hang
// past target.timeout is a failure of the target.
func TestJobTimeoutIsNotAShutdownNorTheTargetsFault(t *testing.T) {
	t.Parallel()

	t.Run("while waiting for the target's answer", func(t *testing.T) {
		t.Parallel()
		tg := newTarget(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		// target.timeout is 2s; the job's deadline comes first.
		b := setupTop(t, tg.URL, "    retry: {initial_backoff: 10s}", "", jobTimeouts(300*time.Millisecond, "cut"))
		res := b.accept(t, `{"id":"cut"}`, 5)
		job := b.waitJob(t, res.JobID, 15*time.Second, afterFirstAttempt)
		if job.State != rivertype.JobStateRetryable || job.Attempt != 1 || len(job.Errors) != 1 ||
			!strings.Contains(job.Errors[0].Error, "delivery timed out: the delivery job's 300ms deadline passed while waiting for the target's answer, before target.timeout (2s)") {
			t.Fatalf("state %s attempt %d errors %+v; want a retry whose error says the job timed out", job.State, job.Attempt, job.Errors)
		}
		if n := b.failures(t); n != 0 {
			t.Errorf("the circuit breaker counts %d failures; a job deadline is not the target's failure", n)
		}
		logs := b.logs.String()
		if !strings.Contains(logs, "delivery timed out: the job's deadline passed while waiting for the target's answer") || strings.Contains(logs, "shutdown") {
			t.Errorf("the log does not report a timeout, or calls it a shutdown:\n%s", logs)
		}
	})

	t.Run("while waiting for a slot", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		var started atomic.Int32
		tg := newTarget(t, func(_ http.ResponseWriter, r *http.Request) {
			started.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		b := setupTop(t, tg.URL, "    concurrency: 1", "", jobTimeouts(300*time.Millisecond, "waits"))
		b.accept(t, `{"id":"holds-the-slot"}`, 5)
		waitFor(t, 15*time.Second, "the first delivery to hold the only slot", func() bool { return started.Load() == 1 })
		res := b.accept(t, `{"id":"waits"}`, 5)
		// A short snooze makes the job available again at once, with a
		// later scheduled_at: wait for the snooze or an error.
		job := b.waitJob(t, res.JobID, 15*time.Second, func(j *rivertype.JobRow) bool {
			return strings.Contains(string(j.Metadata), `"snoozes"`) || len(j.Errors) > 0
		})
		if job.Attempt != 0 || len(job.Errors) != 0 {
			t.Fatalf("state %s attempt %d errors %+v; want snoozed without using an attempt: nothing was sent\n%s", job.State, job.Attempt, job.Errors, b.logs.String())
		}
		if n := started.Load(); n != 1 {
			t.Errorf("the target got %d requests, want 1", n)
		}
		if n := b.failures(t); n != 0 {
			t.Errorf("the circuit breaker counts %d failures for a delivery that was never sent", n)
		}
		logs := b.logs.String()
		if !strings.Contains(logs, "delivery timed out before anything was sent, while waiting for a place under the route's concurrency limit") || strings.Contains(logs, "shutdown") {
			t.Errorf("the log does not report a timeout while waiting for a slot, or calls it a shutdown:\n%s", logs)
		}
	})

	t.Run("a target that hangs past target.timeout is a failure", func(t *testing.T) {
		t.Parallel()
		tg := newTarget(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		b := setup(t, tg.URL, "    retry: {initial_backoff: 10s}")
		res := b.accept(t, `{"id":"hangs"}`, 5)
		job := b.waitJob(t, res.JobID, 15*time.Second, afterFirstAttempt)
		if job.State != rivertype.JobStateRetryable || len(job.Errors) != 1 || !strings.Contains(job.Errors[0].Error, "no answer within 2s") {
			t.Fatalf("state %s errors %+v; want a retry: no answer within 2s", job.State, job.Errors)
		}
		if n := b.failures(t); n != 1 {
			t.Errorf("the circuit breaker counts %d failures, want 1: the target used its whole timeout", n)
		}
	})
}

// TestShutdownGivesTheAttemptBack cuts a delivery off with StopAndCancel, as a
// shutdown past its deadline does: the job goes back to the queue without
// using an attempt, the log says shutdown, and the circuit breaker counts
// nothing against the target.
func TestShutdownGivesTheAttemptBack(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	})
	b := setup(t, tg.URL, "    retry: {max_attempts: 1}")
	res := b.accept(t, `{"id":"cut-off"}`, 1)
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("the delivery never started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.client.StopAndCancel(ctx); err != nil {
		t.Fatal(err)
	}
	job, err := b.client.JobGet(context.Background(), res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if job.State != rivertype.JobStateAvailable || job.Attempt != 0 || len(job.Errors) != 0 {
		t.Errorf("after a shutdown: state %s, attempt %d, errors %v; want available, 0, none (not a dead letter)", job.State, job.Attempt, job.Errors)
	}
	if n := b.failures(t); n != 0 {
		t.Errorf("the circuit breaker counts %d failures; a shutdown is not the target's failure", n)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "delivery interrupted by shutdown while waiting for the target's answer") || strings.Contains(logs, "timed out") {
		t.Errorf("the log does not report a shutdown, or calls it a timeout:\n%s", logs)
	}
}

// TestUnrecordedDeliveryIsRecordedWithoutResending holds the event's row
// locked past the job's deadline, so the target's 2xx cannot be recorded
// in that run: the job is snoozed with its send step done, and once the
// row is free its next run records the delivery without sending again.
func TestUnrecordedDeliveryIsRecordedWithoutResending(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	// The target answers only once the test holds the event's row, so the
	// worker cannot record the delivery before the lock is taken.
	locked := make(chan struct{})
	tg := newTarget(t, func(http.ResponseWriter, *http.Request) {
		requests.Add(1)
		<-locked
	})
	var unlock sync.Once
	t.Cleanup(func() { unlock.Do(func() { close(locked) }) }) // before the target closes
	// The job's deadline is 1s, so recording gets its floor of 5s.
	b := setupTop(t, tg.URL, "", "", jobTimeouts(time.Second, "unrecorded"))
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	// Lock the event as soon as it exists; the target's 2xx waits for it.
	res := b.accept(t, `{"id":"unrecorded"}`, 5)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM events WHERE id = $1 FOR UPDATE`, res.EventID); err != nil {
		t.Fatal(err)
	}
	unlock.Do(func() { close(locked) })
	job := b.waitJob(t, res.JobID, 30*time.Second, func(j *rivertype.JobRow) bool {
		return j.State == rivertype.JobStateScheduled || j.State == rivertype.JobStateCompleted
	})
	if job.State != rivertype.JobStateScheduled || !strings.Contains(string(job.Metadata), `"river:resumable_step": "send"`) {
		t.Fatalf("state %s metadata %s; want snoozed with the send step done", job.State, job.Metadata)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("target got %d requests, want 1", n)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitJob(t, res.JobID, 30*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCompleted })
	if n := requests.Load(); n != 1 {
		t.Errorf("target got %d requests, want 1: the delivery was sent again", n)
	}
	var delivered bool
	if err := b.pool.QueryRow(ctx, `SELECT delivered_at IS NOT NULL FROM events WHERE id = $1`, res.EventID).Scan(&delivered); err != nil || !delivered {
		t.Errorf("event delivered = %v (%v), want true", delivered, err)
	}
	logs := b.logs.String()
	for _, want := range []string{"delivered, but the database did not record it; the job will record it later without sending it again",
		"recording a delivery the target acknowledged in an earlier run that could not record it"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
}
