package migrations

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

var update = flag.Bool("update", false, "rewrite the River migration files from the River module")

// riverNumbers maps River's migration versions to ours. River's 001-008 came
// first; webhook-outbox's own migrations follow from 9. A later River
// version takes the next free number when River is upgraded: add it here.
var riverNumbers = map[int]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8}

// riverFiles renders River's migrations as golang-migrate files. The schema
// template is left empty so the tables land in the connection's search_path,
// and each file records itself in River's river_migration table so River's
// own tooling sees the same version we do.
func riverFiles(t *testing.T) map[string]string {
	t.Helper()
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	nonWord := regexp.MustCompile(`[^a-z0-9]+`)
	for _, m := range migrator.AllVersions() {
		number, ok := riverNumbers[m.Version]
		if !ok {
			t.Fatalf("River migration %03d (%s) has no number here: add it to riverNumbers in migrations/river_test.go as the next free number (after %d), then run with -update", m.Version, m.Name, Latest)
		}
		name := fmt.Sprintf("%06d_river_%03d_%s", number, m.Version, strings.Trim(nonWord.ReplaceAllString(strings.ToLower(m.Name), "_"), "_"))
		header := fmt.Sprintf("-- River migration %03d (%s), generated from github.com/riverqueue/river/rivermigrate.\n"+
			"-- Do not edit. Regenerate with: go test ./migrations -run TestRiverMigrationsMatchRiver -update\n\n", m.Version, m.Name)
		up := strings.ReplaceAll(m.SQLUp, "/* TEMPLATE: schema */", "")
		down := strings.ReplaceAll(m.SQLDown, "/* TEMPLATE: schema */", "")

		// River's table changes shape at 005: before it, rows are (version); from it on, (line, version).
		var record, unrecord string
		switch {
		case m.Version < 5:
			record = fmt.Sprintf("INSERT INTO river_migration (version) VALUES (%d);\n", m.Version)
		default:
			record = fmt.Sprintf("INSERT INTO river_migration (line, version) VALUES ('main', %d);\n", m.Version)
		}
		if m.Version > 1 { // 001's down drops the table itself
			unrecord = fmt.Sprintf("DELETE FROM river_migration WHERE version = %d;\n\n", m.Version)
		}
		out[name+".up.sql"] = header + strings.TrimSpace(up) + "\n\n" + record
		out[name+".down.sql"] = header + unrecord + strings.TrimSpace(down) + "\n"
	}
	return out
}

// TestRiverMigrationsMatchRiver fails when River is upgraded without
// regenerating its migration files, so the schema never drifts from the River
// version the binary runs.
func TestRiverMigrationsMatchRiver(t *testing.T) {
	t.Parallel()
	want := riverFiles(t)
	if *update {
		for name, body := range want {
			if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, body := range want {
		got, err := os.ReadFile(filepath.Clean(name))
		if err != nil {
			t.Errorf("%s is missing: run go test ./migrations -run TestRiverMigrationsMatchRiver -update", name)
			continue
		}
		if string(got) != body {
			t.Errorf("%s differs from River's migration: run go test ./migrations -run TestRiverMigrationsMatchRiver -update", name)
		}
	}
}
