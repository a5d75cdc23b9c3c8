package outbox

import (
	"encoding/json"
	"time"
)

// DeadLetter is an event webhook-outbox gave up delivering, as the
// dead_letters view shows it.
type DeadLetter struct {
	JobID       int64           `json:"job_id"`
	EventID     int64           `json:"event_id"`
	Route       string          `json:"route"`
	Key         string          `json:"key"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	MaxAttempts int             `json:"max_attempts"`
	LastError   string          `json:"last_error"`
	ReceivedAt  time.Time       `json:"received_at"`
	FailedAt    time.Time       `json:"failed_at"`
	Payload     json.RawMessage `json:"payload"`
	Errors      []AttemptError  `json:"errors,omitempty"`
}

// AttemptError is one failed attempt, as River records it.
type AttemptError struct {
	At      time.Time `json:"at"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
}

// DeadLetterFilter selects dead letters. Zero fields do not filter.
type DeadLetterFilter struct {
	Route string
	// Since and Until bound failed_at: Since <= failed_at < Until.
	Since, Until time.Time
	// ErrorContains matches last_error, case-insensitively.
	ErrorContains string
	// Payload, when set, keeps the dead letters whose payload holds a value
	// at a path.
	Payload *PayloadCondition
}

// PayloadCondition selects events whose JSON payload holds Value at Path:
// the value's text, so a string matches without its quotes, and a number
// or a boolean as written.
type PayloadCondition struct {
	// Path is the keys (and array indexes) from the document's root.
	Path  []string
	Value string
}
