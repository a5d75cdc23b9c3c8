package config

import (
	"bytes"
	"os"
	"testing"
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
		if cfg.DatabaseURL == "" || len(cfg.Routes) == 0 || (!cfg.DisableAdmin && len(cfg.AdminToken) < MinAdminTokenBytes) {
			t.Fatalf("accepted an incomplete config: %+v", cfg)
		}
		seen := map[string]bool{}
		for _, r := range cfg.Routes {
			if !RouteNamePattern.MatchString(r.Name) || seen[r.Name] {
				t.Fatalf("accepted route name %q", r.Name)
			}
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
			if r.MaxBodyBytes <= 0 || r.Retry.MaxAttempts < 1 || r.Concurrency < 1 || r.Target.Timeout.D() <= 0 || len(r.IdempotencyKey) == 0 {
				t.Fatalf("route %s accepted with %+v", r.Name, r)
			}
			for _, k := range r.IdempotencyKey {
				if k.Header != "" && IsCredentialHeader(k.Header) {
					t.Fatalf("route %s takes its key from %s", r.Name, k.Header)
				}
			}
			if len(r.Target.SigningSecrets)+len(r.Target.SigningSecret) > 0 && len(r.Target.SigningKeys()) == 0 {
				t.Fatalf("route %s: signing secrets that do not decode", r.Name)
			}
		}
		if len(cfg.TrustedProxyPrefixes()) != len(cfg.TrustedProxies) {
			t.Fatalf("trusted_proxies %q accepted but not all parse", cfg.TrustedProxies)
		}
	})
}
