package store

import "time"

// MaxLookaheadPartitions bounds how many partitions ahead of now are
// created: PartitionLookahead (three days) of the shortest interval the
// config allows (an hour), so a test's interval of seconds makes minutes of
// partitions ahead, not tens of thousands.
const MaxLookaheadPartitions = 72

// PartitionHorizon is how far ahead of now events partitions are kept
// created: PartitionLookahead, or MaxLookaheadPartitions intervals if that
// is shorter.
func (s *Store) PartitionHorizon(now time.Time) time.Time {
	return now.Add(min(PartitionLookahead, MaxLookaheadPartitions*s.PartitionInterval))
}
