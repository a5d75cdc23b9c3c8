package handler_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/webhook-outbox/webhook-outbox/handler"
)

// send makes a request with the given headers and body, and returns the
// status, headers and body of the answer.
func (b *adminBundle) send(t *testing.T, method, path, body string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.server.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

func (b *adminBundle) paused(t *testing.T, route string) bool {
	t.Helper()
	var paused bool
	err := b.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM river_queue WHERE name = $1 AND paused_at IS NOT NULL)`, route).Scan(&paused)
	if err != nil {
		t.Fatal(err)
	}
	return paused
}

// A page on another site, in the operator's browser, which holds the admin
// token as cached Basic credentials.
var crossSite = map[string]string{
	"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors",
	"Content-Type": "text/plain;charset=UTF-8", "Authorization": basicAuth("operator", adminToken),
}

func basicAuth(user, pass string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// TestCrossSiteWritesAreRefused: a cross-site POST with the operator's
// Basic credentials to pause a route, replay, or cancel a job in River UI
// answers 403 with a JSON error and changes nothing, whether the browser
// sends Sec-Fetch-Site or only Origin. A script with the Bearer token and
// no browser headers, and River UI's own same-origin requests, still work.
func TestCrossSiteWritesAreRefused(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	status, _, raw := b.send(t, "POST", "/webhooks/genesys", `{"id":"victim"}`, map[string]string{"Content-Type": "application/json", "X-Webhook-Token": genesysToken})
	if status != 200 {
		t.Fatalf("intake: %d %s", status, raw)
	}
	var jobID int64
	if err := b.pool.QueryRow(context.Background(), `SELECT id FROM river_job`).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	jobState := func() string {
		var state string
		if err := b.pool.QueryRow(context.Background(), `SELECT state::text FROM river_job WHERE id = $1`, jobID).Scan(&state); err != nil {
			t.Fatal(err)
		}
		return state
	}
	cancel := `{"ids":["` + strconv.FormatInt(jobID, 10) + `"]}`
	forbidden := func(what string, status int, header http.Header, raw string) {
		t.Helper()
		assert.Equal(t, 403, status, "%s: %s", what, raw)
		assert.Equal(t, "application/json", header.Get("Content-Type"), "%s: %s", what, raw)
		assert.True(t, strings.HasPrefix(raw, `{"error":"cross-origin request refused`), "%s: %s", what, raw)
	}
	for name, headers := range map[string]map[string]string{
		"Sec-Fetch-Site":   crossSite,
		"Origin only":      with(crossSite, "Sec-Fetch-Site", ""),
		"same-site":        with(crossSite, "Sec-Fetch-Site", "same-site"),
		"JSON, cross-site": with(crossSite, "Content-Type", "application/json"),
	} {
		status, header, raw := b.send(t, "POST", "/admin/v1/routes/genesys/pause", "", headers)
		forbidden("pause, "+name, status, header, raw)
		status, header, raw = b.send(t, "POST", "/admin/v1/events/replay", `{"route":"genesys","since":"1h"}`, headers)
		forbidden("replay, "+name, status, header, raw)
		status, header, raw = b.send(t, "POST", "/riverui/api/jobs/cancel", cancel, headers)
		forbidden("River UI cancel, "+name, status, header, raw)
		status, header, raw = b.send(t, "POST", "/riverui/api/jobs/delete", cancel, headers)
		forbidden("River UI delete, "+name, status, header, raw)
	}
	if b.paused(t, "genesys") {
		t.Error("a cross-site request paused the route")
	}
	if state := jobState(); state != "available" {
		t.Errorf("after cross-site requests the job is %s", state)
	}

	// A script: Bearer token, no Origin, no Sec-Fetch-Site.
	status, _, raw = b.send(t, "POST", "/admin/v1/routes/genesys/pause", "", map[string]string{"Authorization": "Bearer " + adminToken})
	assert.Equal(t, 200, status, "pause from a script: %s", raw)
	assert.True(t, b.paused(t, "genesys"), "pause from a script: %s", raw)
	// River UI's own button: same origin, with the text/plain body its
	// frontend sends.
	status, _, raw = b.send(t, "POST", "/riverui/api/jobs/cancel", cancel, with(crossSite, "Origin", b.server.URL, "Sec-Fetch-Site", "same-origin"))
	assert.Equal(t, 200, status, "River UI's own cancel: %s", raw)
	assert.Equal(t, "cancelled", jobState(), "River UI's own cancel: %s", raw)
}

// TestAdminBodiesMustBeJSON: admin endpoints that read a body take it only
// as application/json (415 otherwise); pause and resume take none.
func TestAdminBodiesMustBeJSON(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}
	for _, path := range []string{"/admin/v1/events/replay", "/admin/v1/dead-letters/retry"} {
		for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
			status, _, raw := b.send(t, "POST", path, `{"route":"genesys","since":"1h","dry_run":true}`, with(bearer, "Content-Type", ct))
			assert.Equal(t, 415, status, "%s as %q: %s", path, ct, raw)
			assert.Equal(t, `{"error":"this endpoint takes a JSON body: send Content-Type: application/json"}`+"\n", raw, "%s as %q", path, ct)
		}
		status, _, raw := b.send(t, "POST", path, `{"route":"genesys","since":"1h","dry_run":true}`, with(bearer, "Content-Type", "application/json; charset=utf-8"))
		if status != 200 {
			t.Errorf("%s as JSON: %d %s", path, status, raw)
		}
	}
	if status, _, raw := b.send(t, "POST", "/admin/v1/routes/genesys/pause", "", bearer); status != 200 {
		t.Errorf("pause without a body: %d %s", status, raw)
	}
}

// TestOperatorPagesCannotBeFramed: every answer under /admin/, /riverui/
// and /console/ forbids framing, 401s included, and the console is served
// behind the admin token and the cross-origin protection.
func TestOperatorPagesCannotBeFramed(t *testing.T) {
	t.Parallel()
	var reached atomic.Int32
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		_, _ = w.Write([]byte("console " + r.URL.Path))
	})
	b := setupAdminWith(t, func(o *handler.RouterOptions) { o.Console = console })
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}
	for _, c := range []struct {
		path    string
		headers map[string]string
		status  int
	}{
		{"/riverui/", bearer, 200}, {"/riverui/", nil, 401}, {"/console/", bearer, 200}, {"/console/dead-letters/7", bearer, 200},
		{"/console/", nil, 401}, {"/admin/v1/routes", bearer, 200},
	} {
		status, header, raw := b.send(t, "GET", c.path, "", c.headers)
		assert.Equal(t, c.status, status, "GET %s: %.100s", c.path, raw)
		assert.Equal(t, "DENY", header.Get("X-Frame-Options"), "GET %s: X-Frame-Options", c.path)
		assert.Equal(t, "frame-ancestors 'none'", header.Get("Content-Security-Policy"), "GET %s: Content-Security-Policy", c.path)
	}
	if n := reached.Load(); n != 2 {
		t.Errorf("the console was reached %d times, want 2", n)
	}
	status, _, raw := b.send(t, "POST", "/console/dead-letters/7/retry", "", with(crossSite, "Authorization", "Bearer "+adminToken))
	assert.Equal(t, 403, status, "cross-site console retry: %s", raw)
	assert.EqualValues(t, 2, reached.Load(), "cross-site console retry reached the console")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(b.server.URL + "/console")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	assert.Equal(t, 301, resp.StatusCode, "/console: %v", resp.Header)
	assert.Equal(t, "/console/", resp.Header.Get("Location"), "/console: %v", resp.Header)
}

// TestAdminChallenges: the admin API always gets a Bearer challenge, which
// no browser prompts for, so a browser never keeps the token from it. River
// UI and the console ask for Basic credentials (the login prompt, and the
// browser's cue to resend them), except when another site's page makes the
// request. No 401 is cached.
func TestAdminChallenges(t *testing.T) {
	t.Parallel()
	b := setupAdminWith(t, func(o *handler.RouterOptions) { o.Console = http.NotFoundHandler() })
	for _, c := range []struct {
		method, path, site, dest, mode, want string
	}{
		{"GET", "/riverui/", "", "", "", "Basic"},
		{"GET", "/riverui/", "none", "document", "navigate", "Basic"},
		{"GET", "/console/", "same-origin", "document", "navigate", "Basic"},
		{"POST", "/console/dead-letters/1/retry", "same-origin", "document", "navigate", "Basic"},
		{"GET", "/riverui/api/jobs", "same-origin", "empty", "cors", "Basic"},
		{"GET", "/riverui/", "cross-site", "document", "navigate", "Basic"}, // a link on a wiki
		{"GET", "/riverui/", "cross-site", "iframe", "navigate", "Bearer"},
		{"GET", "/riverui/api/jobs", "cross-site", "image", "no-cors", "Bearer"},
		{"GET", "/console/", "same-site", "empty", "cors", "Bearer"},
		{"GET", "/admin/v1/routes", "", "", "", "Bearer"},
		{"GET", "/admin/v1/routes", "none", "document", "navigate", "Bearer"},
	} {
		status, header, _ := b.send(t, c.method, c.path, "", with(nil, "Sec-Fetch-Site", c.site, "Sec-Fetch-Dest", c.dest, "Sec-Fetch-Mode", c.mode))
		got, _, _ := strings.Cut(header.Get("WWW-Authenticate"), " ")
		assert.Equal(t, 401, status, "%s %s (site %q, dest %q)", c.method, c.path, c.site, c.dest)
		assert.Equal(t, c.want, got, "%s %s (site %q, dest %q): WWW-Authenticate %q", c.method, c.path, c.site, c.dest, header.Get("WWW-Authenticate"))
		assert.Equal(t, "no-store", header.Get("Cache-Control"), "%s %s (site %q, dest %q): Cache-Control", c.method, c.path, c.site, c.dest)
	}
	// A wrong token: the same rule.
	status, header, _ := b.send(t, "GET", "/admin/v1/routes", "", map[string]string{"Authorization": basicAuth("u", "wrong")})
	assert.Equal(t, 401, status, "wrong Basic password on the API")
	assert.True(t, strings.HasPrefix(header.Get("WWW-Authenticate"), "Bearer"), "wrong Basic password on the API: WWW-Authenticate %q", header.Get("WWW-Authenticate"))
}
