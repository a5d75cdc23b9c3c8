package handler

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

// adminGuard guards the admin API and River UI with the admin token, sent
// as a Bearer token or as the password of Basic auth (any username, so a
// browser's login prompt works for River UI). The comparison runs in
// constant time. Failed attempts are counted per client address and slowed
// down (see FailureLimit); a request without credentials is not a failure,
// since a browser sends one before it prompts.
type adminGuard struct {
	token    [][]byte
	throttle *failureThrottle
	trusted  []netip.Prefix
	logger   *slog.Logger
}

func newAdminGuard(opts RouterOptions) *adminGuard {
	return &adminGuard{
		token:    [][]byte{[]byte(opts.AdminToken)},
		throttle: newFailureThrottle(opts.AdminFailures),
		trusted:  opts.TrustedProxies,
		logger:   opts.Logger,
	}
}

// wrap puts next behind the admin token.
func (g *adminGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got string
		// The scheme is case-insensitive (RFC 9110).
		if scheme, bearer, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(bearer)
		} else if _, pass, ok := r.BasicAuth(); ok {
			got = pass
		}
		if got == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="webhook-outbox admin", charset="UTF-8"`)
			writeError(w, errorf(http.StatusUnauthorized, "admin authentication required: send Authorization: Bearer <admin_token>, or Basic auth with the admin token as password"))
			return
		}
		addr := clientAddr(r, g.trusted)
		key := throttleKey(addr)
		reserved, wait := g.throttle.admit(key)
		if wait > 0 {
			e := errorf(http.StatusTooManyRequests, "too many failed admin authentications from this address; try again later")
			e.RetryAfter = wait
			writeError(w, e)
			return
		}
		if !equalAny([]byte(got), g.token) {
			if g.throttle.fail(key, reserved) {
				g.logger.Warn("repeated admin authentication failures; slowing this address down", "client", addr.String(), "path", r.URL.Path)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="webhook-outbox admin", charset="UTF-8"`)
			writeError(w, errorf(http.StatusUnauthorized, "the admin token is wrong"))
			return
		}
		g.throttle.succeed(key)
		next.ServeHTTP(w, r)
	})
}

// adminAPI serves /admin/v1.
type adminAPI struct {
	admin  *admin.Service
	logger *slog.Logger
	now    func() time.Time
}

func (a *adminAPI) mount(r *mux.Router) {
	r.HandleFunc("/dead-letters", a.listDeadLetters).Methods(http.MethodGet)
	r.HandleFunc("/dead-letters/retry", a.retryDeadLetters).Methods(http.MethodPost)
	r.HandleFunc("/dead-letters/{id:.+}", a.showDeadLetter).Methods(http.MethodGet)
	r.HandleFunc("/events/replay", a.replay).Methods(http.MethodPost)
	r.HandleFunc("/events/{route}/{key:.+}", a.showEvent).Methods(http.MethodGet)
	r.HandleFunc("/routes", a.listRoutes).Methods(http.MethodGet)
	r.HandleFunc("/stats", a.stats).Methods(http.MethodGet)
	r.HandleFunc("/routes/{route}/pause", a.pause).Methods(http.MethodPost)
	r.HandleFunc("/routes/{route}/resume", a.resume).Methods(http.MethodPost)
}

// fail answers an operation's error: see writeErr.
func (a *adminAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeErr(w, r, a.logger, err)
}

func (a *adminAPI) filterFromQuery(q map[string][]string) (outbox.DeadLetterFilter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return admin.ParseFilter(get("route"), get("since"), get("until"), get("error"), a.now())
}

type deadLetterPage struct {
	DeadLetters []outbox.DeadLetter `json:"dead_letters"`
	NextCursor  *string             `json:"next_cursor"`
}

// GET /admin/v1/dead-letters?route=&since=&until=&error=&limit=&cursor=
func (a *adminAPI) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "route", "since", "until", "error", "limit", "cursor":
		default:
			writeError(w, errorf(http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: use route, since, until, error, limit, cursor", k)))
			return
		}
	}
	f, err := a.filterFromQuery(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > 1000 {
			writeError(w, errorf(http.StatusBadRequest, "limit must be a number from 1 to 1000"))
			return
		}
	}
	items, next, err := a.admin.ListDeadLetters(r.Context(), f, limit, q.Get("cursor"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page := deadLetterPage{DeadLetters: items}
	if next != "" {
		page.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, page)
}

// GET /admin/v1/dead-letters/{id}, where id is a job id or ROUTE/KEY
// (URL-encoded).
func (a *adminAPI) showDeadLetter(w http.ResponseWriter, r *http.Request) {
	id, err := admin.ParseIdentifier(mux.Vars(r)["id"])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d, err := a.admin.DeadLetter(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// decodeBody reads a JSON request body strictly: unknown fields are a
// mistake worth reporting, not ignoring.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return outbox.Errorf(outbox.EINVALID, "the body is not the JSON this endpoint takes: %v", err)
	}
	return nil
}

type retryBody struct {
	JobIDs []int64 `json:"job_ids"`
	Route  string  `json:"route"`
	Since  string  `json:"since"`
	Until  string  `json:"until"`
	Error  string  `json:"error"`
	DryRun bool    `json:"dry_run"`
	// Resume continues an interrupted retry by filter from its next_cursor.
	Resume string `json:"resume"`
}

// POST /admin/v1/dead-letters/retry with {"job_ids": [...]} or a filter
// {"route", "since", "until", "error"}, and "dry_run"; or {"resume":
// next_cursor} to finish an interrupted retry by filter.
func (a *adminAPI) retryDeadLetters(w http.ResponseWriter, r *http.Request) {
	var body retryBody
	if err := decodeBody(r, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	req := admin.RetryRequest{DryRun: body.DryRun, Resume: body.Resume}
	byFilter := body.Route != "" || body.Since != "" || body.Until != "" || body.Error != ""
	switch {
	case body.Resume != "" && (len(body.JobIDs) > 0 || byFilter):
		writeError(w, errorf(http.StatusBadRequest, "send resume alone: the cursor holds the filter"))
		return
	case body.Resume != "":
	case len(body.JobIDs) > 0 && byFilter:
		writeError(w, errorf(http.StatusBadRequest, "send job_ids or a filter (route, since, until, error), not both"))
		return
	case len(body.JobIDs) > 0:
		for _, id := range body.JobIDs {
			req.IDs = append(req.IDs, admin.Identifier{JobID: id})
		}
	case byFilter:
		f, err := admin.ParseFilter(body.Route, body.Since, body.Until, body.Error, a.now())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		req.Filter = &f
	default:
		writeError(w, errorf(http.StatusBadRequest, `say which dead letters to retry: {"job_ids": [...]} or a filter with at least one of route, since, until, error`))
		return
	}
	res, err := a.admin.RetryDeadLetters(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.logger.Info("dead letters retried", "matched", res.Matched, "retried", res.Retried, "dry_run", res.DryRun)
	writeJSON(w, http.StatusOK, res)
}

type replayBody struct {
	Route  string `json:"route"`
	Since  string `json:"since"`
	Until  string `json:"until"`
	DryRun bool   `json:"dry_run"`
	// ReplayID names the replay; the same request again resumes it.
	ReplayID string `json:"replay_id"`
	// Resume continues the replay a next_cursor names.
	Resume string `json:"resume"`
}

// POST /admin/v1/events/replay with {"route", "since", "until", "dry_run"},
// and optionally "replay_id"; or {"resume": next_cursor} to continue one.
func (a *adminAPI) replay(w http.ResponseWriter, r *http.Request) {
	var body replayBody
	if err := decodeBody(r, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Resume == "" && (body.Route == "" || body.Since == "") {
		writeError(w, errorf(http.StatusBadRequest, `replay needs "route" and "since" (or "resume" with a next_cursor)`))
		return
	}
	now := a.now()
	since, err := admin.ParseTime("since", body.Since, now)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	until, err := admin.ParseTime("until", body.Until, now)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.admin.Replay(r.Context(), admin.ReplayRequest{Route: body.Route, Since: since, Until: until, DryRun: body.DryRun, ReplayID: body.ReplayID, Resume: body.Resume})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.logger.Info("events replayed", "replay_id", res.ReplayID, "route", res.Route, "matched", res.Matched, "already_replayed", res.AlreadyReplayed,
		"replayed", res.Replayed, "revived", res.Revived, "dry_run", res.DryRun)
	writeJSON(w, http.StatusOK, res)
}

// GET /admin/v1/events/{route}/{key}; the key is URL-encoded.
func (a *adminAPI) showEvent(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	ev, err := a.admin.Event(r.Context(), v["route"], v["key"])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

// GET /admin/v1/routes
func (a *adminAPI) listRoutes(w http.ResponseWriter, r *http.Request) {
	routes, err := a.admin.Routes(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"routes": routes})
}

// GET /admin/v1/stats?exact=true
func (a *adminAPI) stats(w http.ResponseWriter, r *http.Request) {
	exact, _ := strconv.ParseBool(r.URL.Query().Get("exact"))
	st, err := a.admin.Stats(r.Context(), exact)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *adminAPI) pause(w http.ResponseWriter, r *http.Request)  { a.setPaused(w, r, true) }
func (a *adminAPI) resume(w http.ResponseWriter, r *http.Request) { a.setPaused(w, r, false) }

// POST /admin/v1/routes/{route}/pause and /resume
func (a *adminAPI) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	route := mux.Vars(r)["route"]
	op := a.admin.Resume
	if paused {
		op = a.admin.Pause
	}
	if err := op(r.Context(), route); err != nil {
		a.fail(w, r, err)
		return
	}
	a.logger.Info("route pause changed", "route", route, "paused", paused)
	writeJSON(w, http.StatusOK, map[string]any{"route": route, "paused": paused})
}
