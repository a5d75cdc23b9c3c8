package handler

import (
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"
)

// RiverUIPrefix is where River UI is mounted.
const RiverUIPrefix = "/riverui"

// NewRiverUI returns River UI for client, serving its embedded, prebuilt
// frontend under RiverUIPrefix. River UI has no auth of its own: the router
// puts it behind the admin token. Call Start on it before serving.
func NewRiverUI(client *river.Client[pgx.Tx], logger *slog.Logger) (*riverui.Handler, error) {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(client, nil),
		Logger:    logger,
		Prefix:    RiverUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("error creating River UI: %w", err)
	}
	return h, nil
}
