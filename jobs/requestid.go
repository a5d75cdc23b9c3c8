package jobs

import (
	"encoding/json"

	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// requestID returns the id of the intake request that enqueued job, or ""
// for a job that did not come from intake. Delivery log lines carry it, so
// one grep follows a webhook from intake to its last delivery attempt.
func requestID(job *river.Job[outbox.DeliverArgs]) string {
	var meta map[string]any
	if json.Unmarshal(job.Metadata, &meta) != nil {
		return ""
	}
	id, _ := meta[outbox.MetadataRequestID].(string)
	return id
}
