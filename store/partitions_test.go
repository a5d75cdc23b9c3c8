package store_test

import (
	"context"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// TestShortPartitionsAreBoundedAndNamedApart: with partitions of seconds
// (the fault suite's test-only interval), maintenance creates a bounded
// number of them ahead, every slot its own (no two would-be names collide),
// and intake stores into them; with the default day, the lookahead is three
// days as before.
func TestShortPartitionsAreBoundedAndNamedApart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now()
	if got, want := b.store.PartitionHorizon(now), now.Add(store.PartitionLookahead); !got.Equal(want) {
		t.Errorf("a day's partitions: horizon %s, want three days ahead (%s)", got, want)
	}
	// The migration made (empty) partitions of a day, which the short
	// ones would only overlap.
	b.exec(t, `DO $$ DECLARE p text; BEGIN
		FOR p IN SELECT name FROM outbox_live_partitions() LOOP EXECUTE format('DROP TABLE %I', p); END LOOP; END $$`)
	b.store.PartitionInterval = 5 * time.Second
	rep, err := b.store.Maintain(ctx, store.RetentionPolicy{EventRetention: time.Hour}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PartitionsCreated < store.MaxLookaheadPartitions || rep.PartitionsCreated > store.MaxLookaheadPartitions+2 {
		t.Errorf("5s partitions: maintenance created %d, want about %d", rep.PartitionsCreated, store.MaxLookaheadPartitions)
	}
	short := b.count(t, `SELECT count(*) FROM outbox_live_partitions() WHERE range_end - range_start = interval '5 seconds'`)
	if short != int64(rep.PartitionsCreated) || b.count(t, `SELECT count(*) FROM outbox_live_partitions()`) != short {
		t.Errorf("%d partitions of 5s, %d created", short, rep.PartitionsCreated)
	}
	if n := b.count(t, `SELECT count(*) FROM outbox_live_partitions() WHERE range_end - range_start = interval '5 seconds' AND name !~ '^events_p[0-9]{8}_[0-9]{4}([0-9]{2})?$'`); n != 0 {
		t.Errorf("%d partitions of 5s are not named events_pYYYYMMDD_HHMM[SS]", n)
	}
	if _, err := b.intake.AcceptBatch(ctx, []*outbox.NewEvent{newEvent("short-1")}); err != nil {
		t.Fatal(err)
	}
}
