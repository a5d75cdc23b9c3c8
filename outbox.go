// Package outbox holds webhook-outbox's shared vocabulary: the types that
// intake, delivery and operators all speak, and the one error type every
// layer returns. It imports only the standard library, so every package can
// import it and none of its dependencies leak through it.
//
// The packages around it, and what each may import:
//
//   - config: the YAML config, its defaults and validation.
//   - store: Postgres access (sqlc queries, transactions, retention).
//   - admin: operator actions (dead letters, retries, replays, pauses) over
//     store, config and River.
//   - handler: HTTP (intake, the admin API, health, metrics, River UI, the
//     console). It imports admin, never jobs.
//   - jobs: River workers (delivery, retention). It imports store, never
//     handler.
//   - cmd/outbox: the binary; it wires everything.
package outbox

import (
	"encoding/json"
	"net/http"
	"time"
)

// DeliverKind is the River job kind of a delivery.
const DeliverKind = "deliver"

// DeliverArgs are a delivery job's args: which event to deliver. They carry
// identifiers only, never the payload or a secret, because River UI shows
// them to operators. Their JSON is stored in river_job.args and read by the
// dead_letters view and retention's SQL: changing it is a migration.
type DeliverArgs struct {
	EventID int64  `json:"event_id"`
	Route   string `json:"route"`
	Key     string `json:"key"`
	// ReceivedAt is the event's partition key: lookups by id pass it so
	// Postgres reads one partition, not all.
	ReceivedAt time.Time `json:"received_at"`
	// OrderingKey is the event's ordering value on a route with ordering:
	// the jobs of one value are delivered one at a time, in event id order
	// (see migration 000018). Empty, and absent from the JSON, for
	// unordered events.
	OrderingKey string `json:"ordering_key,omitempty"`
}

// Kind is the River job kind.
func (DeliverArgs) Kind() string { return DeliverKind }

// Delivery job metadata keys.
const (
	// MetadataRequestID holds the id of the intake request that stored the
	// event, so delivery log lines carry it too and one grep follows a
	// webhook from intake to its last delivery attempt.
	MetadataRequestID = "request_id"
	// MetadataGiveUpAt overrides a delivery's give_up_after deadline. A
	// manual retry of a dead letter sets it, so the retried event gets a
	// full give_up_after again.
	MetadataGiveUpAt = "give_up_at"
	// MetadataOrderingBlocked is set on a dead letter that holds its
	// ordering key (a route with ordering.on_dead_letter: block). The
	// database sets and clears it; see migration 000018.
	MetadataOrderingBlocked = "ordering_blocked"
)

// DeliveryMetadata is what webhook-outbox reads from a delivery job's
// metadata: the keys above, the trace context (tracing.ToMetadata's
// traceparent and tracestate) and River's count of snoozes. Decode it with
// ParseDeliveryMetadata, once per use: into this struct, not a map, which
// was a tenth of a drain's CPU when a delivery decoded it four times.
type DeliveryMetadata struct {
	RequestID   string `json:"request_id"`
	GiveUpAt    string `json:"give_up_at"`
	TraceParent string `json:"traceparent"`
	TraceState  string `json:"tracestate"`
	Snoozes     int    `json:"snoozes"`
}

// ParseDeliveryMetadata decodes a delivery job's metadata; the zero
// DeliveryMetadata when it cannot.
func ParseDeliveryMetadata(raw []byte) DeliveryMetadata {
	var m DeliveryMetadata
	_ = json.Unmarshal(raw, &m)
	return m
}

// Deadline returns the give_up_at deadline the metadata carries, if any.
func (m DeliveryMetadata) Deadline() (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, m.GiveUpAt)
	return t, err == nil
}

// NewEvent is a webhook that passed intake's checks and is ready to store.
type NewEvent struct {
	Route       string
	Key         string
	ContentType string
	// Headers are the request headers to keep, already stripped of
	// credentials and signatures.
	Headers http.Header
	Body    []byte
	// OrderingKey is the event's ordering value on a route with ordering,
	// or empty: the event is delivered unordered.
	OrderingKey string
	// MaxAttempts is the route's retry budget for the delivery job.
	MaxAttempts int
	// RequestID is the intake request's id (see MetadataRequestID).
	RequestID string
	// TraceContext is the W3C trace context to continue in the delivery
	// requests (traceparent, tracestate), kept in the delivery job's
	// metadata under those names.
	TraceContext map[string]string
}

// Accepted is the outcome of storing a NewEvent.
type Accepted struct {
	// Duplicate is true when the (route, key) was already stored; nothing
	// new was written.
	Duplicate bool
	EventID   int64
	JobID     int64
}
