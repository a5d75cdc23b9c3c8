package jobs

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// Standard Webhooks headers on a signed delivery.
const (
	HeaderWebhookID        = "Webhook-Id"
	HeaderWebhookTimestamp = "Webhook-Timestamp"
	HeaderWebhookSignature = "Webhook-Signature"
)

// signer signs deliveries with the Standard Webhooks scheme, so the target
// can check that a request came from outbox and was not altered or
// replayed long after. A nil signer signs nothing.
type signer struct {
	keys [][]byte
}

func newSigner(keys [][]byte) *signer {
	if len(keys) == 0 {
		return nil
	}
	return &signer{keys: keys}
}

// sign sets webhook-id to the event key (stable across retries and
// replays, like X-Outbox-Key), webhook-timestamp to now in Unix seconds,
// and webhook-signature to "v1,<base64 HMAC-SHA256 of id.timestamp.body>",
// one space-separated signature per key while a key is rotated.
func (s *signer) sign(h http.Header, id string, now time.Time, body []byte) {
	if s == nil {
		return
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	sigs := make([]string, len(s.keys))
	for i, key := range s.keys {
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(whsig.Sign(key, id, ts, body))
	}
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, ts)
	h.Set(HeaderWebhookSignature, strings.Join(sigs, " "))
}
