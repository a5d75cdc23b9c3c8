// Package logging holds the process's slog plumbing.
package logging

import (
	"context"
	"log/slog"
	"slices"
)

// Lazy returns h with Logger.With made cheap: attributes added with With
// are kept as they are and formatted only when a record is written, rather
// than encoded at once as slog's JSON and text handlers do. A delivery or
// an intake request builds a logger with half a dozen attributes and, at
// the usual levels, writes nothing with it; encoding them anyway cost
// about 3% of a drain's CPU.
func Lazy(h slog.Handler) slog.Handler { return &lazy{inner: h} }

type lazy struct {
	inner slog.Handler
	attrs []slog.Attr // added by With, not yet given to inner
}

func (h *lazy) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *lazy) Handle(ctx context.Context, r slog.Record) error {
	if len(h.attrs) == 0 {
		return h.inner.Handle(ctx, r)
	}
	// With's attributes come before the record's, as they would have.
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(h.attrs...)
	r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
	return h.inner.Handle(ctx, nr)
}

func (h *lazy) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	return &lazy{inner: h.inner, attrs: append(slices.Clip(h.attrs), as...)}
}

// WithGroup hands the kept attributes to inner first: they belong outside
// the group.
func (h *lazy) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	inner := h.inner
	if len(h.attrs) > 0 {
		inner = inner.WithAttrs(h.attrs)
	}
	return &lazy{inner: inner.WithGroup(name)}
}
