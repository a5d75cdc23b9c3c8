package jobs_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/webhook-outbox/webhook-outbox/store"
)

// A permanent failure's dead letter says what happened first, in the
// dead_letters view (last_error and errors) and in the event's detail,
// though River records it as "JobCancelError: …".
func TestPermanentFailureSaysWhatHappenedFirst(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	b := setup(t, tg.URL, "")
	res := b.accept(t, `{"id":"gone-1"}`, 5)
	job := b.waitJob(t, res.JobID, 15*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCancelled })
	require.True(t, strings.HasPrefix(job.Errors[0].Error, "JobCancelError: "), "River's own record keeps its prefix: %q", job.Errors[0].Error)

	ctx := context.Background()
	var lastError, firstError, cause string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT last_error, errors -> 0 ->> 'error' FROM dead_letters WHERE key = 'gone-1'`).Scan(&lastError, &firstError))
	require.True(t, strings.HasPrefix(lastError, "target answered 410 Gone after "), "last_error: %q", lastError)
	require.Equal(t, lastError, firstError)
	ev, err := store.New(b.pool).EventByKey(ctx, "r", "gone-1")
	require.NoError(t, err)
	require.Equal(t, lastError, ev.Jobs[0].Errors[0].Error, "the event's detail (admin API, console)")

	// The example query that groups permanent failures by the target's
	// answer finds it.
	require.NoError(t, b.pool.QueryRow(ctx, `
		SELECT coalesce(substring(last_error from 'target answered ([0-9]{3} [A-Za-z -]+?)( after|$)'), 'other')
		FROM dead_letters WHERE key = 'gone-1'`).Scan(&cause))
	require.Equal(t, "410 Gone", cause)
}
