package handler_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestJSONDepthIsBounded: a body nested deeper than MaxJSONDepth is a 400
// that says so, and nothing is stored; 64 levels are fine.
func TestJSONDepthIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	nested := func(id string, levels int) []byte {
		// The top-level object is the first level.
		return []byte(`{"id":"` + id + `","x":` + strings.Repeat("[", levels-1) + strings.Repeat("]", levels-1) + `}`)
	}
	if a := b.post(t, "open", nested("d64", 64), nil); a.status != 200 {
		t.Errorf("64 levels: %d %s", a.status, a.raw)
	}
	a := b.post(t, "open", nested("d65", 65), nil)
	if a.status != 400 || a.decoded["error"] != "the body is refused: its JSON nests arrays and objects more than 64 levels deep" {
		t.Errorf("65 levels: %d %s", a.status, a.raw)
	}
	// Deep and unterminated is simply invalid JSON.
	a = b.post(t, "open", []byte(strings.Repeat("[", 1500)), nil)
	if a.status != 400 || !strings.Contains(a.decoded["error"], "not valid JSON") {
		t.Errorf("unterminated: %d %s", a.status, a.raw)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key <> 'd64'`); n != 0 {
		t.Errorf("%d refused events stored", n)
	}
}

// TestUncleanPathsAnswerJSON404: paths that are not clean get intake's
// JSON 404, not a bare redirect (found by FuzzIntake: POST /webhooks/.
// answered 301 with no body).
func TestUncleanPathsAnswerJSON404(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/webhooks/.", "/webhooks/..", "/webhooks//genesys", "/webhooks/./genesys", "/webhooks/genesys/"} {
		req, _ := http.NewRequest(http.MethodPost, b.server.URL+path, strings.NewReader(`{"id":"x"}`))
		req.URL.Opaque = path // sent exactly as written
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.HasPrefix(string(raw), `{"error":"no `) {
			t.Errorf("POST %s: %d %s", path, resp.StatusCode, raw)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// TestLoneSurrogateKeyIsRefused: ids that differ only in lone surrogate
// escapes would all decode to U+FFFD and be merged as duplicates; they are
// refused instead, while a proper surrogate pair is a key like any other.
func TestLoneSurrogateKeyIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, body := range []string{`{"id":"\ud800"}`, `{"id":"\udbff"}`} {
		a := b.post(t, "open", []byte(body), nil)
		if a.status != 422 || !strings.Contains(a.decoded["error"], "lone UTF-16 surrogate") {
			t.Errorf("%s: %d %s", body, a.status, a.raw)
		}
	}
	if a := b.post(t, "open", []byte(`{"id":"smile-\ud83d\ude00"}`), nil); a.status != 200 || a.decoded["key"] != "smile-😀" {
		t.Errorf("surrogate pair: %d %s", a.status, a.raw)
	}
}
