package jobs_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/jobs"
)

// TestDeadLettersOutliveRiverDefaults ages jobs by hand and lets River's
// cleaner and webhook-outbox's maintenance job (which runs when the client
// starts) do their work with our settings: dead letters older than River's
// defaults (7 days discarded, 1 day cancelled) stay, completed jobs go after
// completed_job_retention (a day), and dead letters past
// dead_letter_retention go, together with their events.
func TestDeadLettersOutliveRiverDefaults(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		retention    string
		keep31DayOld bool
	}{
		{"", false},       // default: 720h
		{"forever", true}, // River's -1
		{"1000h", true},   // 41 days
	} {
		t.Run("retention "+c.retention, func(t *testing.T) {
			t.Parallel()
			top := ""
			if c.retention != "" {
				top = "dead_letter_retention: " + c.retention
			}
			b := setupTop(t, "http://127.0.0.1:1/", "", top)
			aged := map[string]struct {
				state string
				age   time.Duration
				kept  bool
			}{
				"discarded-8d":  {"discarded", 8 * 24 * time.Hour, true},
				"cancelled-2d":  {"cancelled", 2 * 24 * time.Hour, true},
				"discarded-31d": {"discarded", 31 * 24 * time.Hour, c.keep31DayOld},
				"completed-2d":  {"completed", 2 * 24 * time.Hour, false},
			}
			// Let the maintenance run that starts with the client finish
			// first, so that the run below sees the aged rows.
			b.waitMaintenanceDone(t, 1)
			ids := map[string]int64{}
			for key, a := range aged {
				// Queue "parked" has no worker, so nothing runs these jobs.
				res, err := b.intake.Accept(context.Background(), &outbox.NewEvent{Route: "parked", Key: key, ContentType: "application/json", Headers: http.Header{}, Body: []byte(`{}`), MaxAttempts: 3})
				if err != nil {
					t.Fatal(err)
				}
				ids[key] = res.JobID
				_, err = b.pool.Exec(context.Background(), fmt.Sprintf(
					`UPDATE river_job SET state = '%s', attempt = 3, attempted_at = now() - $2::interval, finalized_at = now() - $2::interval WHERE id = $1`, a.state),
					res.JobID, a.age.String())
				if err != nil {
					t.Fatal(err)
				}
			}
			// The completed job going away proves the cleaner has run.
			deadline := time.Now().Add(60 * time.Second)
			for b.jobExists(t, ids["completed-2d"]) {
				if time.Now().After(deadline) {
					t.Fatal("River's cleaner did not run within 60s")
				}
				time.Sleep(100 * time.Millisecond)
			}
			// Now a maintenance run, as the leader enqueues every ten minutes.
			if _, err := b.client.Insert(context.Background(), jobs.MaintenanceArgs{}, nil); err != nil {
				t.Fatal(err)
			}
			b.waitMaintenanceDone(t, 2)
			for key, a := range aged {
				if got := b.jobExists(t, ids[key]); got != a.kept {
					t.Errorf("%s: exists=%v, want %v", key, got, a.kept)
				}
				var events int
				if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE route = 'parked' AND key = $1`, key).Scan(&events); err != nil {
					t.Fatal(err)
				}
				// A dead letter's event goes with it; a delivered one's stays
				// (event_retention), the completed job notwithstanding.
				wantEvent := a.kept || a.state == "completed"
				if (events == 1) != wantEvent {
					t.Errorf("%s: event exists=%v, want %v", key, events == 1, wantEvent)
				}
			}
		})
	}
}

// waitMaintenanceDone waits until n maintenance jobs have completed.
func (b *bundle) waitMaintenanceDone(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var done int
		if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'outbox_maintenance' AND state = 'completed'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d maintenance runs completed within 60s", done, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bundle) jobExists(t *testing.T, id int64) bool {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}
