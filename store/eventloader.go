package store

import (
	"context"
	"fmt"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// EventLoader loads the events of deliveries in shared queries: the
// lookups that arrive while one query is under way are answered by the
// next, one statement for all of them (GetEventsForDelivery). It adds no
// waiting: a lone lookup goes at once, as with groupCommit's intake
// batches. At a few thousand deliveries a second, one round trip and one
// statement per delivery was a visible share of Postgres's CPU.
type EventLoader struct {
	g *groupCommit[eventRef, eventOrErr]
}

type eventRef struct {
	id         int64
	receivedAt time.Time
}

type eventOrErr struct {
	ev  *DeliveryEvent
	err error
}

// NewEventLoader starts an EventLoader with workers concurrent queries of at
// most maxBatch events each, each bounded by timeout. Close stops it.
func NewEventLoader(st *Store, workers, maxBatch int, timeout time.Duration) *EventLoader {
	load := func(ctx context.Context, refs []eventRef) ([]eventOrErr, error) {
		params := dbsqlc.GetEventsForDeliveryParams{Ids: make([]int64, len(refs)), ReceivedAts: make([]time.Time, len(refs))}
		for i, r := range refs {
			params.Ids[i], params.ReceivedAts[i] = r.id, r.receivedAt
		}
		rows, err := st.q.GetEventsForDelivery(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("error loading events: %w", err)
		}
		found := make(map[int64]*DeliveryEvent, len(rows)) // ids are unique
		for _, row := range rows {
			found[row.ID] = &DeliveryEvent{
				ID: row.ID, Route: row.Route, Key: row.Key, ReceivedAt: row.ReceivedAt,
				ContentType: row.ContentType, Body: row.Body,
			}
		}
		out := make([]eventOrErr, len(refs))
		for i, r := range refs {
			ev := found[r.id]
			if ev == nil {
				out[i].err = outbox.Errorf(outbox.ENOTFOUND, "event %d is no longer stored", r.id)
				continue
			}
			out[i].ev = ev
		}
		return out, nil
	}
	return &EventLoader{g: newGroupCommit(workers, maxBatch, timeout, load)}
}

// Load returns the event id received at receivedAt, or an ENOTFOUND error
// when it is no longer stored.
func (l *EventLoader) Load(ctx context.Context, id int64, receivedAt time.Time) (*DeliveryEvent, error) {
	res, err := l.g.do(ctx, eventRef{id, receivedAt})
	if err != nil {
		return nil, err
	}
	return res.ev, res.err
}

// Close stops taking lookups and waits for the queries under way.
func (l *EventLoader) Close() { l.g.close() }
