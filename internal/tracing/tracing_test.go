package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

const senderParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestContextRoundTripsThroughJobMetadata(t *testing.T) {
	t.Parallel()
	in := http.Header{"Traceparent": {senderParent}, "Tracestate": {"vendor=opaque"}}
	ctx := Extract(context.Background(), in)
	meta := ToMetadata(ctx)
	require.Equal(t, senderParent, meta[MetadataTraceParent])
	require.Equal(t, "vendor=opaque", meta[MetadataTraceState])

	out := http.Header{}
	Inject(FromMetadata(context.Background(), meta[MetadataTraceParent], meta[MetadataTraceState]), out)
	require.Equal(t, senderParent, out.Get("Traceparent"), "with no exporter, the sender's context reaches the target unchanged")
	require.Equal(t, "vendor=opaque", out.Get("Tracestate"))
}

func TestNoContextNoHeaders(t *testing.T) {
	t.Parallel()
	require.Nil(t, ToMetadata(Extract(context.Background(), http.Header{"Traceparent": {"garbage"}})))
	out := http.Header{}
	Inject(FromMetadata(context.Background(), "", ""), out)
	require.Empty(t, out)
}

func TestProviderExportsOverOTLPWhenConfigured(t *testing.T) {
	t.Parallel()
	var posts atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()

	off, shutdown, err := NewProvider(context.Background(), func(string) string { return "" }, "test")
	require.NoError(t, err)
	require.NoError(t, shutdown(context.Background()))
	_, span := off.Tracer(InstrumentationName).Start(context.Background(), "x")
	require.False(t, span.IsRecording(), "without an endpoint nothing is recorded")

	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
	tp, shutdown, err := NewProvider(context.Background(), func(k string) string { return env[k] }, "test")
	require.NoError(t, err)
	ctx := Extract(context.Background(), http.Header{"Traceparent": {senderParent}})
	_, span = tp.Tracer(InstrumentationName).Start(ctx, "deliver", trace.WithSpanKind(trace.SpanKindClient))
	require.True(t, span.IsRecording())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", span.SpanContext().TraceID().String(), "the span joins the sender's trace")
	span.End()
	require.NoError(t, shutdown(context.Background()))
	require.Positive(t, posts.Load(), "the collector received the span")
}
