#!/usr/bin/env bash
# Sessions in the database as well as Redis: the hot path before and after, one
# distributed instance on PostgreSQL directly, the neutral kit's `me` and
# `create_task` scenarios, builds alternating, ROUNDS (2) times, before first.
#   BEFORE=/path/shoal AFTER=/path/shoal bench-results/2026-12-06/ab-sessions.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:?OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
RUN="$(mktemp -d)"; DB="shoal_ab_$$"
export SCENARIOS="me create_task" LOG_LEVEL=warn REDIS_KEY_PREFIX="ab$$" \
  RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 \
  SESSION_SECRET="$(head -c 48 /dev/urandom | base64)" SESSION_ENCRYPTION_KEY="$(head -c 48 /dev/urandom | base64)" \
  JWT_ACCESS_SECRET="$(head -c 48 /dev/urandom | base64)" JWT_REFRESH_SECRET="$(head -c 48 /dev/urandom | base64)"
PSQL=(psql -h 127.0.0.1 -U postgres -qXtA -d postgres)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  for b in before after; do "${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB}_$b WITH (FORCE)" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
# One database per build: the later build has a migration the earlier does not know.
for b in before after; do "${PSQL[@]}" -c "CREATE DATABASE ${DB}_$b"; done
for round in $(seq 1 "${ROUNDS:-2}"); do
  for build in before after; do
    bin="$BEFORE"; [ "$build" = after ] && bin="$AFTER"
    URL="postgres://postgres@127.0.0.1:5432/${DB}_$build"
    DATA_DIR="$RUN/data" PORT=5601 HOST=127.0.0.1 DATABASE_URL="$URL" REDIS_URL=redis://127.0.0.1:6379 \
      "$bin" serve >>"$RUN/shoal.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do curl -fs http://127.0.0.1:5601/health/ready >/dev/null && break; sleep 0.1; done
    # A fresh state per run: the logins are part of what is compared (timed).
    t0=$(date +%s%N)
    node "$SHARED/bench/setup.js" --url http://127.0.0.1:5601 --users 200 --out "$RUN/state.json" >/dev/null
    setup_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "{\"build\":\"$build\",\"round\":$round,\"scenario\":\"setup_200_users\",\"ms\":$setup_ms}" | tee -a "$OUT/results.jsonl"
    STATE="$RUN/state.json" scripts/bench-http.sh "$PID" http://127.0.0.1:5601 \
      | sed "s/^{/{\"build\":\"$build\",\"round\":$round,/" | tee -a "$OUT/results.jsonl"
    kill -TERM "$PID"; wait "$PID" || true; PID=""
  done
done
