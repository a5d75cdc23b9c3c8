#!/usr/bin/env bash
# run.sh serves outbox.example.yaml against a local Postgres (see devdb.sh),
# with the demo target on :9090, and prints a curl line to try. Ctrl-C stops
# both.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DATABASE_URL=$(scripts/devdb.sh)
export DATABASE_URL

# A per-checkout admin token, generated once, for /admin/ and /riverui/.
mkdir -p .dev
if [ -z "${OUTBOX_ADMIN_TOKEN:-}" ]; then
	[ -s .dev/admin-token ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > .dev/admin-token
	OUTBOX_ADMIN_TOKEN=$(cat .dev/admin-token)
fi
export OUTBOX_ADMIN_TOKEN
export GENESYS_TOKEN=${GENESYS_TOKEN:-dev-genesys-token}
# The demo sender token above is published; only make run may use it.
export OUTBOX_ALLOW_DEMO_TOKENS=1
listen=${OUTBOX_LISTEN:-:8080}
port=${listen##*:}

bin/outbox demo-target --listen 127.0.0.1:9090 --fail-rate "${DEMO_FAIL_RATE:-0.3}" --fail-status "${DEMO_FAIL_STATUS:-500}" &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT

cat <<MSG

  webhook-outbox is starting on $listen, delivering to the demo target on :9090
  (which fails ${DEMO_FAIL_RATE:-0.3} of requests with ${DEMO_FAIL_STATUS:-500}, so you will see retries).

  Send a webhook:

    curl -sS -X POST http://127.0.0.1:$port/webhooks/genesys \\
      -H 'Content-Type: application/json' -H 'X-Webhook-Token: $GENESYS_TOKEN' \\
      --data-binary @testdata/genesys/data-action.json

  Dead letters:  psql '$DATABASE_URL' -c 'select * from dead_letters'
  Admin token:   $OUTBOX_ADMIN_TOKEN

MSG

bin/outbox serve --config outbox.example.yaml --migrate --log-format text
