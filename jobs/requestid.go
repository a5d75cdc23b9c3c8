package jobs

import (
	"encoding/json"
	"time"

	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
)

// jobMeta is what a delivery reads from its job's metadata: the intake
// request's id, a replay's or retry's later give_up_after deadline, and the
// trace context (TestJobMetaNames holds the tags to the writers' names).
// Decoding into this struct rather than a map matters: a
// delivery reads its metadata several times, and a map's decoding was a
// tenth of a drain's CPU.
type jobMeta struct {
	RequestID   string `json:"request_id"`
	GiveUpAt    string `json:"give_up_at"`
	TraceParent string `json:"traceparent"`
	TraceState  string `json:"tracestate"`
}

// readMeta decodes job's metadata; the zero jobMeta when it cannot.
func readMeta(job *river.Job[outbox.DeliverArgs]) jobMeta {
	var m jobMeta
	_ = json.Unmarshal(job.Metadata, &m)
	return m
}

// requestID returns the id of the intake request that enqueued job, or ""
// for a job that did not come from intake. Delivery log lines carry it, so
// one grep follows a webhook from intake to its last delivery attempt.
func requestID(job *river.Job[outbox.DeliverArgs]) string {
	return readMeta(job).RequestID
}

// traceMetadata is the trace context in m, in tracing.FromMetadata's form;
// nil when the job carries none.
func (m jobMeta) traceMetadata() map[string]any {
	if m.TraceParent == "" {
		return nil
	}
	return map[string]any{tracing.MetadataTraceParent: m.TraceParent, tracing.MetadataTraceState: m.TraceState}
}

// giveUpAt is the delivery's deadline: give_up_after from the job's creation
// (the intake transaction's time, or a replay's), unless the job's metadata
// carries a later one.
func giveUpAt(job *river.Job[outbox.DeliverArgs], rc *config.Route) time.Time {
	deadline := job.CreatedAt.Add(rc.Retry.GiveUpAfter.D())
	if s := readMeta(job).GiveUpAt; s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			deadline = t
		}
	}
	return deadline
}
