#!/usr/bin/env bash
# One account attacks one instance; what it costs another user and the server
# (BENCHMARKS.md, "Abuse"). For each scenario of `shoal-bench abuse` (quiet first, the
# reference), a fresh distributed instance (the local PostgreSQL and Redis, a Redis
# key prefix of its own so that no budget carries over) runs with the default limits,
# except RATE_LIMIT_USER_PER_MIN=6000 so that the victim can measure at 15 requests a
# second (the attacker gets that larger budget too); the attack and the victim's
# measurement last SECONDS (30).
#
#   scripts/bench-abuse.sh OUT_DIR [scenario …]
#
# Env: SHOAL_BIN / BENCH_BIN (else the release binaries are built), SECONDS_EACH.
# Needs node with `npm ci` done in ../shared/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR [scenario …]}"; shift; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SCENARIOS=("$@"); [ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(quiet sockets handshakes replay flood logins exports)
SHARED="$(cd ../shared && pwd)"
if [ -z "${SHOAL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet -p shoal -p shoal-bench
fi
BIN="${SHOAL_BIN:-$PWD/target/release/shoal}"; BENCH="${BENCH_BIN:-$PWD/target/release/shoal-bench}"
RUN="$(mktemp -d)"; cp "$BIN" "$RUN/shoal"; BIN="$RUN/shoal"
PSQL="psql -h 127.0.0.1 -U postgres -qX"; DB="shoal_abuse_bench_$$"; PORT=5451
. scripts/lib/bench.sh
stop_instance() {
  pkill -TERM -f "$RUN/shoal" 2>/dev/null || true
  while pgrep -f "$RUN/shoal" >/dev/null; do sleep 0.2; done
}
cleanup() {
  stop_instance
  $PSQL -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "abuse$$*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true
$PSQL -c "CREATE DATABASE $DB"
new_secrets
for scenario in "${SCENARIOS[@]}"; do
  env "${SECRETS[@]}" RATE_LIMIT_USER_PER_MIN=6000 HOST=127.0.0.1 PORT=$PORT LOG_LEVEL=warn \
    JWT_ACCESS_TTL=86400 DATA_DIR="$RUN/data" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
    REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX="abuse$$-$scenario" \
    nohup "$BIN" serve >>"$RUN/shoal.log" 2>&1 &
  ready $PORT
  node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$PORT" --users 2 --out "$RUN/state-$scenario.json" >/dev/null
  "$BENCH" abuse "$scenario" --url "http://127.0.0.1:$PORT" --state "$RUN/state-$scenario.json" \
    --pid "$(pgrep -f "$RUN/shoal" | head -1)" --seconds "${SECONDS_EACH:-30}" | tee -a "$OUT/abuse.jsonl"
  stop_instance
done
