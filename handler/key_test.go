package handler

import (
	"testing"

	"github.com/webhook-outbox/webhook-outbox/config"
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

// TestStrippedHeadersAreCredentialHeaders: the headers intake never stores
// are the ones config refuses as key sources, so a key can never hold a
// credential that storage would have stripped.
func TestStrippedHeadersAreCredentialHeaders(t *testing.T) {
	t.Parallel()
	for _, h := range append(append([]string{}, alwaysStripped...), strippedPrefixes...) {
		if !config.IsCredentialHeader(h) {
			t.Errorf("%s is stripped at intake but allowed as a key source", h)
		}
	}
	if len(alwaysStripped) != len(config.CredentialHeaders) || len(strippedPrefixes) != len(config.CredentialHeaderPrefixes) {
		t.Errorf("intake strips %v %v; config refuses %v %v", alwaysStripped, strippedPrefixes, config.CredentialHeaders, config.CredentialHeaderPrefixes)
	}
}
