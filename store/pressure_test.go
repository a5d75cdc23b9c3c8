package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIntakePressure(t *testing.T) {
	t.Parallel()
	var nilPressure *IntakePressure
	nilPressure.note(time.Second)
	require.False(t, nilPressure.Busy(), "a nil pressure is never busy")

	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	p := &IntakePressure{now: func() time.Time { return now }}
	p.note(pressureWait - time.Millisecond)
	require.False(t, p.Busy(), "a wait shorter than pressureWait marked intake busy")
	p.note(pressureWait)
	require.True(t, p.Busy(), "a request that queued did not mark intake busy")
	require.True(t, p.BusyUntil().Equal(now.Add(pressureWindow)), "BusyUntil is %v", p.BusyUntil())
	now = now.Add(pressureWindow - time.Millisecond)
	require.True(t, p.Busy(), "intake no longer busy before the window passed")
	now = now.Add(time.Millisecond)
	require.False(t, p.Busy(), "intake still busy after the window passed")
}
