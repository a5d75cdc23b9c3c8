package jobs

import (
	"net/http"
	"testing"
	"time"

	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// TestSignKnownAnswer signs the example of the Standard Webhooks
// specification and gets its published signature.
func TestSignKnownAnswer(t *testing.T) {
	t.Parallel()
	key, err := whsig.DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := whsig.DecodeSecret("whsec_" + "c2Vjb25kLWtleQ==")
	h := http.Header{}
	newSigner([][]byte{key, other}).sign(h, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	want := map[string]string{
		"webhook-id":        "msg_p5jXN8AQM9LWM0D4loKWxJek",
		"webhook-timestamp": "1614265330",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	sig := h.Get("webhook-signature")
	if len(sig) < 48 || sig[:48] != "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= " {
		t.Errorf("webhook-signature = %q, want the spec's signature first, then one for the second key", sig)
	}
	h = http.Header{}
	newSigner(nil).sign(h, "id", time.Now(), nil)
	if len(h) != 0 {
		t.Errorf("an unsigned route got headers %v", h)
	}
}
