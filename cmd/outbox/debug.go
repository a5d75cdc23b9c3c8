package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// startDebugServer serves Go's profiler on $OUTBOX_DEBUG_LISTEN, when set,
// for measuring where time goes (make bench, an incident). It is off by
// default and never on the main listener: profiles reveal internals, so
// bind it to localhost.
func startDebugServer(logger *slog.Logger) {
	addr := os.Getenv("OUTBOX_DEBUG_LISTEN")
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Warn("cannot serve the profiler on OUTBOX_DEBUG_LISTEN", "addr", addr, "error", err)
		return
	}
	logger.Info("serving the Go profiler", "addr", ln.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
}
