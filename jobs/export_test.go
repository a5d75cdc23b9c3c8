package jobs

import (
	"time"

	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// SetJobTimeout makes the delivery jobs of a client built with o time out
// after timeout(key) instead of their own timeout (0 keeps it), to stage a
// job deadline that passes mid-delivery.
func SetJobTimeout(o *ClientOptions, timeout func(key string) time.Duration) {
	o.jobTimeout = func(job *river.Job[outbox.DeliverArgs]) time.Duration { return timeout(job.Args.Key) }
}
