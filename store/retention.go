package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// PartitionLookahead is how far ahead of now events partitions are created,
// so intake never waits for one even if maintenance stops for days.
const PartitionLookahead = 3 * 24 * time.Hour

// retentionBatch bounds the rows one retention transaction deletes.
const retentionBatch = 1000

// EnsurePartitions creates the events partitions covering [from, to).
func (s *Store) EnsurePartitions(ctx context.Context, from, to time.Time) error {
	if _, err := s.q.EnsurePartitions(ctx, dbsqlc.EnsurePartitionsParams{
		FromTs: from, ToTs: to, StepSecs: s.PartitionInterval.Seconds(),
	}); err != nil {
		return fmt.Errorf("error creating events partitions: %w", err)
	}
	return nil
}

// RetentionPolicy is what maintenance keeps.
type RetentionPolicy struct {
	// EventRetention is how long delivered events are kept.
	EventRetention time.Duration
	// DeadLetterRetention is how long dead letters are kept; 0 or less keeps
	// them forever.
	DeadLetterRetention time.Duration
}

// MaintenanceReport says what one maintenance run did.
type MaintenanceReport struct {
	PartitionsCreated  int
	DeadLettersExpired int64
	PartitionsDropped  []string
	SurvivorsRetained  int64
	RetainedDeleted    int64
}

// Maintain enforces retention, in small steps:
//
//  1. it creates events partitions up to PartitionLookahead ahead;
//  2. it deletes dead letters older than dead_letter_retention, each job
//     with its event in one transaction, so neither outlives the other
//     (River's own cleaner is told to keep them forever);
//  3. for each partition older than event_retention, it moves the
//     survivors (events with a delivery waiting, and dead letters still
//     kept) into events_retained, detaches the partition without blocking
//     intake (DETACH ... CONCURRENTLY), rescues any survivor that appeared
//     meanwhile, and drops it: no row-by-row DELETE of delivered events;
//  4. it deletes retained events that no longer need keeping, in batches.
//
// An event waiting for delivery is never removed, whatever its age.
func (s *Store) Maintain(ctx context.Context, policy RetentionPolicy, logger *slog.Logger) (*MaintenanceReport, error) {
	now := time.Now()
	rep := &MaintenanceReport{}

	created, err := s.q.EnsurePartitions(ctx, dbsqlc.EnsurePartitionsParams{
		FromTs: now.Add(-s.PartitionInterval), ToTs: s.PartitionHorizon(now), StepSecs: s.PartitionInterval.Seconds(),
	})
	if err != nil {
		return rep, fmt.Errorf("error creating events partitions: %w", err)
	}
	rep.PartitionsCreated = int(created)
	if created > 0 {
		logger.Info("created events partitions", "count", created, "until", s.PartitionHorizon(now).UTC().Format(time.RFC3339))
	}

	if policy.DeadLetterRetention > 0 {
		if err := s.expireDeadLetters(ctx, now.Add(-policy.DeadLetterRetention), rep, logger); err != nil {
			return rep, err
		}
	}

	if err := s.dropExpiredPartitions(ctx, now.Add(-policy.EventRetention), rep, logger); err != nil {
		return rep, err
	}

	for {
		n, err := s.q.DeleteExpiredRetained(ctx, dbsqlc.DeleteExpiredRetainedParams{Before: now.Add(-policy.EventRetention), MaxRows: retentionBatch})
		if err != nil {
			return rep, fmt.Errorf("error deleting expired retained events: %w", err)
		}
		rep.RetainedDeleted += n
		if n < retentionBatch {
			break
		}
		logger.Info("deleting expired retained events", "deleted_so_far", rep.RetainedDeleted)
	}
	logger.Info("retention done", "partitions_created", rep.PartitionsCreated, "dead_letters_expired", rep.DeadLettersExpired,
		"partitions_dropped", len(rep.PartitionsDropped), "survivors_retained", rep.SurvivorsRetained, "retained_deleted", rep.RetainedDeleted)
	return rep, nil
}

func (s *Store) expireDeadLetters(ctx context.Context, before time.Time, rep *MaintenanceReport, logger *slog.Logger) error {
	for {
		batch, err := s.q.ExpiredDeadLetterBatch(ctx, dbsqlc.ExpiredDeadLetterBatchParams{Before: &before, MaxRows: retentionBatch})
		if err != nil {
			return fmt.Errorf("error selecting expired dead letters: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		jobIDs := make([]int64, len(batch))
		eventIDs := make([]int64, len(batch))
		receivedAts := make([]time.Time, len(batch))
		for i, b := range batch {
			jobIDs[i], eventIDs[i], receivedAts[i] = b.JobID, b.EventID, b.ReceivedAt
		}
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			q := s.q.WithTx(tx)
			n, err := q.DeleteJobs(ctx, jobIDs)
			if err != nil {
				return fmt.Errorf("error deleting expired dead letter jobs: %w", err)
			}
			if _, err := q.DeleteUndeliveredEventsWithoutJobs(ctx, dbsqlc.DeleteUndeliveredEventsWithoutJobsParams{EventIds: eventIDs, ReceivedAts: receivedAts}); err != nil {
				return fmt.Errorf("error deleting the events of expired dead letters: %w", err)
			}
			rep.DeadLettersExpired += n
			return nil
		})
		if err != nil {
			return err
		}
		logger.Info("expired dead letters", "deleted_so_far", rep.DeadLettersExpired, "failed_before", before.UTC().Format(time.RFC3339))
		if len(batch) < retentionBatch {
			return nil
		}
	}
}

func (s *Store) dropExpiredPartitions(ctx context.Context, before time.Time, rep *MaintenanceReport, logger *slog.Logger) error {
	parts, err := s.q.LivePartitions(ctx)
	if err != nil {
		return fmt.Errorf("error listing events partitions: %w", err)
	}
	for _, p := range parts {
		if p.RangeEnd.After(before) {
			break // oldest first: the rest are younger
		}
		moved, err := s.q.RetainSurvivors(ctx, dbsqlc.RetainSurvivorsParams{RangeStart: p.RangeStart, RangeEnd: p.RangeEnd})
		if err != nil {
			return fmt.Errorf("error retaining the survivors of %s: %w", p.Name, err)
		}
		// DDL names a partition, so the name is quoted here rather than
		// bound: it comes from pg_class via outbox_live_partitions, never
		// from input. CONCURRENTLY cannot run in a function or a
		// transaction, and it lets intake go on meanwhile.
		ident := pgx.Identifier{p.Name}.Sanitize()
		if p.DetachPending {
			_, err = s.pool.Exec(ctx, "ALTER TABLE events_live DETACH PARTITION "+ident+" FINALIZE")
		} else {
			_, err = s.pool.Exec(ctx, "ALTER TABLE events_live DETACH PARTITION "+ident+" CONCURRENTLY")
		}
		if err != nil {
			return fmt.Errorf("error detaching %s: %w", p.Name, err)
		}
		rescued, err := s.q.RescueDetachedSurvivors(ctx, p.Name)
		if err != nil {
			return fmt.Errorf("error dropping detached %s: %w", p.Name, err)
		}
		rep.PartitionsDropped = append(rep.PartitionsDropped, p.Name)
		rep.SurvivorsRetained += moved + rescued
		logger.Info("dropped expired events partition", "partition", p.Name,
			"from", p.RangeStart.UTC().Format(time.RFC3339), "to", p.RangeEnd.UTC().Format(time.RFC3339), "survivors_retained", moved+rescued)
	}
	return nil
}
