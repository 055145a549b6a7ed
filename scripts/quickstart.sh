#!/usr/bin/env bash
# One command: install what is missing, start the local SSO lab (OpenLDAP, the company IdP, the example
# backend) and rolegate in front of it, all on 127.0.0.1, then print the URLs and demo logins.
# Ctrl-C stops everything. State lives in var/quickstart/ (recreated at every start).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '\033[1m[quickstart]\033[0m %s\n' "$*"; }

scripts/setup.sh
WORK=$ROOT/var/quickstart
rm -rf "$WORK" && mkdir -p "$WORK"
PORT=${ROLEGATE_PORT:-$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
INTERNAL_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ROLEGATE_URL="http://127.0.0.1:$PORT"

LAB_PID=""
cleanup() {
  [ -n "$LAB_PID" ] && kill "$LAB_PID" 2>/dev/null && wait "$LAB_PID" 2>/dev/null
  return 0
}
trap cleanup EXIT INT TERM

say "starting the lab (slapd, IdP, backend) in $WORK/lab"
(cd deploy/lab && exec "$ROOT/.venv/bin/python" -m rolegate_lab start --workdir "$WORK/lab" --rolegate-url "$ROLEGATE_URL") &
LAB_PID=$!
for _ in $(seq 1 300); do
  [ -f "$WORK/lab/lab.env" ] && break
  kill -0 "$LAB_PID" 2>/dev/null || { say "the lab failed to start (see above); run scripts/setup.sh and retry"; exit 1; }
  sleep 0.1
done
[ -f "$WORK/lab/lab.env" ] || { say "the lab did not come up within 30 s; logs are in $WORK/lab"; exit 1; }

# shellcheck disable=SC1091
set -a; source "$WORK/lab/lab.env"; set +a
export ROLEGATE_LISTEN="127.0.0.1:$PORT" ROLEGATE_INTERNAL_LISTEN="127.0.0.1:$INTERNAL_PORT"
export ROLEGATE_PUBLIC_URL="$ROLEGATE_URL" ROLEGATE_DATA="$WORK/data"
export ROLEGATE_SESSION_SECRET=${ROLEGATE_SESSION_SECRET:-$(head -c 48 /dev/urandom | base64 | tr -d '\n')}
# Names used by config/examples/lab.yaml.
export LAB_IDP_URL="${ROLEGATE_OIDC_ISSUER:-}" LAB_CLIENT_SECRET="${ROLEGATE_OIDC_SECRET:-}"
mkdir -p "$ROLEGATE_DATA"

say "checking config/examples/lab.yaml"
.venv/bin/rolegate check -c config/examples/lab.yaml
say "rolegate:  $ROLEGATE_URL   (try $ROLEGATE_URL/workorders in a browser and sign in)"
say "internal:  http://127.0.0.1:$INTERNAL_PORT/readyz  /metrics"
say "demo logins are listed above (password 'demo'); Ctrl-C stops everything"
.venv/bin/rolegate serve -c config/examples/lab.yaml
