package jobs

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
)

// TestJobMetaNames holds outbox.DeliveryMetadata's tags to the names intake, replay,
// tracing and River write the metadata under.
func TestJobMetaNames(t *testing.T) {
	giveUp := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	raw, err := json.Marshal(map[string]any{
		outbox.MetadataRequestID:    "req-1",
		outbox.MetadataGiveUpAt:     giveUp.Format(time.RFC3339Nano),
		tracing.MetadataTraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		tracing.MetadataTraceState:  "vendor=x",
		"river:resumable_step":      "send",
		"snoozes":                   3, // River's count
	})
	require.NoError(t, err)
	job := &river.Job[outbox.DeliverArgs]{JobRow: &rivertype.JobRow{Metadata: raw, CreatedAt: giveUp.Add(-time.Hour)}}

	m := readMeta(job)
	require.Equal(t, outbox.DeliveryMetadata{RequestID: "req-1", GiveUpAt: giveUp.Format(time.RFC3339Nano),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "vendor=x", Snoozes: 3}, m)

	// The delivery's log attributes come out at the top level of a line.
	var buf bytes.Buffer
	job.ID, job.Attempt, job.Args = 7, 2, outbox.DeliverArgs{Route: "genesys", Key: "k1", EventID: 9}
	slog.New(slog.NewJSONHandler(&buf, nil)).With(slog.Any("", jobLog{job: job, requestID: m.RequestID})).Info("delivered", "status", 200)
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	delete(line, "time")
	require.Equal(t, map[string]any{"level": "INFO", "msg": "delivered", "route": "genesys", "key": "k1",
		"job_id": 7.0, "attempt": 2.0, "event_id": 9.0, "request_id": "req-1", "status": 200.0}, line)
	rc := &config.Route{}
	rc.Retry.GiveUpAfter = config.NewDuration(10 * time.Minute)
	require.True(t, giveUpAt(job, rc).Equal(giveUp), "the metadata's later deadline wins over created_at + give_up_after")

	none := &river.Job[outbox.DeliverArgs]{JobRow: &rivertype.JobRow{Metadata: []byte(`{}`), CreatedAt: giveUp}}
	require.Equal(t, outbox.DeliveryMetadata{}, readMeta(none), "no request id, deadline or trace context")
	require.True(t, giveUpAt(none, rc).Equal(giveUp.Add(10*time.Minute)))
}
