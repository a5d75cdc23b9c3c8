package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/webhook-outbox/webhook-outbox/store"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

// searchForm is the events page's search: by route and key, or by route,
// time range and payload condition.
type searchForm struct {
	Route, Key, Since, Until, Payload string
}

func (s searchForm) Query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"route": s.Route, "key": s.Key, "since": s.Since, "until": s.Until, "payload": s.Payload} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

type eventsData struct {
	Search   searchForm
	Routes   []string
	Error    string
	Searched bool
	Page     *store.SearchPage[store.EventSummary]
	NextURL  string
	// Replay is the replay-a-range form's values.
	ReplayRoute, ReplaySince, ReplayUntil string
}

// defaultSearchWindow is how far back an event search looks when no start
// is given.
const defaultSearchWindow = 24 * time.Hour

// events finds events: by route and key (straight to its page; without a
// route, each route is tried), or by payload condition in a time range.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s := searchForm{
		Route: strings.TrimSpace(q.Get("route")), Key: q.Get("key"), Since: strings.TrimSpace(q.Get("since")),
		Until: strings.TrimSpace(q.Get("until")), Payload: strings.TrimSpace(q.Get("payload")),
	}
	data := eventsData{Search: s, Routes: c.routeNames(), ReplayRoute: s.Route}
	fail := func(err error) {
		if isInvalid(err) {
			data.Error = userMessage(err)
			c.render(w, r, http.StatusBadRequest, "events", "Events", data)
			return
		}
		c.fail(w, r, err)
	}
	if s.Route != "" && c.routes[s.Route] == nil {
		fail(outbox.Errorf(outbox.EINVALID, "no route named %q", s.Route))
		return
	}
	switch {
	case s.Key != "":
		routes := []string{s.Route}
		if s.Route == "" {
			routes = c.routeNames()
		}
		for _, route := range routes {
			_, err := c.rd.EventView(r.Context(), route, s.Key, 1)
			if err == nil {
				http.Redirect(w, r, eventURL(route, s.Key), http.StatusSeeOther)
				return
			}
			if !isNotFound(err) {
				c.fail(w, r, err)
				return
			}
		}
		data.Error = fmt.Sprintf("No event with key %q", s.Key)
		if s.Route != "" {
			data.Error += " on route " + s.Route
		}
		data.Error += " (never received, or removed by event_retention)."
		c.render(w, r, http.StatusNotFound, "events", "Events", data)
		return
	case s.Route != "" && (s.Payload != "" || s.Since != "" || s.Until != ""):
		now := c.now()
		search := store.EventSearch{Route: s.Route}
		var err error
		if search.Since, err = admin.ParseTime("since", s.Since, now); err != nil {
			fail(err)
			return
		}
		if search.Since.IsZero() {
			search.Since = now.Add(-defaultSearchWindow)
		}
		if search.Until, err = admin.ParseTime("until", s.Until, now); err != nil {
			fail(err)
			return
		}
		if search.Until.IsZero() {
			search.Until = now.Add(time.Second)
		}
		if search.Payload, err = admin.ParsePayloadCondition(s.Payload); err != nil {
			fail(err)
			return
		}
		data.Searched = true
		data.Page, err = c.rd.SearchEvents(r.Context(), search, pageSize, q.Get("cursor"), searchBudget)
		if err != nil {
			fail(err)
			return
		}
		if data.Page.Next != "" {
			next := s.Query()
			next.Set("cursor", data.Page.Next)
			data.NextURL = Prefix + "/events?" + next.Encode()
		}
		data.ReplaySince, data.ReplayUntil = s.Since, s.Until
	case s.Payload != "" || s.Since != "":
		fail(outbox.Errorf(outbox.EINVALID, "choose a route to search its events by payload or time"))
		return
	}
	c.render(w, r, http.StatusOK, "events", "Events", data)
}

func isNotFound(err error) bool { return outbox.ErrorCode(err) == outbox.ENOTFOUND }

type eventData struct {
	Ev       *store.EventView
	Payload  payloadView
	Jobs     []jobData
	DeadJob  int64
	Waiting  bool
	RiverUI  string
	Budget   routeBudget
	Resolved string
}

type jobData struct {
	store.JobView
	Attempts []attempt
	RiverURL string
}

// event shows one event: its state, the stored request, and every delivery
// job with its attempts; and offers to replay it.
func (c *Console) event(w http.ResponseWriter, r *http.Request) {
	route, key := r.URL.Query().Get("route"), r.URL.Query().Get("key")
	if route == "" || key == "" {
		http.Redirect(w, r, Prefix+"/events", http.StatusSeeOther)
		return
	}
	ev, err := c.rd.EventView(r.Context(), route, key, previewBytes)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := eventData{Ev: ev, Payload: newPayloadView(ev.Preview, ev.BodyBytes, ev.ContentType, fmt.Sprintf("%s/events/%d/body", Prefix, ev.ID))}
	for i := len(ev.Jobs) - 1; i >= 0; i-- { // newest first
		j := ev.Jobs[i]
		jd := jobData{JobView: j, Attempts: parseAttempts(j.Errors)}
		if c.riverUI != "" {
			jd.RiverURL = fmt.Sprintf("%s/jobs/%d", c.riverUI, j.ID)
		}
		data.Jobs = append(data.Jobs, jd)
	}
	if ev.State == "dead" && len(ev.Jobs) > 0 {
		data.DeadJob = ev.Jobs[len(ev.Jobs)-1].ID
	}
	switch ev.State {
	case "queued", "delivering", "retrying", "scheduled":
		data.Waiting = true
	}
	if b := c.budgets(route); len(b) == 1 {
		data.Budget = b[0]
	}
	c.render(w, r, http.StatusOK, "event", "Event "+key, data)
}

// replayOne delivers one event again, whatever its state, as `outbox
// replay` does for a range: a dead letter is revived with a full budget,
// a delivered event gets a new delivery with the same X-Outbox-Key, and an
// event already waiting is left alone.
func (c *Console) replayOne(w http.ResponseWriter, r *http.Request) {
	route, key := r.PostFormValue("route"), r.PostFormValue("key")
	res, err := c.op.Replay(r.Context(), admin.ReplayRequest{Route: route, Key: key})
	if err != nil {
		c.logAction(r, "replay event", "route", route, "key", key, "error", err)
		c.fail(w, r, err)
		return
	}
	c.logAction(r, "replay event", "route", route, "key", key, "replayed", res.Replayed, "revived", res.Revived, "skipped", res.Skipped)
	var msg string
	switch {
	case res.Replayed > 0:
		msg = "Replayed: the event is queued for delivery again, with the same X-Outbox-Key."
	case res.Revived > 0:
		msg = "Replayed: the dead letter is queued for delivery again with a full budget."
	case res.Skipped > 0:
		msg = "Not replayed: a delivery of this event is already waiting or running."
	default:
		msg = "Nothing was replayed: the event was not found in its window."
	}
	c.redirect(w, r, eventURL(route, key), msg)
}

// replayForm is a replay of a route's events received in a time range.
type replayForm struct {
	Route, Since, Until string
	req                 admin.ReplayRequest
}

func (c *Console) readReplay(v url.Values) (replayForm, error) {
	f := replayForm{Route: strings.TrimSpace(v.Get("route")), Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until"))}
	now := c.now()
	f.req.Route = f.Route
	var err error
	if f.Route == "" {
		return f, outbox.Errorf(outbox.EINVALID, "choose the route to replay")
	}
	if f.Since == "" {
		return f, outbox.Errorf(outbox.EINVALID, "give the start of the range to replay (since), for example 2h or 2026-11-28T09:00:00Z")
	}
	if f.req.Since, err = admin.ParseTime("since", f.Since, now); err != nil {
		return f, err
	}
	if f.req.Until, err = admin.ParseTime("until", f.Until, now); err != nil {
		return f, err
	}
	// A duration is resolved once, on the confirmation page, so that the
	// replay covers the range that was counted.
	f.Since = f.req.Since.UTC().Format(time.RFC3339Nano)
	if f.req.Until.IsZero() {
		f.req.Until = now
	}
	f.Until = f.req.Until.UTC().Format(time.RFC3339Nano)
	return f, nil
}

type confirmReplayData struct {
	Form   replayForm
	Result *admin.ReplayResult
	Budget routeBudget
}

func (c *Console) confirmReplayRange(w http.ResponseWriter, r *http.Request) {
	f, err := c.readReplay(r.URL.Query())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	req := f.req
	req.DryRun = true
	res, err := c.op.Replay(r.Context(), req)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := confirmReplayData{Form: f, Result: res}
	if b := c.budgets(f.Route); len(b) == 1 {
		data.Budget = b[0]
	}
	c.render(w, r, http.StatusOK, "confirm-replay", "Replay", data)
}

func (c *Console) replayRange(w http.ResponseWriter, r *http.Request) {
	f, err := c.readReplay(r.PostForm)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), actionTimeout)
	defer cancel()
	res, err := c.op.Replay(ctx, f.req)
	attrs := []any{"route", f.Route, "since", f.Since, "until", f.Until}
	if res != nil {
		attrs = append(attrs, "matched", res.Matched, "replayed", res.Replayed, "revived", res.Revived, "skipped", res.Skipped)
	}
	if err != nil {
		c.logAction(r, "replay range", append(attrs, "error", err)...)
		c.fail(w, r, err)
		return
	}
	c.logAction(r, "replay range", attrs...)
	msg := fmt.Sprintf("Replayed %s of route %s: %s queued again, %s revived with a full budget, %s skipped (a delivery was already waiting).",
		plural(res.Matched, "event", "events"), f.Route, formatCount(res.Replayed), formatCount(res.Revived), formatCount(res.Skipped))
	back := Prefix + "/events?" + url.Values{"route": {f.Route}, "since": {f.Since}, "until": {f.Until}}.Encode()
	c.redirect(w, r, back, msg)
}
