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
	id, _ := jobMetadata(job)[outbox.MetadataRequestID].(string)
	return id
}

// jobMetadata decodes a job's metadata; nil when it cannot.
func jobMetadata(job *river.Job[outbox.DeliverArgs]) map[string]any {
	var meta map[string]any
	_ = json.Unmarshal(job.Metadata, &meta)
	return meta
}
