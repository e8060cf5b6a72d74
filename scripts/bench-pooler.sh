#!/usr/bin/env bash
# What a transaction pooler costs: one instance on PostgreSQL directly beside one
# instance through PgBouncer (transaction pooling, DATABASE_POOLER=transaction), the
# neutral kit's wrk scenarios, alternating, ROUNDS times (docs/scaling.md).
#
#   scripts/bench-pooler.sh OUT_DIR
#
# Needs: pgbouncer, wrk, node (`npm ci` done in ../shared/bench), PostgreSQL and Redis
# on their standard local ports. SHOAL_BIN (default: builds target/release/shoal),
# ROUNDS (2), SCENARIOS ("me create_task"), BOUNCER_PORT (6434).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
BIN="${SHOAL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --locked -p shoal --quiet; BIN="$PWD/target/release/shoal"; fi
ROUNDS="${ROUNDS:-2}"
export SCENARIOS="${SCENARIOS:-me create_task}"
BOUNCER_PORT="${BOUNCER_PORT:-6434}"
RUN="$(mktemp -d /tmp/shoal-pooler.XXXXXX)"
DB="shoal_pooler_$$"
PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -qXtA -d postgres)
export LOG_LEVEL=warn REDIS_KEY_PREFIX="pooler$$" \
  RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 \
  SESSION_SECRET="$(head -c 48 /dev/urandom | base64)" SESSION_ENCRYPTION_KEY="$(head -c 48 /dev/urandom | base64)" \
  JWT_ACCESS_SECRET="$(head -c 48 /dev/urandom | base64)" JWT_REFRESH_SECRET="$(head -c 48 /dev/urandom | base64)"
# shellcheck source=scripts/lib/pgbouncer.sh
. scripts/lib/pgbouncer.sh
PID=""
stop() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=""; }
cleanup() {
  stop || true
  pgbouncer_stop "$RUN/bouncer"
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "pooler$$:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT

pgbouncer_start "$RUN/bouncer" "$BOUNCER_PORT" 20 200
"${PSQL[@]}" -c "CREATE DATABASE $DB"
DIRECT="postgres://postgres@127.0.0.1:5432/$DB"
POOLED="postgres://postgres@127.0.0.1:$BOUNCER_PORT/$DB"
DATABASE_URL="$DIRECT" "$BIN" migrate >/dev/null 2>&1

start() { # start PORT DATABASE_URL POOLER
  DATA_DIR="$RUN/data" PORT="$1" HOST=127.0.0.1 DATABASE_URL="$2" DATABASE_POOLER="$3" \
    REDIS_URL=redis://127.0.0.1:6379 "$BIN" serve >>"$RUN/shoal.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "instance did not become ready" >&2; exit 1
}
machine() { echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"; }

for round in $(seq 1 "$ROUNDS"); do
  for setup in direct pgbouncer; do
    if [ "$setup" = direct ]; then start 5501 "$DIRECT" none; else start 5501 "$POOLED" transaction; fi
    [ -f "$RUN/state.json" ] || node "$SHARED/bench/setup.js" --url http://127.0.0.1:5501 --users 200 --out "$RUN/state.json" >/dev/null
    echo "== $setup, round $round: $(machine)" | tee -a "$OUT/log.txt"
    STATE="$RUN/state.json" scripts/bench-http.sh "$PID" http://127.0.0.1:5501 \
      | sed "s/^{/{\"setup\":\"$setup\",\"round\":$round,/" | tee -a "$OUT/results.jsonl"
    stop
  done
done
echo "results in $OUT/results.jsonl"
