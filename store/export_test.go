package store

import "context"

// SetStepHook makes Maintain call hook as it starts each step (named
// "partitions", "expire-dead-letters", "detached events_p…" and so on); an
// error from hook stops the run there, as a crash would.
func SetStepHook(s *Store, hook func(ctx context.Context, step string) error) { s.stepHook = hook }

// SetBeforeCommit makes each of in's transactions call hook just before its
// commit.
func SetBeforeCommit(in *Intake, hook func()) { in.beforeCommit = hook }
