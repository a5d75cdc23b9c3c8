package store

import (
	"context"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// Batcher is intake's group commit: concurrent webhooks share transactions.
// Each transaction takes the requests waiting at that moment (one
// multi-row insert, one job insert, one commit) and answers each with its
// own outcome; see groupCommit.
type Batcher struct {
	g *groupCommit[*outbox.NewEvent, outbox.Accepted]
}

// BatcherOptions tune a Batcher.
type BatcherOptions struct {
	// Workers is how many transactions may be open at once.
	Workers int
	// MaxBatch caps the events in one transaction.
	MaxBatch int
	// Timeout bounds each transaction (intake_timeout).
	Timeout time.Duration
	// Pressure, if set, is marked when requests queue, so that deliveries
	// give way to intake.
	Pressure *IntakePressure
}

// Default Batcher settings, chosen by measurement (see bench/README.md).
const (
	DefaultBatchWorkers = 2
	DefaultMaxBatch     = 256
)

// NewBatcher starts a Batcher over intake. Close stops it.
func NewBatcher(intake *Intake, opts BatcherOptions) *Batcher {
	if opts.Workers <= 0 {
		opts.Workers = DefaultBatchWorkers
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	g := newGroupCommit(opts.Workers, opts.MaxBatch, opts.Timeout, intake.AcceptBatch)
	g.observe = func(_ int, wait time.Duration) { opts.Pressure.note(wait) }
	return &Batcher{g: g}
}

// Accept queues ev for the next batch and waits for its commit. If ctx ends
// first, it returns ctx's error; the event may still be committed by its
// batch, which a sender's retry then finds as a duplicate. It is never
// reported stored when it is not.
func (b *Batcher) Accept(ctx context.Context, ev *outbox.NewEvent) (outbox.Accepted, error) {
	return b.g.do(ctx, ev)
}

// Close stops taking requests and waits for the batches under way.
// Requests still queued are answered with an error (a 503 to the sender).
func (b *Batcher) Close() { b.g.close() }
