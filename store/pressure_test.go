package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIntakePressure(t *testing.T) {
	t.Parallel()
	var nilPressure *IntakePressure
	nilPressure.note(100)
	require.False(t, nilPressure.Busy(), "a nil pressure is never busy")

	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	p := &IntakePressure{now: func() time.Time { return now }}
	p.note(pressureBatch - 1)
	require.False(t, p.Busy(), "a batch smaller than pressureBatch marked intake busy")
	p.note(pressureBatch)
	require.True(t, p.Busy(), "a queueing batch did not mark intake busy")
	now = now.Add(pressureWindow - time.Millisecond)
	require.True(t, p.Busy(), "intake no longer busy before the window passed")
	now = now.Add(time.Millisecond)
	require.False(t, p.Busy(), "intake still busy after the window passed")
}
