package handler

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONTooDeep(t *testing.T) {
	t.Parallel()
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		body string
		deep bool
	}{
		{`{"id":1}`, false},
		{nest(64), false},
		{nest(65), true},
		{`{"a":` + nest(63) + `}`, false},
		{`{"a":` + nest(64) + `}`, true},
		{`{"a":"` + strings.Repeat("[", 1000) + `"}`, false},                 // brackets in a string
		{`{"a":"\"` + strings.Repeat("{", 100) + `","b":[]}`, false},         // after an escaped quote
		{`{"a":"\\\\","b":` + nest(64) + `}`, true},                          // escaped backslashes end the string
		{`[` + strings.Repeat(`{"a":[],"b":{}},`, 1000) + `{}]`, false},      // wide, not deep
		{strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat(`}`, 64), false}, // objects count too
		{strings.Repeat(`{"a":`, 65) + `1` + strings.Repeat(`}`, 65), true},
	}
	for _, c := range cases {
		if !json.Valid([]byte(c.body)) {
			t.Fatalf("test body is not JSON: %.80s", c.body)
		}
		if got := jsonTooDeep([]byte(c.body), MaxJSONDepth); got != c.deep {
			t.Errorf("jsonTooDeep(%.60s…) = %v, want %v", c.body, got, c.deep)
		}
	}
}
