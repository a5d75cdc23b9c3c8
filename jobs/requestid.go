package jobs

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
)

// jobMeta is what a delivery reads from its job's metadata: the intake
// request's id, a replay's or retry's later give_up_after deadline, and the
// trace context (TestJobMetaNames holds the tags to the writers' names).
// Work decodes it once, into this struct rather than a map: a
// delivery used to decode it into a map four times.
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
	return readMeta(job).giveUpAt(job, rc)
}

// giveUpAt is giveUpAt with job's metadata already read into m.
func (m jobMeta) giveUpAt(job *river.Job[outbox.DeliverArgs], rc *config.Route) time.Time {
	if m.GiveUpAt != "" {
		if t, err := time.Parse(time.RFC3339Nano, m.GiveUpAt); err == nil {
			return t
		}
	}
	return job.CreatedAt.Add(rc.Retry.GiveUpAfter.D())
}

// jobLog is a delivery's log attributes, as one attribute with an empty
// key, which handlers inline: route, key, job_id, attempt, event_id and
// request_id. They are built only when a line is written; building them
// for every delivery, logged or not, was 8% of a drain's allocations.
type jobLog struct {
	job       *river.Job[outbox.DeliverArgs]
	requestID string
}

func (l jobLog) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("route", l.job.Args.Route), slog.String("key", l.job.Args.Key),
		slog.Int64("job_id", l.job.ID), slog.Int("attempt", l.job.Attempt),
		slog.Int64("event_id", l.job.Args.EventID), slog.String("request_id", l.requestID),
	)
}
