#!/usr/bin/env bash
# What presence costs when a whole workspace connects: two distributed instances, 1000
# sockets of 200 users join one workspace (shoal-bench fanout at 1 msg/s, 35 s) and leave;
# an observer socket counts the presence:update events it receives, and the Redis script
# calls (EVAL/EVALSHA) in 20 s while every socket is joined and idle are counted.
#
#   scripts/bench-presence.sh OUT_DIR
#
# Env: SHOAL_BIN / BENCH_BIN (else the release binaries are built). Needs node with
# `npm ci` done in ../shared/bench, PostgreSQL and Redis on their standard local ports.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
if [ -z "${SHOAL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet -p shoal -p shoal-bench
fi
BIN="${SHOAL_BIN:-$PWD/target/release/shoal}"; BENCH="${BENCH_BIN:-$PWD/target/release/shoal-bench}"
RUN="$(mktemp -d)"; cp "$BIN" "$RUN/shoal"; BIN="$RUN/shoal"
PSQL="psql -h 127.0.0.1 -U postgres -qX"; DB="shoal_presence_bench_$$"; PREFIX="prbench$$"
. scripts/lib/bench.sh
cleanup() {
  pkill -TERM -f "$RUN/shoal" 2>/dev/null || true
  while pgrep -f "$RUN/shoal" >/dev/null; do sleep 0.2; done
  $PSQL -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "*$PREFIX*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true
$PSQL -c "CREATE DATABASE $DB"
new_secrets
for port in 5401 5402; do
  env RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 \
    "${SECRETS[@]}" HOST=127.0.0.1 PORT="$port" LOG_LEVEL=warn INSTANCE_ID="shoal-$port" JWT_ACCESS_TTL=86400 \
    DATA_DIR="$RUN/data-$port" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
    REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX="$PREFIX" nohup "$BIN" serve >>"$RUN/shoal-$port.log" 2>&1 &
done
ready 5401; ready 5402
node "$SHARED/bench/setup.js" --url http://127.0.0.1:5401 --users 200 --out "$RUN/state.json" >/dev/null
calls() { redis-cli info commandstats | grep -E "^cmdstat_(evalsha|eval):" | sed 's/^[^=]*=\([0-9]*\),.*/\1/' | paste -sd+ | bc; }
node scripts/presence-observer.js "$RUN/state.json" http://127.0.0.1:5401 45 >"$OUT/observer.jsonl" &
OBSERVER=$!
sleep 2
( sleep 8; c0=$(calls); sleep 20; c1=$(calls)
  echo "redis_script_calls_in_20s_idle=$((c1 - c0))" >"$OUT/idle-scripts.txt" ) &
"$BENCH" fanout --state "$RUN/state.json" --url http://127.0.0.1:5401 --url http://127.0.0.1:5402 \
  --clients 1000 --publishers 1 --rate 1 --duration 35 --settle 0 >"$OUT/fanout.json" 2>"$OUT/fanout.log"
wait "$OBSERVER"
updates=$(grep -o '"presence:update":[0-9]*' "$OUT/observer.jsonl" | cut -d: -f3 | paste -sd+ | bc)
{ cat "$OUT/idle-scripts.txt"; echo "presence_updates_seen_by_one_observer=${updates:-0}"; } | tee "$OUT/summary.txt"
