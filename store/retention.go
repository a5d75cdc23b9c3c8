package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// PartitionLookahead is how far ahead of now events partitions are created,
// so intake never waits for one even if maintenance stops for days.
const PartitionLookahead = 3 * 24 * time.Hour

// retentionBatch bounds the rows one retention transaction deletes.
const retentionBatch = 1000

// Lock waits of maintenance's DDL. Creating a partition waits only for
// other DDL on events_live (see migration 000013), never for readers or
// intake, and gives up after partitionLockWait: the lookahead leaves days to
// try again. Dropping a detached partition waits only for a session reading
// that very table.
const (
	partitionLockWait       = 2 * time.Second
	intakePartitionLockWait = time.Second
	dropLockTimeout         = "10s"
)

// ErrPartitionsBusy reports that events partitions could not be created
// because other DDL on events_live (another replica's retention, an ANALYZE)
// held its lock longer than the wait allowed. Trying again later is enough.
var ErrPartitionsBusy = errors.New("events partitions not created: other DDL on events_live holds its lock; try again shortly")

// EnsurePartitions creates the events partitions covering [from, to). It
// returns ErrPartitionsBusy when other DDL on events_live kept it waiting.
func (s *Store) EnsurePartitions(ctx context.Context, from, to time.Time) error {
	_, err := s.ensurePartitions(ctx, from, to, partitionLockWait)
	return err
}

func (s *Store) ensurePartitions(ctx context.Context, from, to time.Time, lockWait time.Duration) (int, error) {
	res, err := s.q.EnsurePartitions(ctx, dbsqlc.EnsurePartitionsParams{
		FromTs: from, ToTs: to, StepSecs: s.PartitionInterval.Seconds(), LockWaitSecs: lockWait.Seconds(),
	})
	if err != nil {
		return 0, fmt.Errorf("error creating events partitions: %w", err)
	}
	if res.Busy {
		return int(res.Created), ErrPartitionsBusy
	}
	return int(res.Created), nil
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
	// Skipped is true when another run held the maintenance lock, so this
	// one did nothing.
	Skipped           bool
	PartitionsCreated int
	// PartitionsBusy is true when partitions could not all be created
	// because other DDL held events_live; the next run tries again.
	PartitionsBusy     bool
	DeadLettersExpired int64
	// DropsFinished are partitions an interrupted earlier run had started
	// to remove, and this one removed.
	DropsFinished     []string
	PartitionsDropped []string
	SurvivorsRetained int64
	RetainedDeleted   int64
}

// Maintain enforces retention, in small steps:
//
//  1. it creates events partitions up to PartitionLookahead ahead, without
//     ever making intake wait;
//  2. it finishes the partition drops an interrupted earlier run left;
//  3. it deletes dead letters older than dead_letter_retention, each job
//     with its event in one transaction, so neither outlives the other
//     (River's own cleaner is told to keep them forever);
//  4. for each partition older than event_retention, it moves the
//     survivors (events with a delivery waiting, and dead letters still
//     kept) into events_retained, records the drop, detaches the partition
//     without blocking intake (DETACH ... CONCURRENTLY), then rescues any
//     survivor that appeared meanwhile and drops it: no row-by-row DELETE
//     of delivered events;
//  5. it deletes retained events that no longer need keeping, in batches,
//     and forgets replays untouched for event_retention.
//
// An event waiting for delivery is never removed, whatever its age. One run
// goes at a time: a run that finds another in progress (on any replica, or
// the same job rescued by River while it still ran) returns at once with
// Skipped set. An interrupted run loses nothing; the next one finishes its
// work.
func (s *Store) Maintain(ctx context.Context, policy RetentionPolicy, logger *slog.Logger) (*MaintenanceReport, error) {
	rep := &MaintenanceReport{}
	unlock, ok, err := s.lockMaintenance(ctx, logger)
	if err != nil {
		return rep, err
	}
	if !ok {
		rep.Skipped = true
		logger.Info("maintenance is already running in another session (another replica, or an earlier run River rescued while it still ran); this run does nothing")
		return rep, nil
	}
	defer unlock()

	now := time.Now()
	if err := s.step(ctx, "partitions"); err != nil {
		return rep, err
	}
	until := s.PartitionHorizon(now)
	created, err := s.ensurePartitions(ctx, now.Add(-s.PartitionInterval), until, partitionLockWait)
	rep.PartitionsCreated = created
	switch {
	case errors.Is(err, ErrPartitionsBusy):
		rep.PartitionsBusy = true
		logger.Warn("could not create every events partition: other DDL on events_live held its lock; the next run will retry (partitions exist days ahead, so intake is not affected)",
			"created", created, "lock_wait", partitionLockWait)
	case err != nil:
		return rep, err
	}
	if created > 0 {
		logger.Info("created events partitions", "count", created, "until", until.UTC().Format(time.RFC3339))
	}

	if err := s.step(ctx, "pending-drops"); err != nil {
		return rep, err
	}
	if err := s.finishPendingDrops(ctx, rep, logger); err != nil {
		return rep, err
	}

	if err := s.step(ctx, "expire-dead-letters"); err != nil {
		return rep, err
	}
	if policy.DeadLetterRetention > 0 {
		if err := s.expireDeadLetters(ctx, now.Add(-policy.DeadLetterRetention), rep, logger); err != nil {
			return rep, err
		}
	}

	if err := s.dropExpiredPartitions(ctx, now.Add(-policy.EventRetention), rep, logger); err != nil {
		return rep, err
	}

	if err := s.step(ctx, "retained-cleanup"); err != nil {
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
	if _, err := s.q.DeleteOldReplays(ctx, now.Add(-policy.EventRetention)); err != nil {
		return rep, fmt.Errorf("error forgetting old replays: %w", err)
	}
	logger.Info("retention done", "partitions_created", rep.PartitionsCreated, "partitions_busy", rep.PartitionsBusy,
		"dead_letters_expired", rep.DeadLettersExpired, "drops_finished", len(rep.DropsFinished),
		"partitions_dropped", len(rep.PartitionsDropped), "survivors_retained", rep.SurvivorsRetained, "retained_deleted", rep.RetainedDeleted)
	return rep, nil
}

// lockMaintenance takes the maintenance lock on a connection of its own,
// held for the whole run. ok is false when another session holds it.
func (s *Store) lockMaintenance(ctx context.Context, logger *slog.Logger) (unlock func(), ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("error connecting for maintenance: %w", err)
	}
	ok, err = dbsqlc.New(conn).TryMaintenanceLock(ctx)
	if err != nil || !ok {
		conn.Release()
		if err != nil {
			return nil, false, fmt.Errorf("error taking the maintenance lock: %w", err)
		}
		return nil, false, nil
	}
	return func() { releaseMaintenanceLock(ctx, conn, logger) }, true, nil
}

// releaseMaintenanceLock unlocks even when the run's context has ended. If
// it cannot, it closes the connection, which releases the lock with it,
// rather than return a locked session to the pool.
func releaseMaintenanceLock(ctx context.Context, conn *pgxpool.Conn, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if released, err := dbsqlc.New(conn).MaintenanceUnlock(ctx); err != nil || !released {
		logger.Warn("could not release the maintenance lock; closing its connection instead", "error", err)
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}

// expireDeadLetters deletes dead letters that failed before `before`, with
// their events, a batch per transaction. A dead letter an operator retries
// or replays while this runs is left alone: its job is deleted only if it
// is still dead when the delete reaches it, and only the events of the jobs
// actually deleted are deleted, never one that was delivered or has another
// job.
func (s *Store) expireDeadLetters(ctx context.Context, before time.Time, rep *MaintenanceReport, logger *slog.Logger) error {
	var after int64
	for {
		var candidates int
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			q := s.q.WithTx(tx)
			batch, err := q.ExpiredDeadLetterBatch(ctx, dbsqlc.ExpiredDeadLetterBatchParams{Before: &before, AfterID: after, MaxRows: retentionBatch})
			if err != nil {
				return fmt.Errorf("error selecting expired dead letters: %w", err)
			}
			candidates = len(batch)
			if candidates == 0 {
				return nil
			}
			after = batch[len(batch)-1].JobID
			jobIDs := make([]int64, len(batch))
			eventIDs := make([]int64, len(batch))
			receivedAts := make([]time.Time, len(batch))
			for i, b := range batch {
				jobIDs[i], eventIDs[i], receivedAts[i] = b.JobID, b.EventID, b.ReceivedAt
			}
			if _, err := q.LockEvents(ctx, dbsqlc.LockEventsParams{EventIds: eventIDs, ReceivedAts: receivedAts}); err != nil {
				return fmt.Errorf("error locking the events of expired dead letters: %w", err)
			}
			gone, err := q.DeleteExpiredDeadLetterJobs(ctx, dbsqlc.DeleteExpiredDeadLetterJobsParams{JobIds: jobIDs, Before: &before})
			if err != nil {
				return fmt.Errorf("error deleting expired dead letter jobs: %w", err)
			}
			eventIDs, receivedAts = eventIDs[:0], receivedAts[:0]
			for _, g := range gone {
				eventIDs, receivedAts = append(eventIDs, g.EventID), append(receivedAts, g.ReceivedAt)
			}
			if _, err := q.DeleteUndeliveredEventsWithoutJobs(ctx, dbsqlc.DeleteUndeliveredEventsWithoutJobsParams{EventIds: eventIDs, ReceivedAts: receivedAts}); err != nil {
				return fmt.Errorf("error deleting the events of expired dead letters: %w", err)
			}
			rep.DeadLettersExpired += int64(len(gone))
			return nil
		})
		if err != nil {
			return err
		}
		if candidates == 0 {
			return nil
		}
		logger.Info("expired dead letters", "deleted_so_far", rep.DeadLettersExpired, "failed_before", before.UTC().Format(time.RFC3339))
		if candidates < retentionBatch {
			return nil
		}
	}
}

// finishPendingDrops completes or forgets the partition drops an earlier run
// recorded and did not finish (it was killed, cancelled, or failed between
// the detach and the drop).
func (s *Store) finishPendingDrops(ctx context.Context, rep *MaintenanceReport, logger *slog.Logger) error {
	drops, err := s.q.PendingPartitionDrops(ctx)
	if err != nil {
		return fmt.Errorf("error listing unfinished partition drops: %w", err)
	}
	for _, d := range drops {
		switch d.State {
		case "attached":
			// The detach never began. The partition is treated like any
			// other below, survivors and all, if it has expired.
			if err := s.q.ForgetPartitionDrop(ctx, d.Name); err != nil {
				return fmt.Errorf("error forgetting the drop of %s: %w", d.Name, err)
			}
			logger.Info("an earlier run recorded dropping a partition but did not detach it; it is handled anew", "partition", d.Name)
			continue
		case "detach_pending":
			if err := s.detach(ctx, d.Name, true); err != nil {
				return err
			}
		}
		rescued, err := s.finishDrop(ctx, d.Name)
		if err != nil {
			return err
		}
		rep.DropsFinished = append(rep.DropsFinished, d.Name)
		rep.SurvivorsRetained += rescued
		logger.Info("finished dropping a partition an earlier run left detached", "partition", d.Name, "was", d.State, "survivors_retained", rescued)
	}
	return nil
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
		if err := s.step(ctx, "retain "+p.Name); err != nil {
			return err
		}
		moved, err := s.q.RetainSurvivors(ctx, dbsqlc.RetainSurvivorsParams{RangeStart: p.RangeStart, RangeEnd: p.RangeEnd})
		if err != nil {
			return fmt.Errorf("error retaining the survivors of %s: %w", p.Name, err)
		}
		// From here the drop is recorded, so that wherever this run stops,
		// the next one finishes it.
		if err := s.q.RecordPartitionDrop(ctx, p.Name); err != nil {
			return fmt.Errorf("error recording the drop of %s: %w", p.Name, err)
		}
		if err := s.step(ctx, "detach "+p.Name); err != nil {
			return err
		}
		if err := s.detach(ctx, p.Name, p.DetachPending); err != nil {
			return err
		}
		if err := s.step(ctx, "detached "+p.Name); err != nil {
			return err
		}
		rescued, err := s.finishDrop(ctx, p.Name)
		if err != nil {
			return err
		}
		rep.PartitionsDropped = append(rep.PartitionsDropped, p.Name)
		rep.SurvivorsRetained += moved + rescued
		logger.Info("dropped expired events partition", "partition", p.Name,
			"from", p.RangeStart.UTC().Format(time.RFC3339), "to", p.RangeEnd.UTC().Format(time.RFC3339), "survivors_retained", moved+rescued)
	}
	return nil
}

// detach detaches a partition from events_live without blocking intake, or
// completes a detach that was interrupted (finalize).
func (s *Store) detach(ctx context.Context, name string, finalize bool) error {
	// DDL names a partition, so the name is quoted here rather than bound:
	// it comes from pg_class via outbox_live_partitions or from
	// outbox_partition_drops (whose CHECK admits only partition names),
	// never from input. CONCURRENTLY and FINALIZE cannot run in a function
	// or a transaction; CONCURRENTLY lets intake go on meanwhile.
	ident := pgx.Identifier{name}.Sanitize()
	var err error
	if finalize {
		_, err = s.pool.Exec(ctx, "ALTER TABLE events_live DETACH PARTITION "+ident+" FINALIZE")
	} else {
		_, err = s.pool.Exec(ctx, "ALTER TABLE events_live DETACH PARTITION "+ident+" CONCURRENTLY")
	}
	if err != nil {
		return fmt.Errorf("error detaching %s (the next maintenance run finishes it): %w", name, err)
	}
	return nil
}

// finishDrop rescues the survivors of a detached partition, drops it and
// forgets its pending drop, in one transaction. It gives up after
// dropLockTimeout if a session is reading the detached table; the drop stays
// recorded for the next run.
func (s *Store) finishDrop(ctx context.Context, name string) (rescued int64, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		if err := q.SetLockTimeout(ctx, dropLockTimeout); err != nil {
			return err
		}
		rescued, err = q.RescueDetachedSurvivors(ctx, name)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("error dropping detached %s (the next maintenance run finishes it): %w", name, err)
	}
	return rescued, nil
}

// step calls the test hook, if any, as a maintenance step starts.
func (s *Store) step(ctx context.Context, name string) error {
	if s.stepHook == nil {
		return nil
	}
	return s.stepHook(ctx, name)
}
