// Verifies webhook-outbox's signed deliveries (Standard Webhooks), as
// docs/receiving-deliveries.md shows. Node 18 or later, no dependencies.
// A test (cmd/outbox/receiving_test.go) runs it against deliveries that a
// real outbox signed. Copy verifyOutbox into your service.
'use strict';

const crypto = require('node:crypto');

const TOLERANCE_SECONDS = 5 * 60;

// verifyOutbox returns null when the delivery is signed with one of secrets
// (the "whsec_..." strings of target.signing_secret) within five minutes of
// now, else why it is not. headers are Node's (lower-case names); rawBody is
// the body exactly as received, a Buffer: verify before parsing it.
function verifyOutbox(headers, rawBody, secrets, nowSeconds = Date.now() / 1000) {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'] || '';
  if (!id || !ts) return 'missing webhook-id or webhook-timestamp';
  if (!/^\d+$/.test(ts)) return 'webhook-timestamp is not Unix seconds';
  if (Math.abs(nowSeconds - Number(ts)) > TOLERANCE_SECONDS) return 'webhook-timestamp is too far from now';
  for (const secret of [].concat(secrets)) {
    const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
    const want = crypto.createHmac('sha256', key).update(`${id}.${ts}.`).update(rawBody).digest();
    // One signature per signing secret, space-separated, while outbox
    // rotates them: any one that matches will do.
    for (const sig of sigs.split(' ')) {
      const got = Buffer.from(sig.slice(3), 'base64');
      if (sig.startsWith('v1,') && got.length === want.length && crypto.timingSafeEqual(got, want)) return null;
    }
  }
  return 'no webhook-signature matches';
}

module.exports = { verifyOutbox };

// Run directly, it checks one delivery given on stdin as JSON,
// {"headers": {...}, "body_base64": "...", "secrets": ["whsec_..."]}, and
// exits 0 when it verifies, 1 when it does not.
if (require.main === module) {
  let input = '';
  process.stdin.on('data', (chunk) => { input += chunk; });
  process.stdin.on('end', () => {
    const { headers, body_base64: body, secrets } = JSON.parse(input);
    const why = verifyOutbox(headers, Buffer.from(body, 'base64'), secrets);
    console.log(why === null ? 'valid' : `invalid: ${why}`);
    process.exit(why === null ? 0 : 1);
  });
}
