package handler_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestRequestIDIsKeptOrMadeAndTravelsWithTheJob(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// A sane id from the caller is kept and echoed.
	a := b.post(t, "genesys", []byte(`{"id":"rid-1"}`), map[string]string{"X-Request-Id": "trace-7f3a:span/42"})
	if a.status != 200 || a.header.Get("X-Request-Id") != "trace-7f3a:span/42" {
		t.Fatalf("got %d, X-Request-Id %q", a.status, a.header.Get("X-Request-Id"))
	}
	var meta string
	if err := b.pool.QueryRow(context.Background(), `SELECT metadata->>'request_id' FROM river_job WHERE args->>'key' = 'rid-1'`).Scan(&meta); err != nil || meta != "trace-7f3a:span/42" {
		t.Errorf("job metadata request_id = %q (err %v), want the request's id", meta, err)
	}

	// An id that could forge a log line or is absurdly long is replaced.
	made := map[string]bool{}
	for i, bad := range []string{"", "has space", `quote"d`, "<script>", strings.Repeat("a", 129)} {
		key := []byte(`{"id":"rid-bad-` + string(rune('a'+i)) + `"}`)
		a := b.post(t, "genesys", key, map[string]string{"X-Request-Id": bad})
		got := a.header.Get("X-Request-Id")
		if a.status != 200 || got == "" || got == bad || strings.ContainsAny(got, " \"<>") || len(got) > 128 {
			t.Errorf("X-Request-Id %q: answered %d with id %q, want a fresh safe id", bad, a.status, got)
		}
		made[got] = true
	}
	if len(made) != 5 {
		t.Errorf("generated ids are not unique: %v", made)
	}

	// Every answer carries one, not only intake's.
	for _, path := range []string{"/healthz", "/no/such/endpoint", "/webhooks/nope"} {
		method := http.MethodGet
		if strings.HasPrefix(path, "/webhooks/") {
			method = http.MethodPost
		}
		req, _ := http.NewRequest(method, b.server.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s %s: answer %d has no X-Request-Id", method, path, resp.StatusCode)
		}
	}
}
