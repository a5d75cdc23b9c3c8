package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/webhook-outbox/webhook-outbox/config"
)

// debugAllowRemoteEnv, set to 1, lets OUTBOX_DEBUG_LISTEN bind an address
// other hosts can reach.
const debugAllowRemoteEnv = "OUTBOX_DEBUG_ALLOW_REMOTE"

// debugLimits are the profiler server's limits: the main listener's, but
// answers may take long (a CPU profile runs 30 s by default, and pprof
// refuses one longer than the write timeout), so writes get five minutes.
var debugLimits = func() httpLimits {
	l := defaultHTTPLimits
	l.write = 5 * time.Minute
	return l
}()

// startDebugServer serves Go's profiler on $OUTBOX_DEBUG_LISTEN, when set,
// for measuring where time goes (make bench, an incident). It is off by
// default and never on the main listener. Profiles reveal internals and the
// profiler has no authentication, so an address other hosts can reach is
// refused unless OUTBOX_DEBUG_ALLOW_REMOTE=1. It returns a function that
// stops the server.
func startDebugServer(logger *slog.Logger) (stop func(), err error) {
	addr := os.Getenv("OUTBOX_DEBUG_LISTEN")
	if addr == "" {
		return func() {}, nil
	}
	srv, ln, err := newDebugServer(addr, os.Getenv(debugAllowRemoteEnv) == "1", logger)
	if err != nil {
		return nil, err
	}
	if srv == nil {
		return func() {}, nil
	}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// newDebugServer returns the profiler's server and listener on addr, or an
// error when addr is not loopback and allowRemote is false. A port that
// cannot be bound is logged, and yields no server: the profiler is a
// diagnostic aid, not a reason to refuse serving.
func newDebugServer(addr string, allowRemote bool, logger *slog.Logger) (*http.Server, net.Listener, error) {
	if !config.IsLoopback(addr) && !allowRemote {
		return nil, nil, fmt.Errorf("OUTBOX_DEBUG_LISTEN=%s is not a loopback address: the profiler has no authentication, so bind it to 127.0.0.1 or localhost (for example 127.0.0.1:6060), or set %s=1 to expose it anyway", addr, debugAllowRemoteEnv)
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
		return nil, nil, nil
	}
	if !config.IsLoopback(addr) {
		logger.Warn("serving the Go profiler, without authentication, on an address other hosts can reach", "addr", ln.Addr().String(), debugAllowRemoteEnv, "1")
	} else {
		logger.Info("serving the Go profiler", "addr", ln.Addr().String())
	}
	return newPlainServer(mux, debugLimits, logger), ln, nil
}
