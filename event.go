package outbox

import (
	"encoding/json"
	"net/http"
	"time"
)

// EventState sums up where an event stands, from its newest delivery job
// and its delivery record.
type EventState string

// The states of an event.
const (
	// EventQueued: a delivery is due and waits for a worker.
	EventQueued EventState = "queued"
	// EventDelivering: a delivery is being sent now.
	EventDelivering EventState = "delivering"
	// EventRetrying: a delivery failed and waits for its backoff.
	EventRetrying EventState = "retrying"
	// EventScheduled: a delivery was snoozed (Retry-After, the circuit
	// breaker) or waits for a distant retry.
	EventScheduled EventState = "scheduled"
	// EventDead: the event is a dead letter.
	EventDead EventState = "dead"
	// EventDelivered: the target acknowledged it.
	EventDelivered EventState = "delivered"
	// EventUndelivered: not delivered and no job left (its dead letter was
	// removed by dead_letter_retention).
	EventUndelivered EventState = "undelivered"
)

// EventDetail is everything known about one event: what was received, and
// every delivery job it has had with every attempt's error.
type EventDetail struct {
	ID               int64           `json:"event_id"`
	Route            string          `json:"route"`
	Key              string          `json:"key"`
	ReceivedAt       time.Time       `json:"received_at"`
	ContentType      string          `json:"content_type"`
	Headers          http.Header     `json:"headers"`
	Payload          json.RawMessage `json:"payload"`
	DeliveredAt      *time.Time      `json:"delivered_at"`
	DeliveryAttempts *int32          `json:"delivery_attempts"`
	State            EventState      `json:"state"`
	Jobs             []JobDetail     `json:"jobs"`
}

// JobDetail is one delivery job of an event.
type JobDetail struct {
	ID          int64          `json:"job_id"`
	State       string         `json:"state"`
	Attempt     int            `json:"attempt"`
	MaxAttempts int            `json:"max_attempts"`
	CreatedAt   time.Time      `json:"created_at"`
	ScheduledAt time.Time      `json:"scheduled_at"`
	AttemptedAt *time.Time     `json:"attempted_at"`
	FinalizedAt *time.Time     `json:"finalized_at"`
	Errors      []AttemptError `json:"errors"`
}
