package outbox

import "time"

// BlockReason says why a blocked key's events wait.
type BlockReason string

// The reasons a key of an ordered route is blocked.
const (
	// BlockedByDeadLetter: the key's head is a dead letter and the route's
	// ordering.on_dead_letter is block. Nothing of the key is delivered
	// until an operator retries the head, releases the key, or deletes the
	// dead letter.
	BlockedByDeadLetter BlockReason = "dead_letter"
	// BlockedByRetry: events wait behind a head that is waiting out a
	// backoff or a snooze (Retry-After, the circuit breaker). It clears by
	// itself when the head is delivered or becomes a dead letter.
	BlockedByRetry BlockReason = "retrying"
	// BlockedNoHead: events wait and the key has no head. The rule never
	// leaves a key so; the periodic ordering check repairs it and logs it.
	BlockedNoHead BlockReason = "no_head"
)

// BlockedKey is an ordering key whose events wait on a head that is not
// being delivered now.
type BlockedKey struct {
	Route       string      `json:"route"`
	OrderingKey string      `json:"ordering_key"`
	Reason      BlockReason `json:"reason"`
	// Waiting counts the key's events waiting behind the head.
	Waiting int64 `json:"waiting"`
	// Head is the event that holds the key; nil for BlockedNoHead.
	Head *KeyHead `json:"head"`
}

// KeyHead is the event at the front of an ordering key, and its delivery
// job.
type KeyHead struct {
	JobID       int64  `json:"job_id"`
	EventID     int64  `json:"event_id"`
	Key         string `json:"key"`
	State       string `json:"state"`
	Attempt     int    `json:"attempt"`
	MaxAttempts int    `json:"max_attempts"`
	LastError   string `json:"last_error,omitempty"`
	// AttemptedAt is when its last attempt started.
	AttemptedAt *time.Time `json:"attempted_at,omitempty"`
	// NextAttemptAt is when a retrying head is tried again.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// FailedAt is when a dead-letter head failed.
	FailedAt *time.Time `json:"failed_at,omitempty"`
}

// BlockedKeyCounts counts a route's blocked keys by reason.
type BlockedKeyCounts struct {
	DeadLetter int64 `json:"dead_letter"`
	Retrying   int64 `json:"retrying"`
	NoHead     int64 `json:"no_head"`
}

// Total is the number of blocked keys, whatever the reason.
func (c BlockedKeyCounts) Total() int64 { return c.DeadLetter + c.Retrying + c.NoHead }
