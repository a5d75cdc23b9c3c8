package store

import (
	"sync/atomic"
	"time"
)

// IntakePressure lets deliveries give way to intake. Intake and deliveries
// share one Postgres, and during a sender's burst every commit spent on a
// delivery is one not spent on acknowledging a webhook. The Batcher marks
// the pressure when its batches show requests queueing; deliveries then
// yield for a moment before each attempt, so the burst is acknowledged
// first and delivered from the queue afterwards. Deliveries never stop:
// each waits at most maxYield.
type IntakePressure struct {
	busyUntil atomic.Int64 // unix nanoseconds
	// now is the clock; time.Now when nil. Tests set it.
	now func() time.Time
}

const (
	// pressureBatch is the batch size that counts as queueing: requests
	// arrived while the previous commit was under way.
	pressureBatch = 4
	// pressureWindow is how long one such batch keeps intake marked busy.
	pressureWindow = 250 * time.Millisecond
)

func (p *IntakePressure) note(batch int) {
	if p != nil && batch >= pressureBatch {
		p.busyUntil.Store(p.clock().Add(pressureWindow).UnixNano())
	}
}

// Busy reports whether intake has been queueing requests just now.
func (p *IntakePressure) Busy() bool {
	return p != nil && p.clock().UnixNano() < p.busyUntil.Load()
}

func (p *IntakePressure) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}
