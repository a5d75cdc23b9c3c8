package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

const senderTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// startTraced runs the real serve wiring with tp (nil: as serve does with
// no OTEL_EXPORTER_OTLP_ENDPOINT) and returns its address and the target.
func startTraced(t *testing.T, tp *sdktrace.TracerProvider) (string, *recorder) {
	t.Helper()
	t.Setenv("TEST_GENESYS_TOKEN", "genesys-token")
	rec := newRecorder(t)
	cfg, err := config.Load(writeConfig(t, testdb.URL(t), rec.URL+"/genesys/events", ""))
	require.NoError(t, err)
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if tp != nil {
		m.TracerProvider = tp
	}
	require.NoError(t, m.Run(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, m.Close(ctx))
	})
	return "http://" + m.Addr(), rec
}

func postTraced(t *testing.T, base string, traceparent string) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "genesys", "data-action.json"))
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/genesys", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "genesys-token")
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// With an exporter, the sender's trace goes on through intake, the River
// job and the delivery request: the target's traceparent is the delivery
// span's, in the sender's trace.
func TestTraceSpansSenderOutboxTarget(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	base, rec := startTraced(t, tp)
	postTraced(t, base, senderTraceParent)
	got := rec.waitFor(t, 1, 15*time.Second)
	// River's work span ends once the delivery is recorded, after the
	// target has its request.
	byName := map[string]tracetest.SpanStub{}
	require.Eventually(t, func() bool {
		for _, s := range exporter.GetSpans() {
			byName[s.Name] = s
		}
		_, ok := byName["river.work"]
		return ok
	}, 15*time.Second, 20*time.Millisecond, "River's own work span (otelriver): %v", exporter.GetSpans())
	intake, ok := byName["webhook intake genesys"]
	require.True(t, ok, "an intake span: %v", exporter.GetSpans())
	deliver, ok := byName["deliver genesys"]
	require.True(t, ok, "a delivery span: %v", exporter.GetSpans())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", intake.SpanContext.TraceID().String(), "intake continues the sender's trace")
	require.Equal(t, "00f067aa0ba902b7", intake.Parent.SpanID().String())
	require.Equal(t, intake.SpanContext.TraceID(), deliver.SpanContext.TraceID(), "delivery continues it too")
	require.Equal(t, intake.SpanContext.SpanID(), deliver.Parent.SpanID(), "the delivery's parent is the intake span")
	_, ok = byName["river.work"]
	require.True(t, ok, "River's own work span (otelriver)")

	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + deliver.SpanContext.SpanID().String() + "-01"
	require.Equal(t, want, got[0].header.Get("Traceparent"), "the target's traceparent is the delivery span's")
}

// Without an exporter nothing is recorded, but the sender's context still
// reaches the target, so the target's spans join the sender's trace.
func TestTraceContextPassesThroughWithoutExporter(t *testing.T) {
	base, rec := startTraced(t, nil)
	postTraced(t, base, senderTraceParent)
	got := rec.waitFor(t, 1, 15*time.Second)
	require.Equal(t, senderTraceParent, got[0].header.Get("Traceparent"))
}
