// Package jobs holds webhook-outbox's River workers: delivery, outcome
// classification and backoff, and the River client that runs them.
package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
	"github.com/webhook-outbox/webhook-outbox/jobs/adaptive"
	"github.com/webhook-outbox/webhook-outbox/jobs/fleet"
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
	events    *store.EventLoader    // loads the events of concurrent deliveries in shared queries
	pressure  *store.IntakePressure // nil: never yield
	routes    map[string]*route
	client    *http.Client
	logger    *slog.Logger
	now       func() time.Time
	// limits are the routes' fleet-wide limits and circuit breakers.
	limits *Limits
	// tracer starts each attempt's span (a no-op one unless serve exports
	// traces).
	tracer trace.Tracer
	// rescueAfter is River's RescueStuckJobsAfter (RescueAfter).
	rescueAfter time.Duration
	// jobTimeout, when set, replaces Timeout's answer where it is positive
	// (tests).
	jobTimeout func(*river.Job[outbox.DeliverArgs]) time.Duration
}

type route struct {
	cfg     *config.Route
	target  *url.URL
	headers http.Header
	signer  *signer // nil unless target.signing_secret is set
	// limits hold the route's requests in flight under its adaptive limit
	// and this replica's share of the fleet's concurrency and rate_limit.
	limits *routeLimits
}

// NewDeliverer returns a Deliverer for cfg's routes, sending within limits
// (which must come from NewLimits with the same config).
func NewDeliverer(st *store.Store, cfg *config.Config, limits *Limits, logger *slog.Logger) (*Deliverer, error) {
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
		rl := limits.routes[rc.Name]
		if rl == nil {
			return nil, fmt.Errorf("route %s has no limits: build the Limits from the same config", rc.Name)
		}
		routes[rc.Name] = &route{cfg: rc, target: target, headers: headers, signer: newSigner(rc.Target.SigningKeys()), limits: rl}
	}
	return &Deliverer{
		store:       st,
		events:      store.NewEventLoader(st, eventLoaders, eventLoadBatch, eventLoadTimeout),
		routes:      routes,
		client:      newHTTPClient(),
		logger:      logger,
		now:         time.Now,
		limits:      limits,
		tracer:      noop.NewTracerProvider().Tracer(tracing.InstrumentationName),
		rescueAfter: RescueAfter(cfg),
	}, nil
}

// The event loader's settings: two queries at once of up to 256 events, as
// many as a River fetch hands out; each bounded like a delivery's request.
const (
	eventLoaders     = 2
	eventLoadBatch   = 256
	eventLoadTimeout = 10 * time.Second
)

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

// Timeout bounds a whole delivery job: loading the event, waiting for a
// place under the route's limit and for its rate limit, the request (itself cut off at target.timeout),
// and recording the outcome. It ends rescueSafety before River's rescuer
// could take the job for a crashed replica's (RescueStuckJobsAfter): a job
// rescued while it still runs here would be sent twice.
func (d *Deliverer) Timeout(job *river.Job[outbox.DeliverArgs]) time.Duration {
	if d.jobTimeout != nil {
		if t := d.jobTimeout(job); t > 0 {
			return t
		}
	}
	return d.rescueAfter - rescueSafety
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

// The resumable steps of a delivery (River's ResumableStep): River keeps
// the last one completed in the job's metadata when a run ends in an error
// or a snooze, and the next run skips it.
const (
	stepSend   = "send"
	stepRecord = "record"
)

// Work delivers one event in two steps: send it, then record the target's
// 2xx. The delivery's place under the route's limit is held from the
// request until the outcome is recorded, so at most `concurrency`
// deliveries are ever sent and not yet recorded across the fleet: the most
// a crash can make the target see twice.
// When the database cannot record a 2xx before the job's deadline, the job
// is snoozed with the send step done, and its next run only records it.
func (d *Deliverer) Work(ctx context.Context, job *river.Job[outbox.DeliverArgs]) error {
	meta := readMeta(job)
	log := d.logger.With(slog.Any("", jobLog{job: job, requestID: meta.RequestID}))
	r := d.routes[job.Args.Route]
	if r == nil {
		log.Error("route is not configured; cancelling delivery")
		return river.JobCancel(fmt.Errorf("route %s is not configured on the replica that ran this job: add the route back, then retry the dead letter", job.Args.Route))
	}
	// The place is given back with what the attempt said about the
	// target's load, once the outcome is recorded (or not sent at all).
	h := &held{}
	defer func() { r.limits.limiter.Release(h.token, h.rtt, h.outcome) }()
	var result error
	sent := false
	river.ResumableStep(ctx, stepSend, nil, func(ctx context.Context) error {
		sent = true
		log, result = d.send(ctx, log, job, meta, r, h)
		return result
	})
	if result != nil {
		return result
	}
	if !sent {
		log = log.With("outcome", Delivered.String())
		log.Info("recording a delivery the target acknowledged in an earlier run that could not record it; not sending it again")
	}
	river.ResumableStep(ctx, stepRecord, nil, func(ctx context.Context) error {
		result = d.record(ctx, log, job)
		return result
	})
	return result
}

// held is a delivery's place under its route's limit, with what its
// attempt said about the target's load once it was sent.
type held struct {
	token   adaptive.Token
	rtt     time.Duration
	outcome adaptive.Outcome
}

// send loads the event, takes a place under the route's limit (left in h
// for the record step) and the fleet circuit breaker's permit, sends the
// request, and turns the answer into the job's result: nil for a 2xx only.
// It returns log with the attempt's outcome added.
func (d *Deliverer) send(ctx context.Context, log *slog.Logger, job *river.Job[outbox.DeliverArgs], meta outbox.DeliveryMetadata, r *route, h *held) (*slog.Logger, error) {
	deadline := deadline(job, meta, r.cfg)
	d.yieldToIntake(ctx)
	ev, err := d.events.Load(ctx, job.Args.EventID, job.Args.ReceivedAt)
	if outbox.ErrorCode(err) == outbox.ENOTFOUND {
		log.Error("event is no longer stored; cancelling delivery")
		return log, river.JobCancel(fmt.Errorf("event %d is no longer stored, so there is nothing to deliver", job.Args.EventID))
	}
	if err != nil {
		if ctx.Err() != nil {
			return log, d.cutOff(ctx, log, job, r, "loading the event", nil)
		}
		log.Warn("cannot load event; will retry", "error", err)
		return log, fmt.Errorf("cannot load the event from the database: %w", err)
	}
	// The place comes before the circuit breaker's permit, so that no
	// more than `concurrency` deliveries hold its permits: its bound on
	// requests to a target that starts failing counts on it.
	tok, ok := r.limits.limiter.Acquire(ctx, placeWait(r.cfg.Target.Timeout.D()))
	if !ok {
		if ctx.Err() != nil {
			return log, d.cutOff(ctx, log, job, r, "waiting for a place under the route's concurrency limit", nil)
		}
		// Every place is busy (the target is slow, or the limit is low
		// while it is under strain): come back later without using an
		// attempt, and free the worker meanwhile.
		return log, river.JobSnooze(fleet.ShortWait())
	}
	h.token, h.outcome = tok, adaptive.Unsent
	p, err := d.admit(ctx, log, r, deadline)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return log, d.cutOff(ctx, log, job, r, "waiting for the route's rate limit", nil)
		}
		return log, err
	}

	out := d.attempt(tracing.FromMetadata(ctx, meta.TraceParent, meta.TraceState), r, ev, job.Attempt)
	h.rtt, h.outcome = out.Duration, outcomeForLimiter(out)
	// The breaker's writes outlive a shutdown's cancellation: they are
	// what the other replicas decide from.
	bctx := context.WithoutCancel(ctx)
	switch {
	case out.CutOff:
		// Cut off by this replica (a shutdown, the job's deadline), not
		// by the target: it says nothing about the target's health.
		d.limits.breaker.Release(bctx, p)
	case out.Verdict == Snooze && !p.Probe:
		// Retry-After while closed counts as neither a failure nor a
		// success; as a probe's answer, the target is not back yet.
		d.limits.breaker.Release(bctx, p)
	default:
		d.limits.breaker.Record(bctx, p, out.Verdict == Retry || out.Verdict == Snooze, out.Message)
	}
	log = log.With("outcome", out.Verdict.String(), "status", out.Status)

	now := d.now()
	switch {
	case out.Verdict == Delivered:
		return log, nil
	case out.CutOff:
		return log, d.cutOff(ctx, log, job, r, "waiting for the target's answer", &out)
	case out.Verdict == Permanent:
		log.Warn("permanent failure; cancelled", "error", out.Message)
		return log, river.JobCancel(errors.New(out.Message))
	case stoppedBy(ctx) == stopShutdown:
		// The target answered, but a shutdown is under way: put the job
		// back without using the attempt, as for a cut-off request.
		return log, d.cutOff(ctx, log, job, r, "handling the target's answer", &out)
	case !now.Before(deadline):
		msg := fmt.Sprintf("gave up: not delivered within give_up_after (%s); last attempt: %s", r.cfg.Retry.GiveUpAfter.D(), out.Message)
		log.Warn("delivery deadline passed; cancelled", "error", out.Message)
		return log, river.JobCancel(errors.New(msg))
	case out.Verdict == Snooze:
		wait := max(min(out.RetryAfter, r.cfg.Retry.MaxBackoff.D(), deadline.Sub(now)), minSnooze)
		log.Info("target asked to wait; snoozing without using an attempt", "snooze", wait.String(), "error", out.Message)
		return log, river.JobSnooze(wait)
	}
	log.Warn("delivery failed; will retry", "error", out.Message)
	return log, errors.New(out.Message)
}

// stopCause is why a delivery's context ended.
type stopCause int

const (
	stopNone stopCause = iota
	// stopShutdown: River's StopAndCancel, at the end of a shutdown.
	stopShutdown
	// stopTimeout: the job's own deadline (Deliverer.Timeout).
	stopTimeout
	// stopCancelled: the job was cancelled from River UI or the API.
	stopCancelled
)

func stoppedBy(ctx context.Context) stopCause {
	switch {
	case ctx.Err() == nil:
		return stopNone
	case errors.Is(context.Cause(ctx), rivertype.ErrJobCancelledRemotely):
		return stopCancelled
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return stopTimeout
	}
	return stopShutdown
}

// cutOff is the result of a delivery stopped by this replica while it was
// at phase. out is the attempt's outcome once a request was sent, nil
// before. None of these counts as a failure of the target.
func (d *Deliverer) cutOff(ctx context.Context, log *slog.Logger, job *river.Job[outbox.DeliverArgs], r *route, phase string, out *Outcome) error {
	switch stoppedBy(ctx) {
	case stopCancelled:
		log.Info("delivery cancelled from River UI or the API while " + phase)
		return fmt.Errorf("delivery cancelled while %s: %w", phase, context.Cause(ctx))
	case stopTimeout:
		limit := d.Timeout(job)
		if out != nil {
			// The target had less than target.timeout: retry, using the
			// attempt, since it may have acted on the request.
			log.Warn("delivery timed out: the job's deadline passed while "+phase+", before target.timeout; will retry",
				"job_timeout", limit.String(), "error", out.Message)
			return fmt.Errorf("delivery timed out: the delivery job's %s deadline passed while %s, before target.timeout (%s); not counted against the target",
				limit, phase, r.cfg.Target.Timeout.D())
		}
		if deadline := giveUpAt(job, r.cfg); !d.now().Before(deadline) {
			log.Warn("delivery deadline passed; cancelled", "error", "the delivery job timed out while "+phase)
			return river.JobCancel(fmt.Errorf("gave up: not delivered within give_up_after (%s); the last attempt timed out (job deadline %s) while %s, before anything was sent",
				r.cfg.Retry.GiveUpAfter.D(), limit, phase))
		}
		log.Warn("delivery timed out before anything was sent, while "+phase+"; will retry without using an attempt", "job_timeout", limit.String())
		return river.JobSnooze(fleet.ShortWait())
	}
	// A shutdown. Wrapping the context's error lets River put the job back
	// without using the attempt.
	msg := "nothing was sent"
	if out != nil {
		msg = out.Message
	}
	log.Info("delivery interrupted by shutdown while "+phase+"; it will be retried without using an attempt", "error", msg)
	return fmt.Errorf("delivery interrupted by shutdown while %s (%s): %w", phase, msg, ctx.Err())
}

// waitToRecord waits d before the next try at recording, and reports
// false if the tries must end first: a shutdown or a cancellation of the
// job (ctx), or recordCtx's deadline. The job's own deadline does not end
// them; recordCtx carries the one that counts.
func waitToRecord(ctx, recordCtx context.Context, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	stop := ctx.Done()
	for {
		select {
		case <-t.C:
			return true
		case <-recordCtx.Done():
			return false
		case <-stop:
			if stoppedBy(ctx) != stopTimeout {
				return false
			}
			stop = nil
		}
	}
}

// minRecordTime is the least time recording a 2xx gets, even when the
// job's deadline is nearer.
const minRecordTime = 5 * time.Second

// recordSnooze is how long a delivery whose 2xx could not be recorded
// waits before its next run tries again (without sending).
func recordSnooze() time.Duration { return 5*time.Second + rand.N(time.Second) }

// record records a delivery the target acknowledged. Whatever stops it (a
// row another transaction holds, a lost connection, a deadlock, Postgres
// restarting) is retried with backoff until the job's deadline, which ends
// before River's rescuer could hand the job to another worker. A shutdown
// does not cut the first try short. If the delivery still is not recorded,
// the job is snoozed: River keeps the send step as done, and the next run
// records the delivery without sending it again.
func (d *Deliverer) record(ctx context.Context, log *slog.Logger, job *river.Job[outbox.DeliverArgs]) error {
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) < minRecordTime {
		deadline = time.Now().Add(minRecordTime)
	}
	recordCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	wait := 20 * time.Millisecond
	for tries := 1; ; tries++ {
		err := d.completer.Complete(recordCtx, job)
		if err == nil {
			if tries > 1 {
				log.Info("delivered; recorded after retrying", "tries", tries)
			} else {
				log.Info("delivered")
			}
			return nil
		}
		if tries == 1 {
			log.Warn("delivered, but recording it failed; retrying", "error", err)
		}
		sleep := wait/2 + rand.N(wait)
		wait = min(2*wait, time.Second)
		giveUp := time.Now().Add(sleep).After(deadline) || !waitToRecord(ctx, recordCtx, sleep)
		if giveUp {
			log.Error("delivered, but the database did not record it; the job will record it later without sending it again",
				"error", err, "tries", tries)
			return river.JobSnooze(recordSnooze())
		}
	}
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
	// Sleep until the pressure would end, then look again: a wake-up per
	// pressure window, not a poll every few milliseconds by each of
	// hundreds of workers.
	deadline := time.Now().Add(maxYield)
	for d.pressure.Busy() && time.Now().Before(deadline) {
		wake := time.NewTimer(min(time.Until(d.pressure.BusyUntil()), time.Until(deadline)) + time.Millisecond)
		select {
		case <-ctx.Done():
			wake.Stop()
			return
		case <-wake.C:
		}
	}
}

// errTargetTimeout is the cause of a request cut off at target.timeout.
var errTargetTimeout = errors.New("target.timeout reached")

// attempt sends one delivery request and classifies what came back.
func (d *Deliverer) attempt(ctx context.Context, r *route, ev *store.DeliveryEvent, attempt int) (out Outcome) {
	timeout := r.cfg.Target.Timeout.D()
	// The attempt's span continues the trace of the intake request (its
	// context is in the job's metadata), and the target gets its
	// traceparent.
	ctx, span := d.tracer.Start(ctx, "deliver "+r.cfg.Name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("outbox.route", r.cfg.Name), attribute.String("outbox.key", ev.Key), attribute.Int("outbox.attempt", attempt),
		attribute.String("http.request.method", http.MethodPost)))
	defer func() {
		span.SetAttributes(attribute.String("outbox.outcome", out.Verdict.String()))
		if out.Status != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", out.Status))
		}
		if out.Verdict != Delivered {
			span.SetStatus(codes.Error, out.Message)
		}
		span.End()
	}()
	reqCtx, cancel := context.WithTimeoutCause(ctx, timeout, errTargetTimeout)
	defer cancel()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, r.cfg.Target.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return Outcome{Verdict: Permanent, Message: fmt.Sprintf("cannot build the request: %v", err)}
	}
	req.Header = r.headers.Clone()
	req.Header.Set("Content-Type", ev.ContentType)
	req.Header.Set(HeaderKey, ev.Key)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	tracing.Inject(ctx, req.Header)
	r.signer.sign(req.Header, ev.Key, d.now(), ev.Body)

	start := d.now()
	resp, err := d.client.Do(req)
	elapsed := d.now().Sub(start)
	if err != nil {
		out := classifyError(err, r.target, timeout, elapsed)
		// Without an answer, and not at target.timeout: this replica cut
		// the request off (a shutdown, the job's deadline).
		out.CutOff = ctx.Err() != nil && !errors.Is(context.Cause(reqCtx), errTargetTimeout)
		out.Duration = elapsed
		return out
	}
	defer resp.Body.Close()
	head := make([]byte, maxErrorBody)
	n, _ := io.ReadFull(resp.Body, head)
	// Drain a little more so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	out = classifyResponse(resp, head[:n], elapsed, d.now())
	out.Duration = elapsed
	return out
}
