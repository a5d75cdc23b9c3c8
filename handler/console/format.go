package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

var funcs = template.FuncMap{
	"time":     formatTime,
	"ago":      ago,
	"dur":      formatDuration,
	"bytes":    formatBytes,
	"count":    formatCount,
	"truncate": truncate,
	"cfgdur":   configDuration,
	"secs":     func(s float64) string { return formatDuration(time.Duration(s * float64(time.Second))) },
	"deref": func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	},
}

// formatTime shows a time in UTC to the second; the zero time is a dash.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// ago says how long before now t was, roughly ("3m ago", "in 2h").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + roughDuration(-d)
	}
	return roughDuration(d) + " ago"
}

func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return roughDuration(d)
}

func formatBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// formatCount writes 123456 as 123,456.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func truncate(n int, s string) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// payloadView is a stored body as a page shows it.
type payloadView struct {
	// Stored is the preview of the bytes as stored, as text.
	Stored string
	// Pretty is the body indented, when it is whole in the preview and
	// valid JSON.
	Pretty    string
	Bytes     int64
	Truncated bool
	// NotUTF8 says the bytes hold invalid UTF-8, shown as U+FFFD.
	NotUTF8     bool
	ContentType string
	RawURL      string
}

func newPayloadView(preview []byte, total int64, contentType, rawURL string) payloadView {
	v := payloadView{Bytes: total, Truncated: int64(len(preview)) < total, ContentType: contentType, RawURL: rawURL}
	if v.Truncated {
		// Do not show half a character at the cut.
		for i := 0; i < utf8.UTFMax && len(preview) > 0; i++ {
			if r, size := utf8.DecodeLastRune(preview); r != utf8.RuneError || size > 1 {
				break
			}
			preview = preview[:len(preview)-1]
		}
	}
	v.NotUTF8 = !utf8.Valid(preview)
	v.Stored = strings.ToValidUTF8(string(preview), "\uFFFD")
	if !v.Truncated && json.Valid(preview) {
		var buf bytes.Buffer
		if json.Indent(&buf, preview, "", "  ") == nil {
			v.Pretty = buf.String()
		}
	}
	return v
}

// configDuration writes a configured duration the way it is usually
// written in the config: 72h, not 72h0m0s.
func configDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
