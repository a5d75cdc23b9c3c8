package main

import (
	"fmt"
	"io"

	"github.com/webhook-outbox/webhook-outbox/config"
)

func runConfig(args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("config", stderr)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || rest[0] != "check" {
		return usagef("the config command is: outbox config check [--config PATH]")
	}
	path := config.Path(*configPath)
	cfg, err := loadServable(*configPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is valid: %d route(s)\n", path, len(cfg.Routes))
	if cfg.TLS != nil {
		fmt.Fprintf(stdout, "  HTTPS on %s with %s\n", cfg.Listen, cfg.TLS.CertFile)
	}
	if cfg.MetricsListen != "" {
		fmt.Fprintf(stdout, "  /metrics, /healthz and /readyz on %s (plain HTTP)\n", cfg.MetricsListen)
	}
	for _, r := range cfg.Routes {
		signed := ""
		if len(r.Target.SigningKeys()) > 0 {
			signed = ", signed"
		}
		fmt.Fprintf(stdout, "  POST /webhooks/%s -> %s (auth: %s, concurrency %d, %d attempts, give up after %s%s)\n",
			r.Name, config.RedactURL(r.Target.URL), authMode(&r.Auth), r.Concurrency, r.Retry.MaxAttempts, r.Retry.GiveUpAfter.D(), signed)
	}
	for _, r := range cfg.Routes {
		if r.Auth.None {
			fmt.Fprintf(stdout, "warning: route %s accepts webhooks without authentication (auth: none: true)\n", r.Name)
		}
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return nil
}

func authMode(a *config.Auth) string {
	switch {
	case a.Basic != nil:
		return "basic"
	case a.Header != nil:
		return "header " + a.Header.Name
	case a.HMAC != nil:
		return "hmac " + a.HMAC.Header
	case a.StandardWebhooks != nil:
		return "standard_webhooks"
	}
	return "none"
}
