package handler

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
)

// Acceptor stores an accepted webhook and enqueues its delivery, returning
// only after the commit.
type Acceptor interface {
	Accept(ctx context.Context, ev *outbox.NewEvent) (outbox.Accepted, error)
}

// Intake serves POST /webhooks/{route}.
type Intake struct {
	routes      map[string]*intakeRoute
	acceptor    Acceptor
	logger      *slog.Logger
	timeout     time.Duration
	retryAfter  time.Duration
	bodyTimeout time.Duration
	now         func() time.Time
	bufs        sync.Pool
	// gate bounds the requests in flight; past it intake answers 429
	// instead of queueing more behind the database.
	gate  *intakeGate
	addrs *clientAddrs
	// tracer starts the intake span; a no-op one unless serve exports
	// traces (SetTracerProvider).
	tracer trace.Tracer
}

// SetTracerProvider makes intake record a span per stored webhook.
func (in *Intake) SetTracerProvider(tp trace.TracerProvider) {
	in.tracer = tp.Tracer(tracing.InstrumentationName)
}

type intakeRoute struct {
	cfg  *config.Route
	auth authenticator
	// byHeaders: the auth mode reads only headers (basic, header), so the
	// sender is checked before its body is read. Otherwise (none, hmac,
	// standard_webhooks) it is anonymous while its body is read.
	byHeaders bool
	keys      []keySource
	// ordering finds an event's ordering value on a route with ordering.
	ordering []keySource
}

// initialBodyBuffer is the most intake reserves for a body before any of
// it arrives, whatever Content-Length announces: a client that announces
// 1 MiB and sends one byte holds this much, not 1 MiB.
const initialBodyBuffer = 64 << 10

// NewIntake compiles cfg's routes for intake.
func NewIntake(cfg *config.Config, acceptor Acceptor, logger *slog.Logger) (*Intake, error) {
	in := &Intake{
		routes:     make(map[string]*intakeRoute, len(cfg.Routes)),
		acceptor:   acceptor,
		logger:     logger,
		timeout:    cfg.IntakeTimeout.D(),
		retryAfter: cfg.IntakeRetryAfter.D(),
		// A config built in code rather than parsed has no defaults yet.
		bodyTimeout: cmp.Or(cfg.IntakeBodyTimeout.D(), config.DefaultIntakeBodyTimeout),
		now:         time.Now,
		gate:        newIntakeGate(cmp.Or(cfg.MaxInflightRequests, config.DefaultMaxInflightRequests)),
		addrs:       newClientAddrs(cfg.TrustedProxyPrefixes(), logger, "intake"),
		bufs:        sync.Pool{New: func() any { return new(bytes.Buffer) }},
		tracer:      noop.NewTracerProvider().Tracer(tracing.InstrumentationName),
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		auth, err := newAuthenticator(&rc.Auth)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", rc.Name, err)
		}
		if rc.Auth.None {
			logger.Warn("route accepts webhooks without authentication (auth: none: true)", "route", rc.Name)
		}
		in.routes[rc.Name] = &intakeRoute{cfg: rc, auth: auth, byHeaders: rc.Auth.Basic != nil || rc.Auth.Header != nil, keys: newKeySources(rc.IdempotencyKey)}
		if rc.Ordering != nil {
			in.routes[rc.Name].ordering = newKeySources(rc.Ordering.Key)
		}
	}
	return in, nil
}

// LimitBodyTimeout lowers intake_body_timeout to d when d is shorter: the
// server's own read timeout, which a body deadline must never extend.
func (in *Intake) LimitBodyTimeout(d time.Duration) {
	if d > 0 && d < in.bodyTimeout {
		in.bodyTimeout = d
	}
}

// ServeHTTP checks, in this order: the route exists (404), a declared
// Content-Length fits (413), a sender authenticated by its headers (basic,
// header) is authentic (401), there is room (429), the body fits while it
// is read within intake_body_timeout (413, 408), a sender authenticated by
// a signature of the body (hmac, standard_webhooks) is authentic (401), the
// body is JSON by Content-Type (415) and by content (400), and it has an
// idempotency key (422). Then it stores the event and its delivery job in
// one transaction, and answers 200 only after the commit. A database that
// fails or is slower than intake_timeout gets 503 with Retry-After.
//
// No client without credentials holds a slot on a route authenticated by
// headers, and anonymous requests (see intakeGate) can take only part of
// the slots, so they cannot starve authenticated senders.
func (in *Intake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["route"]
	rt := in.routes[name]
	if rt == nil {
		writeError(w, errorf(http.StatusNotFound, fmt.Sprintf("no route named %q", name)))
		return
	}
	log := in.logger.With("route", name, "request_id", RequestID(r.Context()))
	reject := func(e *Error) {
		log.Info("intake rejected", "status", e.Status, "error", e.Message, "remote_addr", r.RemoteAddr)
		if e.Status == http.StatusUnauthorized && rt.cfg.Auth.Basic != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="webhook-outbox", charset="UTF-8"`)
		}
		writeError(w, e)
	}

	if r.ContentLength > rt.cfg.MaxBodyBytes {
		reject(bodyTooLarge(rt.cfg.MaxBodyBytes))
		return
	}
	if rt.byHeaders {
		if why := rt.auth.check(r.Header, nil, in.now()); why != "" {
			reject(errorf(http.StatusUnauthorized, "authentication failed: "+why))
			return
		}
	}
	// Shed load before reading the body: each request in flight holds its
	// body and, soon, a wait for a database connection.
	if !in.gate.enter() {
		log.Info("intake shedding load", "status", http.StatusTooManyRequests, "max_inflight_requests", in.gate.max)
		writeError(w, &Error{
			Status:     http.StatusTooManyRequests,
			Message:    fmt.Sprintf("the event was not stored because %d webhooks are already being handled (max_inflight_requests); retry later", in.gate.max),
			RetryAfter: in.retryAfter,
		})
		return
	}
	defer in.gate.leave()
	releaseAnon := func() {}
	if !rt.byHeaders {
		full, release := in.gate.enterAnon(name, throttleKey(in.addrs.of(r)))
		if full != anonAdmitted {
			e := in.anonymousFull(full, name)
			log.Info("intake shedding anonymous load", "status", e.Status, "error", e.Message, "remote_addr", r.RemoteAddr)
			writeError(w, e)
			return
		}
		releaseAnon = release
		defer release()
	}

	// A body must arrive promptly: a client trickling it holds a slot.
	if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(in.bodyTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		log.Warn("cannot set the body's read deadline", "error", err)
	}
	buf := in.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer in.bufs.Put(buf)
	if e := readBody(w, r, rt.cfg.MaxBodyBytes, buf); e != nil {
		reject(e)
		return
	}
	body := buf.Bytes()
	if !rt.byHeaders {
		if why := rt.auth.check(r.Header, body, in.now()); why != "" {
			reject(errorf(http.StatusUnauthorized, "authentication failed: "+why))
			return
		}
	}
	// The sender is authenticated (or the route takes anyone) and its body
	// is in: it no longer counts against the anonymous budgets.
	releaseAnon()

	ev, e := in.check(rt, r, body)
	if e != nil {
		reject(e)
		return
	}
	log = log.With("key", ev.Key)
	ev.RequestID = RequestID(r.Context())

	// The intake span continues the sender's trace (its traceparent, if
	// any); the delivery job keeps the span's context, so its deliveries
	// continue the same trace. Without a tracer provider nothing is
	// recorded, and the sender's own context is what the job keeps.
	ctx, span := in.tracer.Start(tracing.Extract(r.Context(), r.Header), "webhook intake "+name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("outbox.route", name), attribute.String("outbox.key", ev.Key)))
	defer span.End()
	ev.TraceContext = tracing.ToMetadata(ctx)

	ctx, cancel := context.WithTimeout(ctx, in.timeout)
	defer cancel()
	res, err := in.acceptor.Accept(ctx, ev)
	if err != nil {
		e := in.unavailable(err)
		log.Error("cannot store event", "error", err)
		writeError(w, e)
		return
	}
	if res.Duplicate {
		log.Info("duplicate ignored")
		noteIntakeResult(r.Context(), resultDuplicate)
		writeJSON(w, http.StatusOK, intakeAnswer{Status: "duplicate", Key: ev.Key})
		return
	}
	log.Info("accepted", "event_id", res.EventID, "job_id", res.JobID)
	noteIntakeResult(r.Context(), resultAccepted)
	writeJSON(w, http.StatusOK, intakeAnswer{Status: "accepted", Key: ev.Key})
}

type intakeAnswer struct {
	Status string `json:"status"`
	Key    string `json:"key"`
}

func bodyTooLarge(limit int64) *Error {
	return errorf(http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than this route's max_body_bytes (%d bytes)", limit))
}

// readBody reads the body into buf, refusing to read past limit. It
// reserves at most initialBodyBuffer up front; buf grows as bytes arrive.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, buf *bytes.Buffer) *Error {
	if r.ContentLength > limit {
		return bodyTooLarge(limit)
	}
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, initialBodyBuffer)))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(connWriter(w), r.Body, limit))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return bodyTooLarge(limit)
	case outbox.IsTimeout(err):
		// The body deadline (or the server's ReadTimeout) cut a body that
		// came too slowly.
		return errorf(http.StatusRequestTimeout, "the request body did not arrive in time; send it again")
	case err != nil:
		return errorf(http.StatusBadRequest, "could not read the request body: "+errText(err))
	}
	return nil
}

// anonymousFull is the 429 for an anonymous request that found its budget
// full (see intakeGate).
func (in *Intake) anonymousFull(full int, route string) *Error {
	var msg string
	switch full {
	case anonFullRoute:
		msg = fmt.Sprintf("the event was not stored because route %s is already reading the most bodies of senders not yet authenticated that it may; retry later", route)
	case anonFullClient:
		msg = fmt.Sprintf("the event was not stored because route %s is already reading the most bodies from this address that it may; retry later", route)
	default:
		msg = "the event was not stored because intake is already reading the most bodies of senders not yet authenticated that it may; retry later"
	}
	return &Error{Status: http.StatusTooManyRequests, Message: msg, RetryAfter: in.retryAfter}
}

// errText says why a body could not be read, without the socket addresses
// a network error carries.
func errText(err error) string {
	var opErr *net.OpError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "it ended before Content-Length bytes arrived"
	case errors.As(err, &opErr):
		return "the connection failed while it was sent"
	}
	return err.Error()
}

// check runs the checks after the body is read and its sender
// authenticated, and builds the event.
func (in *Intake) check(rt *intakeRoute, r *http.Request, body []byte) (*outbox.NewEvent, *Error) {
	ct := r.Header.Get("Content-Type")
	if e := checkContentType(ct); e != nil {
		return nil, e
	}
	if !utf8.Valid(body) {
		return nil, errorf(http.StatusBadRequest, "the body is not valid JSON: it is not UTF-8 text")
	}
	if !json.Valid(body) {
		return nil, errorf(http.StatusBadRequest, "the body is not valid JSON: "+jsonError(body))
	}
	if jsonTooDeep(body, MaxJSONDepth) {
		return nil, errorf(http.StatusBadRequest, fmt.Sprintf("the body is refused: its JSON nests arrays and objects more than %d levels deep", MaxJSONDepth))
	}
	key, orderingKey, e := rt.extractKeys(r.Header, body)
	if e != nil {
		return nil, e
	}
	return &outbox.NewEvent{
		Route:       rt.cfg.Name,
		Key:         key,
		OrderingKey: orderingKey,
		ContentType: forwardedContentType(ct),
		Headers:     keptHeaders(r.Header, rt.cfg),
		Body:        bytes.Clone(body),
		MaxAttempts: rt.cfg.Retry.MaxAttempts,
	}, nil
}

// forwardedContentType is the Content-Type stored with an event and sent
// to its target: application/json, with the charset parameter the sender
// gave, if any, in lower case. The body was checked to be JSON, so the
// target is told exactly that, whatever +json type or parameters the sender
// used (the sender's own header stays among the stored headers). A target
// never sees a sender-chosen media type such as
// application/x-www-form-urlencoded+json that a lenient framework might
// parse as something else.
func forwardedContentType(ct string) string {
	_, params, err := mime.ParseMediaType(ct)
	if charset := strings.ToLower(params["charset"]); err == nil && charset != "" {
		return mime.FormatMediaType("application/json", map[string]string{"charset": charset})
	}
	return "application/json"
}

func checkContentType(ct string) *Error {
	if ct == "" {
		return errorf(http.StatusUnsupportedMediaType, "the Content-Type header is missing: send Content-Type: application/json")
	}
	mediaType, _, err := mime.ParseMediaType(ct)
	if err != nil || !utf8.ValidString(ct) {
		return errorf(http.StatusUnsupportedMediaType, fmt.Sprintf("the Content-Type %q cannot be parsed: send Content-Type: application/json", ct))
	}
	if mediaType != "application/json" && !strings.HasSuffix(mediaType, "+json") {
		return errorf(http.StatusUnsupportedMediaType, fmt.Sprintf("the Content-Type is %s, but this endpoint accepts JSON only: send application/json or a +json type", mediaType))
	}
	return nil
}

// jsonError describes why body is not JSON, with the offset of the fault.
func jsonError(body []byte) string {
	if len(bytes.TrimSpace(body)) == 0 {
		return "the body is empty"
	}
	var v any
	err := json.Unmarshal(body, &v)
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return fmt.Sprintf("%s (at byte %d)", syntax.Error(), syntax.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "it does not parse"
}

// keptHeaders returns the request headers to store: all but credentials
// and signatures (see config.Route.StoresHeader).
func keptHeaders(h http.Header, route *config.Route) http.Header {
	kept := make(http.Header, len(h))
	for name, values := range h {
		if route.StoresHeader(name) {
			kept[name] = values
		}
	}
	return kept
}

// unavailable turns a storage failure into a 503 that tells the sender to
// come back later. It never exposes the driver's error. It does not claim
// that the event was not stored: a group commit the request was waiting
// for may still commit after intake gave up on it. A retry is always safe,
// and answers duplicate if the event was stored.
func (in *Intake) unavailable(err error) *Error {
	msg := "the database is unavailable, so the event may not have been stored; retry later: if it was stored, the retry answers duplicate"
	if outbox.IsTimeout(err) {
		msg = fmt.Sprintf("the database did not confirm within %s that the event was stored; retry later: if it was stored, the retry answers duplicate", in.timeout)
	}
	return &Error{Status: http.StatusServiceUnavailable, Message: msg, RetryAfter: in.retryAfter}
}
