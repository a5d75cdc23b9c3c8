package main

import (
	"strings"
	"testing"
	"time"
)

func TestReadTestKnobs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env     map[string]string
		want    testKnobs
		wantErr string
	}{
		{env: map[string]string{}, want: testKnobs{}},
		{env: map[string]string{envTestMaintenanceInterval: "5s", envTestPartitionInterval: "10s"},
			want: testKnobs{MaintenanceInterval: 5 * time.Second, PartitionInterval: 10 * time.Second}},
		{env: map[string]string{envTestPartitionInterval: "1h"}, want: testKnobs{PartitionInterval: time.Hour}},
		{env: map[string]string{envTestMaintenanceInterval: "soon"}, wantErr: `OUTBOX_TEST_MAINTENANCE_INTERVAL (test only) is "soon": use a duration from 1s to 1h0m0s`},
		{env: map[string]string{envTestMaintenanceInterval: "10ms"}, wantErr: "OUTBOX_TEST_MAINTENANCE_INTERVAL (test only) is \"10ms\""},
		{env: map[string]string{envTestPartitionInterval: "0s"}, wantErr: "OUTBOX_TEST_PARTITION_INTERVAL (test only) is \"0s\""},
		{env: map[string]string{envTestPartitionInterval: "1500ms"}, wantErr: "OUTBOX_TEST_PARTITION_INTERVAL (test only) is 1.5s: use whole seconds"},
		{env: map[string]string{envTestPartitionInterval: "48h"}, wantErr: "from 1s to 24h0m0s"},
		{env: map[string]string{envIntakeBatchWorkers: "4"}, want: testKnobs{IntakeBatchWorkers: 4}},
		{env: map[string]string{envIntakeBatchWorkers: "many"}, wantErr: `OUTBOX_INTAKE_BATCH_WORKERS is "many": use a whole number from 1 to 16`},
		{env: map[string]string{envIntakeBatchWorkers: "0"}, wantErr: `OUTBOX_INTAKE_BATCH_WORKERS is "0"`},
		{env: map[string]string{envCompleterWorkers: "2", envIntakeBatchWorkers: "3"}, want: testKnobs{CompleterWorkers: 2, IntakeBatchWorkers: 3}},
		{env: map[string]string{envCompleterWorkers: "17"}, wantErr: `OUTBOX_COMPLETER_WORKERS is "17": use a whole number from 1 to 16 (the default is 1)`},
	}
	for _, c := range cases {
		got, err := readTestKnobs(func(k string) string { return c.env[k] })
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%v: error %v, want one containing %q", c.env, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%v: %+v %v, want %+v", c.env, got, err, c.want)
		}
	}
}
