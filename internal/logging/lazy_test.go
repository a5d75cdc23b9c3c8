package logging_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webhook-outbox/webhook-outbox/internal/logging"
)

// TestLazyWritesWhatTheHandlerWould: the same calls through Lazy and
// through the plain handler write the same lines, groups and levels
// included.
func TestLazyWritesWhatTheHandlerWould(t *testing.T) {
	t.Parallel()
	write := func(l *slog.Logger) {
		a := l.With("route", "genesys", "key", "k1")
		a.Info("skipped") // below the level
		b := a.With("attempt", 2)
		b.Warn("target answered 503", "status", 503)
		a.Error("plain", "error", "boom") // b's attribute must not leak into a
		g := b.WithGroup("target").With("url", "http://t")
		g.Error("in a group", "timeout", "10s")
		l.Warn("no attributes")
	}
	for _, newHandler := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler {
			return slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: dropTime})
		},
		func(b *bytes.Buffer) slog.Handler {
			return slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: dropTime})
		},
	} {
		var plain, lazy bytes.Buffer
		write(slog.New(newHandler(&plain)))
		write(slog.New(logging.Lazy(newHandler(&lazy))))
		require.Equal(t, plain.String(), lazy.String())
		require.Equal(t, 4, strings.Count(lazy.String(), "\n"), "the info line is below the level")
		require.NotContains(t, strings.Split(lazy.String(), "\n")[1], "attempt")
	}
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
