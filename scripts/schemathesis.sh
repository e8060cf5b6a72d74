#!/usr/bin/env bash
# Schemathesis (`--checks all`) against an embedded instance this script starts, with
# real ids: it signs up an owner and a member, makes a workspace, a task, a message,
# an invitation and an export job, and gives their ids and the owner's token to
# schemathesis, so authenticated operations reach the handlers, not only the 401.
# Fails when schemathesis finds anything (run by .ci/run).
#
#   scripts/schemathesis.sh [EXTRA SCHEMATHESIS ARGS…]
#
# Env: SHOAL_BIN (target/debug/shoal), SCHEMATHESIS (schemathesis on PATH),
# MAX_EXAMPLES (50), SEED (a fixed one, so that a run can be repeated).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${SHOAL_BIN:-$PWD/target/debug/shoal}"
ST="${SCHEMATHESIS:-schemathesis}"
RUN="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
B="http://127.0.0.1:$PORT"
ADMIN_TOKEN="schemathesis-admin-$$-$RANDOM"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT

# Embedded mode, budgets out of the way (the fuzzer sends thousands of requests from
# one address and one account; the budgets have tests of their own).
(cd "$RUN" && env HOST=127.0.0.1 PORT="$PORT" DATA_DIR="$RUN/data" LOG_LEVEL=warn \
  ADMIN_TOKEN="$ADMIN_TOKEN" RATE_LIMIT_AUTH_PER_MIN=1000000 \
  RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 \
  RATE_LIMIT_IP_PER_MIN=1000000 "$BIN" serve >"$RUN/shoal.log" 2>&1) &
PID=$!
for _ in $(seq 1 100); do curl -fs "$B/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$B/health/ready" >/dev/null || { cat "$RUN/shoal.log"; exit 1; }

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
post() { # post PATH JSON [TOKEN]
  curl -fsS -X POST "$B$1" -H 'content-type: application/json' -d "$2" \
    ${3:+-H "authorization: Bearer $3"}
}
for who in owner member; do
  post /api/auth/register "{\"email\":\"$who@example.com\",\"password\":\"correct horse battery\",\"display_name\":\"$who\"}" >/dev/null
done
TOKEN="$(post /api/auth/login '{"email":"owner@example.com","password":"correct horse battery"}' | json "['access_token']")"
MEMBER_LOGIN="$(post /api/auth/login '{"email":"member@example.com","password":"correct horse battery"}')"
MEMBER="$(echo "$MEMBER_LOGIN" | json "['user']['id']")"
MEMBER_TOKEN="$(echo "$MEMBER_LOGIN" | json "['access_token']")"
WID="$(post /api/workspaces '{"name":"fuzzed"}' "$TOKEN" | json "['id']")"
post "/api/workspaces/$WID/members" '{"email":"member@example.com"}' "$TOKEN" >/dev/null
TASK="$(post "/api/workspaces/$WID/tasks" '{"title":"a task"}' "$TOKEN" | json "['id']")"
post "/api/workspaces/$WID/messages" '{"body":"a message"}' "$TOKEN" >/dev/null
INVITATION="$(post "/api/workspaces/$WID/invitations" '{"email":"guest@example.com"}' "$TOKEN" | json "['id']")"
# An invitation to the owner, into a workspace of the member's: for accept / decline.
THEIRS="$(post /api/workspaces '{"name":"theirs"}' "$MEMBER_TOKEN" | json "['id']")"
INVITED="$(post "/api/workspaces/$THEIRS/invitations" '{"email":"owner@example.com"}' "$MEMBER_TOKEN" | json "['id']")"
JOB="$(post "/api/workspaces/$WID/exports" '{}' "$TOKEN" | json "['job_id']")"

cat >"$RUN/schemathesis.toml" <<EOF
headers = { Authorization = "Bearer $TOKEN" }

[generation]
max-examples = ${MAX_EXAMPLES:-50}

[parameters]
wid = "$WID"
uid = "$MEMBER"

[[operations]]
include-path-regex = "/tasks/\\\\{id\\\\}"
parameters = { id = "$TASK" }

[[operations]]
include-path-regex = "^/api/workspaces/.*/invitations/"
parameters = { id = "$INVITATION" }

[[operations]]
include-path-regex = "^/api/invitations/"
parameters = { id = "$INVITED" }

[[operations]]
include-path-regex = "^/api/jobs/"
parameters = { id = "$JOB" }

[[operations]]
include-path = "/api/admin/queue/stats"
parameters = { "X-Admin-Token" = "$ADMIN_TOKEN" }

# Logging out would end the login every other operation uses; its own tests are in
# tests/api.
[[operations]]
include-path = "/api/auth/logout"
enabled = false
EOF
cd "$RUN"
"$ST" --config-file "$RUN/schemathesis.toml" run "$B/api/openapi.json" --checks all \
  --seed "${SEED:-1}" "$@"
