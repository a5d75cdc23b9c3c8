package config

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParse feeds arbitrary documents to Parse. It must never panic; what it
// accepts must satisfy the invariants the rest of the program relies on;
// and it must decide the same way twice.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"../outbox.example.yaml"} {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "tls: {cert_file: a, key_file: b}\ntrusted_proxies: [10.0.0.0/8, ::1]\n"))
	f.Add([]byte("database_url: ${DB}\nadmin_token: ${TOKEN}\nroutes:\n  - {name: a, auth: {hmac: {header: X-Sig, secrets: [${S}, s2]}}, idempotency_key: [{composite: [/a, /b~1c]}], target: {url: 'https://x/', signing_secret: 'whsec_c2VjcmV0'}}\n"))
	env := env(map[string]string{"DB": "postgres://u@h/d", "TOKEN": token, "S": "secret: # not a comment", "N": "7", "EMPTY": ""})
	f.Fuzz(func(t *testing.T, data []byte) {
		// A fuzzed tls path may name a device that never ends; the
		// config check refuses those, but only after Stat.
		if bytes.Contains(data, []byte("/dev")) || bytes.Contains(data, []byte("/proc")) || bytes.Contains(data, []byte("/sys")) {
			return
		}
		cfg, err := Parse(data, env)
		_, err2 := Parse(data, env)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("Parse decided differently twice: %v, then %v", err, err2)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		require.NotEmpty(t, cfg.DatabaseURL, "accepted an incomplete config: %+v", cfg)
		require.NotEmpty(t, cfg.Routes, "accepted an incomplete config: %+v", cfg)
		if !cfg.DisableAdmin {
			require.GreaterOrEqual(t, len(cfg.AdminToken), MinAdminTokenBytes, "accepted an incomplete config: %+v", cfg)
		}
		seen := map[string]bool{}
		for _, r := range cfg.Routes {
			require.True(t, RouteNamePattern.MatchString(r.Name), "accepted route name %q", r.Name)
			require.False(t, seen[r.Name], "accepted route name %q twice", r.Name)
			seen[r.Name] = true
			modes := 0
			for _, set := range []bool{r.Auth.None, r.Auth.Basic != nil, r.Auth.Header != nil, r.Auth.HMAC != nil, r.Auth.StandardWebhooks != nil} {
				if set {
					modes++
				}
			}
			if modes != 1 {
				t.Fatalf("route %s has %d auth modes", r.Name, modes)
			}
			require.Positive(t, r.MaxBodyBytes, "route %s accepted with %+v", r.Name, r)
			require.Positive(t, r.Retry.MaxAttempts, "route %s accepted with %+v", r.Name, r)
			require.Positive(t, r.Concurrency, "route %s accepted with %+v", r.Name, r)
			require.Positive(t, r.Target.Timeout.D(), "route %s accepted with %+v", r.Name, r)
			require.NotEmpty(t, r.IdempotencyKey, "route %s accepted with %+v", r.Name, r)
			for _, k := range r.IdempotencyKey {
				if k.Header != "" {
					require.False(t, IsCredentialHeader(k.Header), "route %s takes its key from %s", r.Name, k.Header)
				}
			}
			if len(r.Target.SigningSecrets)+len(r.Target.SigningSecret) > 0 {
				require.NotEmpty(t, r.Target.SigningKeys(), "route %s: signing secrets that do not decode", r.Name)
			}
		}
		if len(cfg.TrustedProxyPrefixes()) != len(cfg.TrustedProxies) {
			t.Fatalf("trusted_proxies %q accepted but not all parse", cfg.TrustedProxies)
		}
	})
}
