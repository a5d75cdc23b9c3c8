package admin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// TestRetryCursorKeepsTheWholeFilter: a resumed retry selects what the
// interrupted one did, payload condition included.
func TestRetryCursorKeepsTheWholeFilter(t *testing.T) {
	t.Parallel()
	f := outbox.DeadLetterFilter{
		Route: "genesys", Since: time.Unix(0, 1764400000123456789), Until: time.Unix(0, 1764480000987654321),
		ErrorContains: "503", Payload: &outbox.PayloadCondition{Path: []string{"conversation", "id"}, Value: "c-1"},
	}
	got, after, err := decodeRetryCursor(encodeRetryCursor(f, 42))
	require.NoError(t, err)
	require.Equal(t, int64(42), after)
	require.True(t, f.Since.Equal(got.Since) && f.Until.Equal(got.Until))
	got.Since, got.Until = f.Since, f.Until
	require.Equal(t, f, got)

	got, _, err = decodeRetryCursor(encodeRetryCursor(outbox.DeadLetterFilter{Until: f.Until}, 0))
	require.NoError(t, err)
	require.True(t, got.Since.IsZero())
	require.Nil(t, got.Payload)
}
