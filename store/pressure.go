package store

import (
	"sync/atomic"
	"time"
)

// IntakePressure lets deliveries give way to intake. Intake and deliveries
// share one Postgres, and during a sender's burst every commit spent on a
// delivery is one not spent on acknowledging a webhook. The Batcher marks
// the pressure when requests wait in its queue longer than pressureWait;
// deliveries then yield for a moment before each attempt, so the burst is
// acknowledged first and delivered from the queue afterwards. Deliveries
// never stop: each waits at most maxYield.
//
// The signal is the queueing time, not the batch size: at a steady rate of
// a few thousand requests a second, batches of several requests are how
// group commit works, not a sign of overload, and deliveries that yielded
// to them fell behind for good (a backlog that grew for the whole of a
// sustained open loop). A request that waits for more than one commit is.
type IntakePressure struct {
	busyUntil atomic.Int64 // unix nanoseconds
	// now is the clock; time.Now when nil. Tests set it.
	now func() time.Time
}

const (
	// pressureWait is the queueing time that counts as intake falling
	// behind: a request waited for more than the commit under way when it
	// arrived (a few milliseconds at most on an unloaded Postgres).
	pressureWait = 15 * time.Millisecond
	// pressureWindow is how long one such batch keeps intake marked busy.
	pressureWindow = 250 * time.Millisecond
)

func (p *IntakePressure) note(wait time.Duration) {
	if p != nil && wait >= pressureWait {
		p.busyUntil.Store(p.clock().Add(pressureWindow).UnixNano())
	}
}

// Busy reports whether intake has been queueing requests just now.
func (p *IntakePressure) Busy() bool {
	return p != nil && p.clock().UnixNano() < p.busyUntil.Load()
}

// BusyUntil is when the current pressure ends unless intake queues again;
// a time in the past when it is not busy.
func (p *IntakePressure) BusyUntil() time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.Unix(0, p.busyUntil.Load())
}

func (p *IntakePressure) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}
