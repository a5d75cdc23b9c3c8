// Package jobs holds webhook-outbox's River workers: delivery, outcome
// classification and backoff, and the River client that runs them.
package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"golang.org/x/time/rate"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// Delivery request headers set by outbox.
const (
	HeaderRoute   = "X-Outbox-Route"
	HeaderKey     = "X-Outbox-Key"
	HeaderAttempt = "X-Outbox-Attempt"
)

// minSnooze floors a target's Retry-After, so that "Retry-After: 0" cannot
// turn into a tight loop against a sick target.
const minSnooze = time.Second

// Deliverer is the River worker that POSTs an event's stored bytes to its
// route's target and turns the answer into a job outcome.
type Deliverer struct {
	river.WorkerDefaults[outbox.DeliverArgs]

	store     *store.Store
	completer *store.Completer
	pressure  *store.IntakePressure // nil: never yield
	routes    map[string]*route
	client    *http.Client
	logger    *slog.Logger
	now       func() time.Time
	breakers  *Breakers
}

type route struct {
	cfg     *config.Route
	target  *url.URL
	headers http.Header
	limiter *rate.Limiter // nil without a rate_limit
	signer  *signer       // nil unless target.signing_secret is set
	slots   slots         // at most `concurrency` requests in flight
}

// NewDeliverer returns a Deliverer for cfg's routes.
func NewDeliverer(st *store.Store, cfg *config.Config, logger *slog.Logger) (*Deliverer, error) {
	routes := make(map[string]*route, len(cfg.Routes))
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		target, err := url.Parse(rc.Target.URL)
		if err != nil {
			return nil, fmt.Errorf("route %s: invalid target.url: %w", rc.Name, err)
		}
		headers := http.Header{}
		for k, v := range rc.Target.Headers {
			headers.Set(k, v)
		}
		headers.Set("User-Agent", "webhook-outbox/1")
		headers.Set(HeaderRoute, rc.Name)
		routes[rc.Name] = &route{cfg: rc, target: target, headers: headers, limiter: newRateLimiter(rc.RateLimit),
			signer: newSigner(rc.Target.SigningKeys()), slots: newSlots(rc.Concurrency)}
	}
	return &Deliverer{
		store:    st,
		routes:   routes,
		client:   newHTTPClient(),
		logger:   logger,
		now:      time.Now,
		breakers: NewBreakers(cfg, logger),
	}, nil
}

// Breakers returns the routes' circuit breakers on this replica, for the
// routes listing and metrics.
func (d *Deliverer) Breakers() *Breakers { return d.breakers }

// newHTTPClient returns a client that keeps connections to targets alive
// and never follows redirects: a redirected POST would silently change
// method or drop the body.
func newHTTPClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 512
	transport.MaxIdleConnsPerHost = 128
	transport.IdleConnTimeout = 90 * time.Second
	transport.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Timeout bounds a whole delivery job: the request's own timeout plus time
// to load the event and record the outcome.
func (d *Deliverer) Timeout(job *river.Job[outbox.DeliverArgs]) time.Duration {
	if r := d.routes[job.Args.Route]; r != nil {
		return slotWait(r.cfg.Target.Timeout.D()) + r.cfg.Target.Timeout.D() + 15*time.Second
	}
	return time.Minute
}

// NextRetry schedules the next attempt with the route's backoff, never past
// the event's give_up_after deadline, so the last attempt happens at the
// deadline rather than after it.
func (d *Deliverer) NextRetry(job *river.Job[outbox.DeliverArgs]) time.Time {
	r := d.routes[job.Args.Route]
	if r == nil {
		return time.Time{} // River's default policy
	}
	now := d.now()
	next := now.Add(Backoff(r.cfg.Retry.InitialBackoff.D(), r.cfg.Retry.MaxBackoff.D(), job.Attempt))
	if deadline := giveUpAt(job, r.cfg); next.After(deadline) && deadline.After(now) {
		next = deadline
	}
	return next
}

// giveUpAt is the delivery's deadline: give_up_after from the job's creation
// (the intake transaction's time, or a replay's), unless the job's metadata
// carries a later one.
func giveUpAt(job *river.Job[outbox.DeliverArgs], rc *config.Route) time.Time {
	deadline := job.CreatedAt.Add(rc.Retry.GiveUpAfter.D())
	var meta map[string]any
	if json.Unmarshal(job.Metadata, &meta) == nil {
		if s, ok := meta[outbox.MetadataGiveUpAt].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				deadline = t
			}
		}
	}
	return deadline
}

// Work delivers one event.
func (d *Deliverer) Work(ctx context.Context, job *river.Job[outbox.DeliverArgs]) error {
	log := d.logger.With("route", job.Args.Route, "key", job.Args.Key, "job_id", job.ID, "attempt", job.Attempt, "event_id", job.Args.EventID, "request_id", requestID(job))
	r := d.routes[job.Args.Route]
	if r == nil {
		log.Error("route is not configured; cancelling delivery")
		return river.JobCancel(fmt.Errorf("route %s is not configured on the replica that ran this job: add the route back, then retry the dead letter", job.Args.Route))
	}
	d.yieldToIntake(ctx)
	// The slot comes first, so that no more than `concurrency` deliveries
	// hold the circuit breaker's permits: its bound on requests to a target
	// that starts failing counts on it.
	if !r.slots.acquire(ctx, slotWait(r.cfg.Target.Timeout.D())) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("delivery interrupted while waiting for a slot: %w", err)
		}
		// Every slot is busy with this route's slow target: come back
		// later without using an attempt, and free the worker meanwhile.
		return river.JobSnooze(busySnooze())
	}
	slotHeld := true
	releaseSlot := func() {
		if slotHeld {
			slotHeld = false
			r.slots.release()
		}
	}
	defer releaseSlot()
	p, err := d.admit(ctx, log, job, r)
	if err != nil {
		return err
	}
	defer p.release() // when no request was sent
	ev, err := d.store.EventForDelivery(ctx, job.Args.EventID, job.Args.ReceivedAt)
	if outbox.ErrorCode(err) == outbox.ENOTFOUND {
		log.Error("event is no longer stored; cancelling delivery")
		return river.JobCancel(fmt.Errorf("event %d is no longer stored, so there is nothing to deliver", job.Args.EventID))
	}
	if err != nil {
		log.Warn("cannot load event; will retry", "error", err)
		return fmt.Errorf("cannot load the event from the database: %w", err)
	}

	out := d.attempt(ctx, r, ev, job.Attempt)
	releaseSlot() // recording the outcome needs no slot
	p.record(out.Verdict, out.Message, d.now())
	log = log.With("outcome", out.Verdict.String(), "status", out.Status)

	deadline := giveUpAt(job, r.cfg)
	now := d.now()
	switch out.Verdict {
	case Delivered:
		// The target has it: record that even if a shutdown is cancelling
		// ctx, or the event would be delivered again after the restart.
		recordCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := d.completer.Complete(recordCtx, job); err != nil {
			// The target has the event but the database does not know yet.
			// Returning an error retries it: at-least-once, never lost.
			log.Error("delivered, but recording it failed; it will be delivered again", "error", err)
			return fmt.Errorf("delivered, but recording the delivery failed: %w", err)
		}
		log.Info("delivered")
		return nil
	case Permanent:
		log.Warn("permanent failure; cancelled", "error", out.Message)
		return river.JobCancel(errors.New(out.Message))
	}
	if err := ctx.Err(); err != nil {
		// A shutdown cut the attempt off. Wrapping the context's error lets
		// River put the job back without using the attempt.
		log.Info("delivery interrupted by shutdown; it will be retried", "error", out.Message)
		return fmt.Errorf("delivery interrupted (%s): %w", out.Message, err)
	}
	if !now.Before(deadline) {
		msg := fmt.Sprintf("gave up: not delivered within give_up_after (%s); last attempt: %s", r.cfg.Retry.GiveUpAfter.D(), out.Message)
		log.Warn("delivery deadline passed; cancelled", "error", out.Message)
		return river.JobCancel(errors.New(msg))
	}
	if out.Verdict == Snooze {
		wait := max(min(out.RetryAfter, r.cfg.Retry.MaxBackoff.D(), deadline.Sub(now)), minSnooze)
		log.Info("target asked to wait; snoozing without using an attempt", "snooze", wait.String(), "error", out.Message)
		return river.JobSnooze(wait)
	}
	log.Warn("delivery failed; will retry", "error", out.Message)
	return errors.New(out.Message)
}

// maxYield bounds how long one delivery gives way to intake.
const maxYield = time.Second

// yieldToIntake waits, at most maxYield, while intake is queueing requests:
// during a sender's burst, acknowledging webhooks comes first, and the
// queue absorbs the deliveries until it passes.
func (d *Deliverer) yieldToIntake(ctx context.Context) {
	if !d.pressure.Busy() {
		return
	}
	deadline := time.Now().Add(maxYield)
	for d.pressure.Busy() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// attempt sends one delivery request and classifies what came back.
func (d *Deliverer) attempt(ctx context.Context, r *route, ev *store.DeliveryEvent, attempt int) Outcome {
	timeout := r.cfg.Target.Timeout.D()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.Target.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return Outcome{Verdict: Permanent, Message: fmt.Sprintf("cannot build the request: %v", err)}
	}
	req.Header = r.headers.Clone()
	req.Header.Set("Content-Type", ev.ContentType)
	req.Header.Set(HeaderKey, ev.Key)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	r.signer.sign(req.Header, ev.Key, d.now(), ev.Body)

	start := d.now()
	resp, err := d.client.Do(req)
	elapsed := d.now().Sub(start)
	if err != nil {
		return classifyError(err, r.target, timeout, elapsed)
	}
	defer resp.Body.Close()
	head := make([]byte, maxErrorBody)
	n, _ := io.ReadFull(resp.Body, head)
	// Drain a little more so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	return classifyResponse(resp, head[:n], elapsed, d.now())
}
