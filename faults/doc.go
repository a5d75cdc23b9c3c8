// Package faults is webhook-outbox's fault-injection suite. It has no code
// of its own, only tests: they run the real outbox binary against a private
// Postgres cluster that they start, crash and restart, and a real HTTP
// target that fails, hangs or recovers on cue. Each case keeps a ledger of
// every key a sender got a 2xx for, and checks key by key that each one is
// stored and was delivered or is a dead letter.
//
// Run it with `make test-faults` (part of `make test`); it sets
// OUTBOX_FAULTS=1, without which the tests skip.
package faults
