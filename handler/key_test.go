package handler

import (
	"testing"
)

func TestHasLoneSurrogate(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]bool{
		`{"id":"a"}`:                  false,
		`{"id":"\ud83d\ude00"}`:       false, // a pair: 😀
		`{"id":"\ud800"}`:             true,
		`{"id":"\udfff"}`:             true,
		`{"id":"\ud800\u0041"}`:       true,
		`{"id":"\\ud800"}`:            false, // an escaped backslash, then text
		`{"id":"\\\ud800"}`:           true,
		`{"id":"\u00e9\ud800x"}`:      true,
		`{"id":"\ud83d\ude00\udc00"}`: true,
	} {
		if got := hasLoneSurrogate([]byte(body)); got != want {
			t.Errorf("hasLoneSurrogate(%s) = %v, want %v", body, got, want)
		}
	}
}
