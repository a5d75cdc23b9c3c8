package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// withOrdering puts an ordering block into the minimal config's route.
func withOrdering(block string) string {
	return strings.Replace(minimal, "auth: {none: true}", "auth: {none: true}\n    ordering: "+block, 1)
}

func TestOrderingDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(withOrdering("{key: [{json: /conversationId}, {header: X-Conversation}]}")), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Routes[0].Ordering
	require.NotNil(t, o, "ordering")
	require.Len(t, o.Key, 2, "ordering = %+v", o)
	require.Equal(t, "/conversationId", o.Key[0].JSON, "ordering = %+v", o)
	require.Equal(t, "X-Conversation", o.Key[1].Header, "ordering = %+v", o)
	if o.OnDeadLetter != OnDeadLetterContinue {
		t.Errorf("on_dead_letter = %q, want the default %q", o.OnDeadLetter, OnDeadLetterContinue)
	}
	cfg, err = Parse([]byte(minimal), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Routes[0].Ordering != nil {
		t.Errorf("a route without ordering got %+v", cfg.Routes[0].Ordering)
	}
	cfg, err = Parse([]byte(withOrdering("{key: [{composite: [/a, /b]}], on_dead_letter: block}")), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Routes[0].Ordering.OnDeadLetter; got != OnDeadLetterBlock {
		t.Errorf("on_dead_letter = %q, want block", got)
	}
}

// TestOrderingRefusedAtStart checks that every invalid ordering block is
// refused with a message that names the field and says what to write.
func TestOrderingRefusedAtStart(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, block string
		want        []string
	}{
		{"unknown source kind", "{key: [{jsonpath: /conversationId}]}",
			[]string{`unknown key "jsonpath" in routes[0].ordering.key[0]`, "known keys: json, header, composite, body_sha256"}},
		{"empty list", "{key: []}",
			[]string{"routes[0] (genesys).ordering.key: at least one source is required"}},
		{"no key at all", "{on_dead_letter: block}",
			[]string{"routes[0] (genesys).ordering.key: at least one source is required"}},
		{"empty source", "{key: [{}]}",
			[]string{"routes[0] (genesys).ordering.key[0]: set exactly one of json, header, composite, body_sha256"}},
		{"two kinds in one source", "{key: [{json: /a, header: X-A}]}",
			[]string{"routes[0] (genesys).ordering.key[0]: set exactly one of json, header, composite, body_sha256"}},
		{"bad pointer", "{key: [{json: conversationId}]}",
			[]string{`routes[0] (genesys).ordering.key[0].json: "conversationId" is not a JSON pointer`}},
		{"bad on_dead_letter", "{key: [{json: /c}], on_dead_letter: stop}",
			[]string{`routes[0] (genesys).ordering.on_dead_letter: "stop" is not one of continue, block`}},
		{"unknown ordering key", "{key: [{json: /c}], on_deadletter: block}",
			[]string{`unknown key "on_deadletter" in routes[0].ordering (known keys: key, on_dead_letter)`}},
		{"key not a list", "{key: /conversationId}",
			[]string{"line 7: cannot use the text", "as a list of key sources"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(withOrdering(c.block)), env(nil))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
