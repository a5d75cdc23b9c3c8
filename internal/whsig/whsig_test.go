package whsig

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/require"
)

// The example from the Standard Webhooks specification.
func TestSignSpecExample(t *testing.T) {
	t.Parallel()
	key, err := DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	sig := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	require.Equal(t, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", base64.StdEncoding.EncodeToString(sig))
}

func TestDecodeSecret(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "whsec_", "whsec_not base64!"} {
		_, err := DecodeSecret(s)
		require.Error(t, err, "%q", s)
	}
	b, err := DecodeSecret("c2VjcmV0")
	require.NoError(t, err)
	require.Equal(t, "secret", string(b))
}
