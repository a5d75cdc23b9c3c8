package store

// SetBeforeCommit makes in call f at the end of each intake transaction,
// before its commit, so a test can hold an intake there.
func (in *Intake) SetBeforeCommit(f func()) { in.beforeCommit = f }
