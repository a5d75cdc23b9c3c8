package store

import (
	"context"
	"sync"
	"time"
)

// Batcher is intake's group commit. Requests in flight share transactions:
// each of its workers takes whatever requests are waiting, up to a cap,
// stores them with one AcceptBatch (one multi-row insert, one job insert,
// one commit), and answers each with its own outcome. It adds no waiting:
// an idle worker takes a lone request at once, and requests that arrive
// while a commit is under way form the next batch. So a commit's cost is
// shared by as many requests as arrived during the previous one.
type Batcher struct {
	intake  *Intake
	queue   chan *pendingEvent
	max     int
	timeout time.Duration
	wg      sync.WaitGroup
	stop    chan struct{}
}

type pendingEvent struct {
	ctx  context.Context
	ev   *NewEvent
	done chan acceptResult
}

type acceptResult struct {
	res Accepted
	err error
}

// BatcherOptions tune a Batcher.
type BatcherOptions struct {
	// Workers is how many transactions may be open at once.
	Workers int
	// MaxBatch caps the events in one transaction.
	MaxBatch int
	// Timeout bounds each transaction (intake_timeout).
	Timeout time.Duration
}

// Default Batcher settings, chosen by measurement (see README, Performance).
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
	b := &Batcher{
		intake:  intake,
		queue:   make(chan *pendingEvent, opts.MaxBatch*opts.Workers),
		max:     opts.MaxBatch,
		timeout: opts.Timeout,
		stop:    make(chan struct{}),
	}
	for range opts.Workers {
		b.wg.Go(b.work)
	}
	return b
}

// Accept queues ev for the next batch and waits for its commit. If ctx ends
// first, it returns ctx's error; the event may still be committed by its
// batch, which a sender's retry then finds as a duplicate. It is never
// reported stored when it is not.
func (b *Batcher) Accept(ctx context.Context, ev *NewEvent) (Accepted, error) {
	p := &pendingEvent{ctx: ctx, ev: ev, done: make(chan acceptResult, 1)}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return Accepted{}, ctx.Err()
	case <-b.stop:
		return Accepted{}, errBatcherClosed
	}
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		return Accepted{}, ctx.Err()
	}
}

// Close stops taking requests and waits for the batches under way.
// Requests still queued are answered with an error (a 503 to the sender).
func (b *Batcher) Close() {
	close(b.stop)
	b.wg.Wait()
	for {
		select {
		case p := <-b.queue:
			p.done <- acceptResult{err: errBatcherClosed}
		default:
			return
		}
	}
}

type closedError struct{}

func (closedError) Error() string { return "intake is shutting down" }

var errBatcherClosed error = closedError{}

func (b *Batcher) work() {
	batch := make([]*pendingEvent, 0, b.max)
	evs := make([]*NewEvent, 0, b.max)
	for {
		batch, evs = batch[:0], evs[:0]
		select {
		case p := <-b.queue:
			batch = append(batch, p)
		case <-b.stop:
			return
		}
	fill:
		for len(batch) < b.max {
			select {
			case p := <-b.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		// Requests whose sender gave up while queued are not stored.
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.done <- acceptResult{err: err}
				continue
			}
			live = append(live, p)
			evs = append(evs, p.ev)
		}
		if len(live) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		res, err := b.intake.AcceptBatch(ctx, evs)
		cancel()
		for i, p := range live {
			if err != nil {
				p.done <- acceptResult{err: err}
			} else {
				p.done <- acceptResult{res: res[i]}
			}
		}
	}
}
