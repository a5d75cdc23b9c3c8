package jobs

import (
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
)

// readMeta decodes job's metadata, once per run of a delivery
// (TestJobMetaNames holds its tags to the writers' names).
func readMeta(job *river.Job[outbox.DeliverArgs]) outbox.DeliveryMetadata {
	return outbox.ParseDeliveryMetadata(job.Metadata)
}

// giveUpAt is the delivery's deadline: give_up_after from the job's creation
// (the intake transaction's time, or a replay's), unless the job's metadata
// carries a later one.
func giveUpAt(job *river.Job[outbox.DeliverArgs], rc *config.Route) time.Time {
	return deadline(job, readMeta(job), rc)
}

// deadline is giveUpAt with job's metadata already read into m.
func deadline(job *river.Job[outbox.DeliverArgs], m outbox.DeliveryMetadata, rc *config.Route) time.Time {
	if t, ok := m.Deadline(); ok {
		return t
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
