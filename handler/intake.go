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
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// Acceptor stores an accepted webhook and enqueues its delivery, returning
// only after the commit.
type Acceptor interface {
	Accept(ctx context.Context, ev *outbox.NewEvent) (outbox.Accepted, error)
}

// alwaysStripped are request headers never stored: credentials and the
// signature headers of common senders.
var alwaysStripped = []string{"Authorization", "Proxy-Authorization", "Cookie", "Webhook-Signature", "Stripe-Signature", "X-Shopify-Hmac-Sha256", "X-Twilio-Signature"}

// strippedPrefixes are header name prefixes never stored.
var strippedPrefixes = []string{"X-Hub-Signature"}

// Intake serves POST /webhooks/{route}.
type Intake struct {
	routes     map[string]*intakeRoute
	acceptor   Acceptor
	logger     *slog.Logger
	timeout    time.Duration
	retryAfter time.Duration
	now        func() time.Time
	bufs       sync.Pool
	// inflight counts webhook requests being handled; past maxInflight,
	// intake answers 429 instead of queueing more behind the database.
	inflight    atomic.Int64
	maxInflight int64
}

type intakeRoute struct {
	cfg      *config.Route
	auth     authenticator
	keys     []keySource
	stripped map[string]bool
}

// NewIntake compiles cfg's routes for intake.
func NewIntake(cfg *config.Config, acceptor Acceptor, logger *slog.Logger) (*Intake, error) {
	in := &Intake{
		routes:     make(map[string]*intakeRoute, len(cfg.Routes)),
		acceptor:   acceptor,
		logger:     logger,
		timeout:    cfg.IntakeTimeout.D(),
		retryAfter: cfg.IntakeRetryAfter.D(),
		now:        time.Now,
		// A config built in code rather than parsed has no default yet.
		maxInflight: int64(cmp.Or(cfg.MaxInflightRequests, config.DefaultMaxInflightRequests)),
		bufs:        sync.Pool{New: func() any { return new(bytes.Buffer) }},
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
		stripped := map[string]bool{}
		for _, h := range append(alwaysStripped, auth.secretHeaders()...) {
			stripped[http.CanonicalHeaderKey(h)] = true
		}
		in.routes[rc.Name] = &intakeRoute{cfg: rc, auth: auth, keys: newKeySources(rc.IdempotencyKey), stripped: stripped}
	}
	return in, nil
}

// ServeHTTP checks, in this order: the route exists (404), the body fits
// (413), the sender is authentic (401), the body is JSON by Content-Type
// (415) and by content (400), and it has an idempotency key (422). Then it
// stores the event and its delivery job in one transaction, and answers 200
// only after the commit. A database that fails or is slower than
// intake_timeout gets 503 with Retry-After, and a request beyond
// max_inflight_requests gets 429 with Retry-After before its body is read.
func (in *Intake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["route"]
	rt := in.routes[name]
	if rt == nil {
		writeError(w, errorf(http.StatusNotFound, fmt.Sprintf("no route named %q", name)))
		return
	}
	log := in.logger.With("route", name, "request_id", RequestID(r.Context()))

	// Shed load before reading the body: each request in flight holds its
	// body and, soon, a wait for a database connection.
	if n := in.inflight.Add(1); n > in.maxInflight {
		in.inflight.Add(-1)
		log.Info("intake shedding load", "status", http.StatusTooManyRequests, "max_inflight_requests", in.maxInflight)
		writeError(w, &Error{
			Status:     http.StatusTooManyRequests,
			Message:    fmt.Sprintf("the event was not stored because %d webhooks are already being handled (max_inflight_requests); retry later", in.maxInflight),
			RetryAfter: in.retryAfter,
		})
		return
	}
	defer in.inflight.Add(-1)

	buf := in.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer in.bufs.Put(buf)
	if e := readBody(w, r, rt.cfg.MaxBodyBytes, buf); e != nil {
		log.Info("intake rejected", "status", e.Status, "error", e.Message)
		writeError(w, e)
		return
	}
	body := buf.Bytes()

	ev, e := in.check(rt, r, body)
	if e != nil {
		log.Info("intake rejected", "status", e.Status, "error", e.Message, "remote_addr", r.RemoteAddr)
		if e.Status == http.StatusUnauthorized && rt.cfg.Auth.Basic != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="webhook-outbox", charset="UTF-8"`)
		}
		writeError(w, e)
		return
	}
	log = log.With("key", ev.Key)
	ev.RequestID = RequestID(r.Context())

	ctx, cancel := context.WithTimeout(r.Context(), in.timeout)
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

// readBody reads the body into buf, refusing to read past limit.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, buf *bytes.Buffer) *Error {
	tooLarge := errorf(http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than this route's max_body_bytes (%d bytes)", limit))
	if r.ContentLength > limit {
		return tooLarge
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(connWriter(w), r.Body, limit))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return tooLarge
	case isTimeout(err):
		// The server's ReadTimeout cut a body that came too slowly.
		return errorf(http.StatusRequestTimeout, "the request body did not arrive in time; send it again")
	case err != nil:
		return errorf(http.StatusBadRequest, "could not read the request body: "+errText(err))
	}
	return nil
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
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

// check runs the checks after the body is read, and builds the event.
func (in *Intake) check(rt *intakeRoute, r *http.Request, body []byte) (*outbox.NewEvent, *Error) {
	if why := rt.auth.check(r.Header, body, in.now()); why != "" {
		return nil, errorf(http.StatusUnauthorized, "authentication failed: "+why)
	}
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
	key, e := extractKey(rt.keys, r.Header, body)
	if e != nil {
		return nil, e
	}
	return &outbox.NewEvent{
		Route:       rt.cfg.Name,
		Key:         key,
		ContentType: ct,
		Headers:     keptHeaders(r.Header, rt.stripped),
		Body:        bytes.Clone(body),
		MaxAttempts: rt.cfg.Retry.MaxAttempts,
	}, nil
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
// and signatures.
func keptHeaders(h http.Header, stripped map[string]bool) http.Header {
	kept := make(http.Header, len(h))
	for name, values := range h {
		if stripped[name] || hasStrippedPrefix(name) {
			continue
		}
		kept[name] = values
	}
	return kept
}

func hasStrippedPrefix(name string) bool {
	for _, p := range strippedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// unavailable turns a storage failure into a 503 that tells the sender to
// come back later. It never exposes the driver's error.
func (in *Intake) unavailable(err error) *Error {
	msg := "the event was not stored because the database is unavailable; retry later"
	if store.IsTimeout(err) {
		msg = fmt.Sprintf("the event was not stored because the database did not answer within %s; retry later", in.timeout)
	}
	return &Error{Status: http.StatusServiceUnavailable, Message: msg, RetryAfter: in.retryAfter}
}
