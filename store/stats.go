package store

import (
	"context"
	"fmt"
	"time"
)

// TableStat is one table or events partition.
type TableStat struct {
	Name string `json:"name"`
	// Parent is the partitioned table this one belongs to, if any.
	Parent string `json:"parent,omitempty"`
	// Rows is an estimate from Postgres's statistics, or exact when asked.
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
	// RangeStart and RangeEnd bound a time partition's received_at.
	RangeStart *time.Time `json:"range_start,omitempty"`
	RangeEnd   *time.Time `json:"range_end,omitempty"`
}

// Stats sums up how much webhook-outbox keeps, for `outbox stats` and GET
// /admin/v1/stats.
type Stats struct {
	// Exact says whether event row counts were counted (slow on big
	// tables) or estimated.
	Exact             bool        `json:"exact"`
	Tables            []TableStat `json:"tables"`
	EventsRows        int64       `json:"events_rows"`
	EventsBytes       int64       `json:"events_bytes"`
	OldestEvent       *time.Time  `json:"oldest_event"`
	DeadLetters       int64       `json:"dead_letters"`
	OldestDeadLetter  *time.Time  `json:"oldest_dead_letter"`
	DeadLetterAgeSecs *float64    `json:"oldest_dead_letter_age_seconds"`
}

// Stats reports table and partition sizes, the oldest event and the
// dead-letter age. With exact, event rows are counted rather than taken from
// Postgres's estimates.
func (s *Store) Stats(ctx context.Context, exact bool) (*Stats, error) {
	st := &Stats{Exact: exact}
	sizes, err := s.q.TableSizes(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading table sizes: %w", err)
	}
	parts, err := s.q.LivePartitions(ctx)
	if err != nil {
		return nil, fmt.Errorf("error listing partitions: %w", err)
	}
	bounds := map[string][2]time.Time{}
	for _, p := range parts {
		bounds[p.Name] = [2]time.Time{p.RangeStart, p.RangeEnd}
	}
	counts := map[string]int64{}
	if exact {
		rows, err := s.q.ExactEventCounts(ctx)
		if err != nil {
			return nil, fmt.Errorf("error counting events: %w", err)
		}
		for _, r := range rows {
			counts[r.Name] = r.Rows
		}
	}
	for _, t := range sizes {
		ts := TableStat{Name: t.Name, Parent: t.Parent, Rows: t.RowsEstimate, Bytes: t.Bytes}
		if b, ok := bounds[t.Name]; ok {
			ts.RangeStart, ts.RangeEnd = &b[0], &b[1]
		}
		isEventLeaf := t.Parent == "events_live" || t.Name == "events_retained"
		if exact && isEventLeaf {
			ts.Rows = counts[t.Name]
		}
		if isEventLeaf {
			st.EventsRows += ts.Rows
			st.EventsBytes += ts.Bytes
		}
		st.Tables = append(st.Tables, ts)
	}
	oldest, err := s.q.OldestEvent(ctx)
	if err != nil {
		return nil, fmt.Errorf("error finding the oldest event: %w", err)
	}
	if len(oldest) == 1 {
		st.OldestEvent = &oldest[0]
	}
	if st.DeadLetters, err = s.q.CountAllDeadLetters(ctx); err != nil {
		return nil, fmt.Errorf("error counting dead letters: %w", err)
	}
	oldestDead, err := s.q.OldestDeadLetter(ctx)
	if err != nil {
		return nil, fmt.Errorf("error finding the oldest dead letter: %w", err)
	}
	if len(oldestDead) == 1 && oldestDead[0] != nil {
		st.OldestDeadLetter = oldestDead[0]
		st.DeadLetterAgeSecs = new(time.Since(*oldestDead[0]).Seconds())
	}
	return st, nil
}
