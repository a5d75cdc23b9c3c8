package outbox

import "time"

// CircuitState is where a route's circuit breaker stands.
type CircuitState string

// The states of a circuit breaker.
const (
	// CircuitClosed: deliveries are sent.
	CircuitClosed CircuitState = "closed"
	// CircuitOpen: the target failed too often in a row; nothing is sent
	// until the cooldown ends, and deliveries are snoozed without using an
	// attempt.
	CircuitOpen CircuitState = "open"
	// CircuitHalfOpen: the cooldown ended; one probe delivery is sent, and
	// its outcome closes the circuit or opens it again for longer.
	CircuitHalfOpen CircuitState = "half-open"
)

// CircuitInfo is a route's circuit breaker, one for the whole fleet, as
// the routes listing shows it.
type CircuitInfo struct {
	State CircuitState `json:"state"`
	// Since is when the circuit entered State; nil for a circuit that has
	// not failed since Postgres last started (its state is not kept
	// across a crash).
	Since               *time.Time `json:"since,omitempty"`
	OpenUntil           *time.Time `json:"open_until,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	LastError           string     `json:"last_error,omitempty"`
}
