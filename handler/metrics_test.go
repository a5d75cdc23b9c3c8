package handler_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/webhook-outbox/webhook-outbox/internal/scrape"
)

// An oversized body streamed without Content-Length is cut off, and the
// connection is closed rather than drained: the metrics wrapper around
// intake must not hide the cut-off from the server.
func TestOversizedStreamedBodyClosesTheConnection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"id":"big","pad":"` + strings.Repeat("x", 3000) + `"}`
	req, _ := http.NewRequest(http.MethodPost, b.server.URL+"/webhooks/genesys", io.MultiReader(bytes.NewReader([]byte(body))))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", genesysToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Errorf("got %d with Connection: close %v, want 413 and a closed connection", resp.StatusCode, resp.Close)
	}
}

func TestIntakeMetricsLabelOnlyConfiguredRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.post(t, "genesys", []byte(`{"id":"secret-looking-key-123"}`), nil)
	b.post(t, "genesys", []byte(`{"id":"secret-looking-key-123"}`), nil)
	b.post(t, "genesys", []byte(`{"id":"x"}`), map[string]string{"X-Webhook-Token": "wrong"})
	b.post(t, "scanner-probe-98765", []byte(`{"id":"x"}`), nil)

	m := scrape.Get(t, b.server.URL+"/metrics")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"outbox_intake_requests_total", []string{"route", "genesys", "status", "200"}, 2},
		{"outbox_intake_requests_total", []string{"route", "genesys", "status", "401"}, 1},
		{"outbox_intake_requests_total", []string{"route", "_unknown", "status", "404"}, 1},
		{"outbox_intake_events_total", []string{"route", "genesys", "result", "accepted"}, 1},
		{"outbox_intake_events_total", []string{"route", "genesys", "result", "duplicate"}, 1},
		{"outbox_intake_events_total", []string{"route", "open", "result", "accepted"}, 0},
		{"outbox_intake_duration_seconds", []string{"route", "genesys"}, 3},
		{"outbox_intake_duration_seconds", []string{"route", "_unknown"}, 1},
	} {
		if got, ok := m.Value(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, leak := range []string{"secret-looking-key-123", "scanner-probe-98765", "wrong"} {
		if strings.Contains(m.Raw, leak) {
			t.Errorf("/metrics mentions %q: a sender-chosen value became a label", leak)
		}
	}
}
