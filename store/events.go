package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
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
	// State sums up the event: delivered, queued, delivering, retrying,
	// scheduled (a snooze or a distant retry), dead, or undelivered (no job
	// left: cleaned away after dead_letter_retention).
	State string      `json:"state"`
	Jobs  []JobDetail `json:"jobs"`
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

// EventByKey returns the event stored for (route, key).
func (s *Store) EventByKey(ctx context.Context, route, key string) (*EventDetail, error) {
	row, err := s.q.GetEventByKey(ctx, dbsqlc.GetEventByKeyParams{Route: route, Key: key})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: no event %s/%s (never received, or removed by event_retention)", ErrNotFound, route, key)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading event: %w", err)
	}
	ev := &EventDetail{
		ID: row.ID, Route: row.Route, Key: row.Key, ReceivedAt: row.ReceivedAt, ContentType: row.ContentType,
		DeliveredAt: row.DeliveredAt, DeliveryAttempts: row.DeliveryAttempts, Jobs: []JobDetail{},
	}
	_ = json.Unmarshal(row.Headers, &ev.Headers)
	if json.Valid(row.Body) {
		ev.Payload = row.Body
	} else {
		// Stored bytes are validated JSON; this only guards the answer.
		ev.Payload, _ = json.Marshal(string(row.Body))
	}
	jobs, err := s.q.JobsForEvent(ctx, row.ID)
	if err != nil {
		return nil, fmt.Errorf("error loading delivery jobs: %w", err)
	}
	for _, j := range jobs {
		jd := JobDetail{
			ID: j.ID, State: string(j.State), Attempt: int(j.Attempt), MaxAttempts: int(j.MaxAttempts),
			CreatedAt: j.CreatedAt, ScheduledAt: j.ScheduledAt, AttemptedAt: j.AttemptedAt, FinalizedAt: j.FinalizedAt,
			Errors: []AttemptError{},
		}
		for _, raw := range j.Errors {
			var e AttemptError
			if json.Unmarshal(raw, &e) == nil {
				jd.Errors = append(jd.Errors, e)
			}
		}
		ev.Jobs = append(ev.Jobs, jd)
	}
	ev.State = eventState(ev)
	return ev, nil
}

// eventState sums up an event from its newest job and its delivery record.
func eventState(ev *EventDetail) string {
	if len(ev.Jobs) > 0 {
		last := ev.Jobs[len(ev.Jobs)-1]
		switch last.State {
		case "available", "pending":
			return "queued"
		case "running":
			return "delivering"
		case "retryable":
			return "retrying"
		case "scheduled":
			return "scheduled"
		case "discarded", "cancelled":
			if ev.DeliveredAt == nil || ev.DeliveredAt.Before(*last.FinalizedAt) {
				return "dead"
			}
		}
	}
	if ev.DeliveredAt != nil {
		return "delivered"
	}
	return "undelivered"
}
