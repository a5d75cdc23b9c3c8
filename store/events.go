package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// EventByKey returns the event stored for (route, key).
func (s *Store) EventByKey(ctx context.Context, route, key string) (*outbox.EventDetail, error) {
	row, err := s.q.GetEventByKey(ctx, dbsqlc.GetEventByKeyParams{Route: route, Key: key})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, outbox.Errorf(outbox.ENOTFOUND, "no event %s/%s (never received, or removed by event_retention)", route, key)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading event: %w", err)
	}
	ev := &outbox.EventDetail{
		ID: row.ID, Route: row.Route, Key: row.Key, ReceivedAt: row.ReceivedAt, ContentType: row.ContentType,
		DeliveredAt: row.DeliveredAt, DeliveryAttempts: row.DeliveryAttempts, Jobs: []outbox.JobDetail{},
		OrderingKey: deref(row.OrderingKey),
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
		jd := outbox.JobDetail{
			ID: j.ID, State: string(j.State), Attempt: int(j.Attempt), MaxAttempts: int(j.MaxAttempts),
			CreatedAt: j.CreatedAt, ScheduledAt: j.ScheduledAt, AttemptedAt: j.AttemptedAt, FinalizedAt: j.FinalizedAt,
			Errors: []outbox.AttemptError{},
		}
		for _, raw := range j.Errors {
			var e outbox.AttemptError
			if json.Unmarshal(raw, &e) == nil {
				e.Error = attemptError(e.Error)
				jd.Errors = append(jd.Errors, e)
			}
		}
		ev.Jobs = append(ev.Jobs, jd)
	}
	ev.State = eventState(ev)
	return ev, nil
}

// eventState sums up an event from its newest job and its delivery record.
func eventState(ev *outbox.EventDetail) outbox.EventState {
	if len(ev.Jobs) > 0 {
		last := ev.Jobs[len(ev.Jobs)-1]
		switch rivertype.JobState(last.State) {
		case rivertype.JobStateAvailable:
			return outbox.EventQueued
		case rivertype.JobStatePending:
			return outbox.EventWaiting
		case rivertype.JobStateRunning:
			return outbox.EventDelivering
		case rivertype.JobStateRetryable:
			return outbox.EventRetrying
		case rivertype.JobStateScheduled:
			return outbox.EventScheduled
		case rivertype.JobStateDiscarded, rivertype.JobStateCancelled:
			if ev.DeliveredAt == nil || ev.DeliveredAt.Before(*last.FinalizedAt) {
				return outbox.EventDead
			}
		}
	}
	if ev.DeliveredAt != nil {
		return outbox.EventDelivered
	}
	return outbox.EventUndelivered
}

// attemptError is an attempt's error as webhook-outbox wrote it: River
// records a permanent failure (river.JobCancel) with the prefix
// "JobCancelError: ", which says nothing to an operator. The dead_letters
// view strips it the same way (outbox_attempt_error, migration 000020).
func attemptError(s string) string {
	return strings.TrimPrefix(s, "JobCancelError: ")
}
