package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// Test-only knobs. The fault suite's soak needs retention to run every few
// seconds and partitions of seconds, so that partitions expire within its
// run; the config file refuses such values, rightly, for an operator. They
// are read from the environment by serve only, never from the YAML config,
// and serve logs a warning when one is set.
//
// OUTBOX_INTAKE_BATCH_WORKERS and OUTBOX_COMPLETER_WORKERS are measurement
// knobs, read the same way: how many intake group-commit batchers run, and
// how many commits record deliveries at once (bench/README.md).
const (
	envTestMaintenanceInterval = "OUTBOX_TEST_MAINTENANCE_INTERVAL"
	envTestPartitionInterval   = "OUTBOX_TEST_PARTITION_INTERVAL"
	envIntakeBatchWorkers      = "OUTBOX_INTAKE_BATCH_WORKERS"
	envCompleterWorkers        = "OUTBOX_COMPLETER_WORKERS"
)

// testKnobs are the test-only settings in effect; zero values mean unset.
type testKnobs struct {
	// MaintenanceInterval replaces jobs.MaintenanceInterval (10 min).
	MaintenanceInterval time.Duration
	// PartitionInterval replaces event_partition_interval.
	PartitionInterval time.Duration
	// IntakeBatchWorkers replaces store.DefaultBatchWorkers.
	IntakeBatchWorkers int
	// CompleterWorkers replaces jobs.CompleterWorkers.
	CompleterWorkers int
}

// readTestKnobs reads the test-only knobs through getenv, and says which
// one is wrong and why.
func readTestKnobs(getenv func(string) string) (testKnobs, error) {
	var k testKnobs
	var err error
	if k.MaintenanceInterval, err = knobDuration(getenv, envTestMaintenanceInterval, time.Second, time.Hour); err != nil {
		return k, err
	}
	if k.PartitionInterval, err = knobDuration(getenv, envTestPartitionInterval, time.Second, 24*time.Hour); err != nil {
		return k, err
	}
	if iv := k.PartitionInterval; iv%time.Second != 0 {
		return k, fmt.Errorf("%s (test only) is %s: use whole seconds", envTestPartitionInterval, iv)
	}
	if k.IntakeBatchWorkers, err = knobWorkers(getenv, envIntakeBatchWorkers, store.DefaultBatchWorkers); err != nil {
		return k, err
	}
	if k.CompleterWorkers, err = knobWorkers(getenv, envCompleterWorkers, jobs.CompleterWorkers); err != nil {
		return k, err
	}
	return k, nil
}

func knobWorkers(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 16 {
		return 0, fmt.Errorf("%s is %q: use a whole number from 1 to 16 (the default is %d), or unset it", name, v, def)
	}
	return n, nil
}

func knobDuration(getenv func(string) string, name string, lo, hi time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%s (test only) is %q: use a duration from %s to %s, such as 5s, or unset it", name, v, lo, hi)
	}
	return d, nil
}
