// Package tracing carries W3C trace context from a webhook's intake request
// to its delivery requests, so that one trace spans sender -> outbox ->
// target, and exports outbox's own spans with OpenTelemetry when
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
// set.
//
// Without an exporter nothing is recorded, but the context still flows: a
// sender's traceparent reaches the target unchanged, so the target's spans
// join the sender's trace.
//
// The context travels in the delivery job's metadata (MetadataTraceParent,
// MetadataTraceState), written in the intake transaction; a delivery starts
// its span as a child of it, however long after intake it runs.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Job metadata keys holding the W3C trace context of the intake request.
// They are the header names, as River's own OpenTelemetry middleware
// (otelriver) spells them, so it links its work spans to them too.
const (
	MetadataTraceParent = "traceparent"
	MetadataTraceState  = "tracestate"
)

// InstrumentationName names outbox's tracer.
const InstrumentationName = "github.com/webhook-outbox/webhook-outbox"

// propagator reads and writes W3C traceparent and tracestate.
var propagator = propagation.TraceContext{}

// Enabled reports whether getenv names an OTLP endpoint for traces.
func Enabled(getenv func(string) string) bool {
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewProvider returns the tracer provider serve uses: one that exports
// spans over OTLP/HTTP when getenv names an endpoint (the exporter reads the
// standard OTEL_EXPORTER_OTLP_* variables, and the resource
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES), and a no-op one
// otherwise. shutdown flushes the spans still buffered.
func NewProvider(ctx context.Context, getenv func(string) string, version string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	if !Enabled(getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	// The endpoint comes from getenv, the other OTEL_EXPORTER_OTLP_*
	// settings (headers, timeout, compression) from the environment.
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = strings.TrimSuffix(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "/") + "/v1/traces"
	}
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, nil, fmt.Errorf("cannot set up the OpenTelemetry exporter (OTEL_EXPORTER_OTLP_*): %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("webhook-outbox"), semconv.ServiceVersion(version)),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("cannot read OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return sdk, sdk.Shutdown, nil
}

// Extract returns ctx carrying the trace context of the request headers h,
// if they hold a valid traceparent.
func Extract(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject writes the trace context of ctx into the request headers h; it
// writes nothing when ctx carries none.
func Inject(ctx context.Context, h http.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// ToMetadata returns the trace context of ctx as job metadata entries
// (MetadataTraceParent and, when set, MetadataTraceState); nil when ctx
// carries none.
func ToMetadata(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	if carrier[MetadataTraceParent] == "" {
		return nil
	}
	return carrier
}

// FromMetadata returns ctx carrying the trace context a job's metadata
// stored (its MetadataTraceParent and MetadataTraceState entries, as
// ToMetadata wrote them), if there is one.
func FromMetadata(ctx context.Context, traceParent, traceState string) context.Context {
	if traceParent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{MetadataTraceParent: traceParent, MetadataTraceState: traceState})
}
