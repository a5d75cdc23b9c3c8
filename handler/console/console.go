// Package console is the operator console served at /console/: an
// overview of the routes, the dead letters with their payloads and
// attempts, events, replays, and pausing routes, as server-rendered HTML.
//
// It works without JavaScript; a small embedded script adds conveniences
// (confirmation dialogs, the copy button). Its assets are embedded, and it
// fetches nothing from elsewhere. Payloads, headers and errors are the
// senders' and targets' text, so everything is escaped by html/template,
// and the pages send a strict Content-Security-Policy.
//
// The router puts it behind the admin token. Every state-changing action
// is a POST, refused with 403 when it comes from another origin
// (http.CrossOriginProtection) or without the form's token, logged with
// the client's address, and answered with a redirect to a page that shows
// the result.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/store"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

// Prefix is where the console is mounted.
const Prefix = "/console"

// Operator carries out the operators' actions, with the same semantics as
// the CLI and the admin API (store.Admin today).
type Operator interface {
	Routes(ctx context.Context) ([]admin.RouteStatus, error)
	Pause(ctx context.Context, route string) error
	Resume(ctx context.Context, route string) error
	RetryDeadLetters(ctx context.Context, req admin.RetryRequest) (*admin.RetryResult, error)
	Replay(ctx context.Context, req admin.ReplayRequest) (*admin.ReplayResult, error)
}

// Reader runs the console's read-only queries (store.Store).
type Reader interface {
	Activity(ctx context.Context, since time.Time) ([]store.MinuteActivity, error)
	SearchDeadLetters(ctx context.Context, f outbox.DeadLetterFilter, limit int, cursor string, budget time.Duration) (*store.SearchPage[outbox.DeadLetter], error)
	CountDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) (int64, error)
	DeadLetterView(ctx context.Context, jobID int64, previewBytes int) (*store.DeadLetterView, error)
	EventView(ctx context.Context, route, key string, previewBytes int) (*store.EventView, error)
	EventBody(ctx context.Context, id int64) (*store.StoredBody, error)
	SearchEvents(ctx context.Context, q store.EventSearch, limit int, cursor string, budget time.Duration) (*store.SearchPage[store.EventSummary], error)
}

// Options are the console's dependencies.
type Options struct {
	Operator Operator
	Reader   Reader
	Config   *config.Config
	// AdminToken keys the forms' anti-forgery tokens and the signed result
	// messages, so that every replica accepts the forms of every other.
	AdminToken string
	Logger     *slog.Logger
	// ClientAddr names the client of a request in the action log; the
	// peer's address when nil.
	ClientAddr func(*http.Request) string
	// RiverUI is where River UI is mounted ("/riverui"); "" hides the links.
	RiverUI string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Limits of what one page reads and shows.
const (
	// pageSize is the rows of a list page.
	pageSize = 50
	// previewBytes bounds the payload shown on a page; the rest is a
	// download.
	previewBytes = 64 << 10
	// searchBudget is how long a payload search scans before it shows what
	// it found and offers to go on.
	searchBudget = time.Second
	// actionTimeout bounds a bulk action, which goes on if the browser
	// leaves.
	actionTimeout = 10 * time.Minute
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console serves the console's pages.
type Console struct {
	op       Operator
	rd       Reader
	cfg      *config.Config
	routes   map[string]*config.Route
	logger   *slog.Logger
	client   func(*http.Request) string
	riverUI  string
	now      func() time.Time
	keys     keys
	pages    map[string]*template.Template
	mux      *http.ServeMux
	activity *activityCache
	csrf     *http.CrossOriginProtection
}

// New returns the console.
func New(opts Options) (*Console, error) {
	if opts.Operator == nil || opts.Reader == nil || opts.Config == nil {
		return nil, errors.New("console: Operator, Reader and Config are required")
	}
	if opts.AdminToken == "" {
		return nil, errors.New("console: an admin token is required")
	}
	c := &Console{
		op: opts.Operator, rd: opts.Reader, cfg: opts.Config, logger: opts.Logger,
		client: opts.ClientAddr, riverUI: opts.RiverUI, now: opts.Now,
		keys: newKeys(opts.AdminToken), routes: map[string]*config.Route{},
		csrf: http.NewCrossOriginProtection(),
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.client == nil {
		c.client = func(r *http.Request) string {
			if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
				return host
			}
			return r.RemoteAddr
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	for i := range opts.Config.Routes {
		c.routes[opts.Config.Routes[i].Name] = &opts.Config.Routes[i]
	}
	c.activity = newActivityCache(c.rd, c.now)
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.mux = c.routesMux()
	return c, nil
}

func (c *Console) routesMux() *http.ServeMux {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix+"/static/", staticFiles(static)))
	m.HandleFunc("GET "+Prefix+"/{$}", c.overview)
	m.HandleFunc("GET "+Prefix+"/dead-letters", c.deadLetters)
	m.HandleFunc("GET "+Prefix+"/dead-letters/retry", c.confirmRetryMatching)
	m.HandleFunc("POST "+Prefix+"/dead-letters/retry", c.retryMatching)
	m.HandleFunc("GET "+Prefix+"/dead-letters/{id}", c.deadLetter)
	m.HandleFunc("POST "+Prefix+"/dead-letters/{id}/retry", c.retryOne)
	m.HandleFunc("GET "+Prefix+"/events", c.events)
	m.HandleFunc("GET "+Prefix+"/event", c.event)
	m.HandleFunc("POST "+Prefix+"/event/replay", c.replayOne)
	m.HandleFunc("GET "+Prefix+"/events/replay", c.confirmReplayRange)
	m.HandleFunc("POST "+Prefix+"/events/replay", c.replayRange)
	m.HandleFunc("GET "+Prefix+"/events/{id}/body", c.rawBody)
	m.HandleFunc("GET "+Prefix+"/routes", c.routesPage)
	m.HandleFunc("POST "+Prefix+"/routes/{route}/pause", c.pause)
	m.HandleFunc("POST "+Prefix+"/routes/{route}/resume", c.resume)
	m.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", "Not found", errorPage{Message: "There is no console page at " + r.URL.Path + "."})
	})
	return m
}

// ServeHTTP serves the console. Every answer forbids framing and loading
// anything from elsewhere; POSTs must come from the console's own origin
// and carry the form's token.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if r.Method == http.MethodPost {
		if err := c.csrf.Check(r); err != nil {
			c.logger.Warn("console refused a cross-origin request", "method", r.Method, "path", r.URL.Path,
				"origin", r.Header.Get("Origin"), "client", c.client(r))
			c.render(w, r, http.StatusForbidden, "error", "Refused", errorPage{
				Message: "This request came from another site. Actions are only accepted from the console's own pages.",
			})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if !c.keys.validForm(r.PostFormValue("csrf")) {
			c.logger.Warn("console refused a POST without a valid form token", "path", r.URL.Path, "client", c.client(r))
			c.render(w, r, http.StatusForbidden, "error", "Refused", errorPage{
				Message: "This form has no valid token. Open the page again and resubmit it from there.",
			})
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// staticFiles serves the embedded assets, cached for an hour.
func staticFiles(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// errorPage is what the error template shows.
type errorPage struct {
	Message string
	Back    string
}

// fail answers an operation's error: an operator's mistake is shown as
// such (400 or 404); anything else is logged and shown as the database
// being unavailable, without its details.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case outbox.ErrorCode(err) == outbox.EINVALID:
		c.render(w, r, http.StatusBadRequest, "error", "Cannot do that", errorPage{Message: userMessage(err), Back: r.Referer()})
	case outbox.ErrorCode(err) == outbox.ENOTFOUND:
		c.render(w, r, http.StatusNotFound, "error", "Not found", errorPage{Message: userMessage(err)})
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The browser went away.
	default:
		c.logger.Error("console request failed", "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", "5")
		c.render(w, r, http.StatusServiceUnavailable, "error", "Unavailable", errorPage{
			Message: "The database is unavailable or failing, so this page cannot be shown now. Try again in a moment; the server log has the details.",
		})
	}
}

// userMessage is an operator-facing error's message for people.
func userMessage(err error) string { return outbox.ErrorMessage(err) }

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Flash   string
	CSRF    string
	RiverUI string
	Now     time.Time
	Data    any
}

var bufPool = sync.Pool{New: func() any { return new(strings.Builder) }}

// render executes a page's template into a buffer first, so a template
// error is a clean 500, never half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	t := c.pages[name]
	p := page{
		Title: title, Nav: navOf(r.URL.Path), Flash: c.keys.flash(r.URL.Query()), CSRF: c.keys.formToken(),
		RiverUI: c.riverUI, Now: c.now(), Data: data,
	}
	buf := bufPool.Get().(*strings.Builder)
	buf.Reset()
	defer bufPool.Put(buf)
	if err := t.ExecuteTemplate(buf, "layout", p); err != nil {
		c.logger.Error("console template failed", "page", name, "error", err)
		http.Error(w, "internal error rendering the page; the server log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

func navOf(path string) string {
	rest := strings.TrimPrefix(path, Prefix+"/")
	switch {
	case strings.HasPrefix(rest, "dead-letters"):
		return "dead-letters"
	case strings.HasPrefix(rest, "event"):
		return "events"
	case strings.HasPrefix(rest, "routes"):
		return "routes"
	}
	return "overview"
}

// redirect answers a POST with 303 to target, carrying a signed result
// message.
func (c *Console) redirect(w http.ResponseWriter, r *http.Request, target, msg string) {
	http.Redirect(w, r, c.keys.withFlash(target, msg), http.StatusSeeOther)
}

// logAction records an operator's action with the client's address.
func (c *Console) logAction(r *http.Request, action string, attrs ...any) {
	c.logger.Info("console action", append([]any{"action", action, "client", c.client(r)}, attrs...)...)
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", one)
	}
	return fmt.Sprintf("%s %s", formatCount(n), many)
}
