package console

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/webhook-outbox/webhook-outbox/store"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

// filterForm is the dead-letter filters as the form and the URLs carry
// them, and as the store reads them.
type filterForm struct {
	Route, Since, Until, Error, Payload string
	filter                              outbox.DeadLetterFilter
}

func (c *Console) readFilter(q url.Values) (filterForm, error) {
	f := filterForm{
		Route: strings.TrimSpace(q.Get("route")), Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")),
		Error: q.Get("error"), Payload: strings.TrimSpace(q.Get("payload")),
	}
	now := c.now()
	f.filter = outbox.DeadLetterFilter{Route: f.Route, ErrorContains: f.Error}
	var err error
	if f.Route != "" && c.routes[f.Route] == nil {
		return f, outbox.Errorf(outbox.EINVALID, "no route named %q", f.Route)
	}
	if f.filter.Since, err = admin.ParseTime("since", f.Since, now); err != nil {
		return f, err
	}
	if f.filter.Until, err = admin.ParseTime("until", f.Until, now); err != nil {
		return f, err
	}
	if f.filter.Payload, err = admin.ParsePayloadCondition(f.Payload); err != nil {
		return f, err
	}
	return f, nil
}

// Query is the filters as a URL query, without empty ones.
func (f filterForm) Query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"route": f.Route, "since": f.Since, "until": f.Until, "error": f.Error, "payload": f.Payload} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// Any is true when some filter is set.
func (f filterForm) Any() bool { return len(f.Query()) > 0 }

// URL is path with the filters, and extra parameters.
func (f filterForm) URL(path string, extra ...string) string {
	q := f.Query()
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

type deadLettersData struct {
	Filter   filterForm
	Error    string
	Routes   []string
	Page     *store.SearchPage[outbox.DeadLetter]
	Cursor   string
	NextURL  string
	FirstURL string
	RetryURL string
}

func (c *Console) routeNames() []string {
	names := make([]string, len(c.cfg.Routes))
	for i, r := range c.cfg.Routes {
		names[i] = r.Name
	}
	return names
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := c.readFilter(q)
	data := deadLettersData{Filter: f, Routes: c.routeNames()}
	if err != nil {
		data.Error = userMessage(err)
		c.render(w, r, http.StatusBadRequest, "dead-letters", "Dead letters", data)
		return
	}
	data.Cursor = q.Get("cursor")
	data.Page, err = c.rd.SearchDeadLetters(r.Context(), f.filter, pageSize, data.Cursor, searchBudget)
	if err != nil {
		if isInvalid(err) {
			data.Error = userMessage(err)
			c.render(w, r, http.StatusBadRequest, "dead-letters", "Dead letters", data)
			return
		}
		c.fail(w, r, err)
		return
	}
	if data.Page.Next != "" {
		data.NextURL = f.URL(Prefix+"/dead-letters", "cursor", data.Page.Next)
	}
	data.FirstURL = f.URL(Prefix + "/dead-letters")
	data.RetryURL = f.URL(Prefix + "/dead-letters/retry")
	c.render(w, r, http.StatusOK, "dead-letters", "Dead letters", data)
}

type confirmRetryData struct {
	Filter filterForm
	Count  int64
	Sample []outbox.DeadLetter
	Routes []routeBudget
}

// routeBudget is what a retry gives a route's dead letters.
type routeBudget struct {
	Name        string
	MaxAttempts int
	GiveUpAfter time.Duration
}

func (c *Console) budgets(route string) []routeBudget {
	var out []routeBudget
	for _, rc := range c.cfg.Routes {
		if route == "" || rc.Name == route {
			out = append(out, routeBudget{Name: rc.Name, MaxAttempts: rc.Retry.MaxAttempts, GiveUpAfter: rc.Retry.GiveUpAfter.D()})
		}
	}
	return out
}

// confirmRetryMatching shows how many dead letters "Retry all matching"
// would retry (a dry run), and asks for confirmation.
func (c *Console) confirmRetryMatching(w http.ResponseWriter, r *http.Request) {
	f, err := c.readFilter(r.URL.Query())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	res, err := c.op.RetryDeadLetters(r.Context(), admin.RetryRequest{Filter: &f.filter, DryRun: true})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "confirm-retry", "Retry all matching", confirmRetryData{
		Filter: f, Count: res.Matched, Sample: res.Sample, Routes: c.budgets(f.Route),
	})
}

// retryMatching retries every dead letter matching the form's filters that
// failed before now, with the full budget. It goes on if the browser
// leaves, and reports in the log.
func (c *Console) retryMatching(w http.ResponseWriter, r *http.Request) {
	f, err := c.readFilter(r.PostForm)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if !f.Any() && r.PostFormValue("all") != "yes" {
		c.fail(w, r, outbox.Errorf(outbox.EINVALID, "no filter is set; confirm retrying every dead letter from the confirmation page"))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), actionTimeout)
	defer cancel()
	res, err := c.op.RetryDeadLetters(ctx, admin.RetryRequest{Filter: &f.filter})
	attrs := []any{"filter", f.Query().Encode()}
	if res != nil {
		attrs = append(attrs, "matched", res.Matched, "retried", res.Retried)
	}
	if err != nil {
		c.logAction(r, "retry dead letters", append(attrs, "error", err)...)
		c.fail(w, r, err)
		return
	}
	c.logAction(r, "retry dead letters", attrs...)
	msg := fmt.Sprintf("Retried %s with a full budget; they are queued for delivery.", plural(res.Retried, "dead letter", "dead letters"))
	if n := res.Matched - res.Retried; n > 0 {
		msg += fmt.Sprintf(" %s had changed state meanwhile or belong to a route no longer configured.", plural(n, "other", "others"))
	}
	c.redirect(w, r, f.URL(Prefix+"/dead-letters"), msg)
}

type deadLetterData struct {
	DL          *store.DeadLetterView
	Payload     payloadView
	Attempts    []attempt
	GiveUpAt    time.Time
	MaxAttempts int
	GiveUpAfter time.Duration
	RiverURL    string
	EventURL    string
}

func parseID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}

func (c *Console) deadLetter(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		c.fail(w, r, outbox.Errorf(outbox.ENOTFOUND, "%q is not a job id", r.PathValue("id")))
		return
	}
	dl, err := c.rd.DeadLetterView(r.Context(), id, previewBytes)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := deadLetterData{
		DL:       dl,
		Payload:  newPayloadView(dl.Preview, dl.BodyBytes, dl.ContentType, fmt.Sprintf("%s/events/%d/body", Prefix, dl.EventID)),
		Attempts: parseAttempts(dl.Errors),
		EventURL: eventURL(dl.Route, dl.Key),
	}
	if rc := c.routes[dl.Route]; rc != nil {
		data.MaxAttempts, data.GiveUpAfter = rc.Retry.MaxAttempts, rc.Retry.GiveUpAfter.D()
		data.GiveUpAt = dl.JobCreatedAt.Add(data.GiveUpAfter)
	}
	if dl.GiveUpAt != nil {
		data.GiveUpAt = *dl.GiveUpAt
	}
	if c.riverUI != "" {
		data.RiverURL = fmt.Sprintf("%s/jobs/%d", c.riverUI, dl.JobID)
	}
	c.render(w, r, http.StatusOK, "dead-letter", "Dead letter "+dl.Key, data)
}

func eventURL(route, key string) string {
	return Prefix + "/event?" + url.Values{"route": {route}, "key": {key}}.Encode()
}

// retryOne retries one dead letter with the full budget, then shows its
// event, whose state is now waiting.
func (c *Console) retryOne(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		c.fail(w, r, outbox.Errorf(outbox.ENOTFOUND, "%q is not a job id", r.PathValue("id")))
		return
	}
	res, err := c.op.RetryDeadLetters(r.Context(), admin.RetryRequest{IDs: []admin.Identifier{{JobID: id}}})
	if err != nil {
		c.logAction(r, "retry dead letter", "job_id", id, "error", err)
		c.fail(w, r, err)
		return
	}
	c.logAction(r, "retry dead letter", "job_id", id, "retried", res.Retried)
	if res.Retried == 0 {
		why := "it is no longer a dead letter"
		if len(res.NotRetried) > 0 {
			why = res.NotRetried[0]
		}
		c.redirect(w, r, fmt.Sprintf("%s/dead-letters/%d", Prefix, id), "Not retried: "+why)
		return
	}
	d := res.Sample[0]
	msg := fmt.Sprintf("Retried job %d with a full budget: it is queued for delivery.", id)
	if rc := c.routes[d.Route]; rc != nil {
		msg = fmt.Sprintf("Retried job %d with a full budget (%d attempts, give up after %s): it is queued for delivery.", id, rc.Retry.MaxAttempts, configDuration(rc.Retry.GiveUpAfter.D()))
	}
	c.redirect(w, r, eventURL(d.Route, d.Key), msg)
}

// rawBody serves an event's stored bytes as a download: never rendered by
// the browser, whatever they hold.
func (c *Console) rawBody(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		c.fail(w, r, outbox.Errorf(outbox.ENOTFOUND, "%q is not an event id", r.PathValue("id")))
		return
	}
	body, err := c.rd.EventBody(r.Context(), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	name := fmt.Sprintf("%s-event-%d.json", body.Route, id)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("Content-Length", strconv.Itoa(len(body.Body)))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body.Body)
}

func isInvalid(err error) bool { return outbox.ErrorCode(err) == outbox.EINVALID }
