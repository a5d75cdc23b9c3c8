package handler

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

// adminGuard guards the admin API, River UI and the console with the admin
// token, sent as a Bearer token or as the password of Basic auth (any
// username, so a browser's login prompt works for River UI). The comparison
// runs in constant time. Failed attempts are counted per client address and
// slowed down (see FailureLimit); a request without credentials is not a
// failure, since a browser sends one before it prompts.
type adminGuard struct {
	token    [][]byte
	throttle *failureThrottle
	addrs    *clientAddrs
	logger   *slog.Logger
}

func newAdminGuard(opts RouterOptions) *adminGuard {
	return &adminGuard{
		token:    [][]byte{[]byte(opts.AdminToken)},
		throttle: newFailureThrottle(opts.AdminFailures),
		addrs:    newClientAddrs(opts.TrustedProxies, opts.Logger, "admin"),
		logger:   opts.Logger,
	}
}

// wrap puts next behind the admin token. ui says whether next is a web
// page a person opens in a browser (River UI, the console), which may ask
// for Basic credentials with the browser's login prompt.
func (g *adminGuard) wrap(next http.Handler, ui bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got string
		// The scheme is case-insensitive (RFC 9110).
		if scheme, bearer, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(bearer)
		} else if _, pass, ok := r.BasicAuth(); ok {
			got = pass
		}
		if got == "" {
			g.challenge(w, r, ui)
			writeError(w, errorf(http.StatusUnauthorized, "admin authentication required: send Authorization: Bearer <admin_token>, or Basic auth with the admin token as password"))
			return
		}
		addr := g.addrs.of(r)
		key := throttleKey(addr)
		adm := g.throttle.admit(key)
		tooMany := errorf(http.StatusTooManyRequests, "too many failed admin authentications from this address; try again later")
		if adm.wait > 0 {
			tooMany.RetryAfter = adm.wait
			writeError(w, tooMany)
			return
		}
		if !equalAny([]byte(got), g.token) {
			if exhausted := g.throttle.fail(key); exhausted && !adm.locked {
				g.logger.Warn("repeated admin authentication failures; slowing this address down", "client", addr.String(), "path", r.URL.Path)
			}
			if adm.locked {
				tooMany.RetryAfter = g.throttle.limit.Every
				writeError(w, tooMany)
				return
			}
			g.challenge(w, r, ui)
			writeError(w, errorf(http.StatusUnauthorized, "the admin token is wrong"))
			return
		}
		g.throttle.succeed(key)
		next.ServeHTTP(w, r)
	})
}

// challenge sets the WWW-Authenticate header of a 401. The admin API, which
// no person browses, always gets a Bearer challenge, which no browser
// prompts for: visiting an admin URL, or a page on another site pointing
// at one, never leads a browser to ask for the token and keep it. River
// UI and the console get a Basic challenge, which makes the browser show
// its login prompt and then send the token with the pages' own requests
// (and send it again after a 401), except for requests another site's
// page makes (an image, a frame, a script's fetch): those must not pop up
// a login prompt over that page. A person following a link from another
// site to River UI still gets the prompt. What a browser keeps after the
// prompt is covered by the cross-origin protection around the whole admin
// surface (see operatorProtection).
func (g *adminGuard) challenge(w http.ResponseWriter, r *http.Request, ui bool) {
	w.Header().Set("Cache-Control", "no-store")
	if ui && mayPrompt(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="webhook-outbox admin", charset="UTF-8"`)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="webhook-outbox admin"`)
}

// mayPrompt reports whether r comes from the same origin (or from no
// browser at all), or is a person opening the page from another site.
func mayPrompt(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return r.Header.Get("Sec-Fetch-Dest") == "document" && r.Header.Get("Sec-Fetch-Mode") == "navigate"
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
	r.HandleFunc("/routes/{route}/blocked-keys", a.blockedKeys).Methods(http.MethodGet)
	r.HandleFunc("/routes/{route}/blocked-keys/release", a.releaseBlockedKeys).Methods(http.MethodPost)
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
	if !requireJSON(w, r) {
		return
	}
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
	if !requireJSON(w, r) {
		return
	}
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

// POST /admin/v1/routes/{route}/pause and /resume. They take no body, and
// ignore one. A page on another site could send them as a form without a
// body; the cross-origin protection around the admin surface refuses that.
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
