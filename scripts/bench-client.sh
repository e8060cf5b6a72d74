#!/usr/bin/env bash
# The client library and the workspace page, measured (BENCHMARKS.md, "The client
# library and the page"): one embedded instance of the release build,
#   1. fan-out to RECEIVERS (200) receivers of one workspace at RATE (15) msg/s (one
#      publishing socket, under its budget of 20 events/s) for DURATION (20) seconds,
#      the receivers on the library or on bare socket.io-client, alternating, REPS (3)
#      times each: the receiving process's CPU per delivery and the delivery latency
#      (clients/js/bench/fanout.mjs);
#   2. the page's time from "Log in" to the workspace's latest message, in headless
#      Chromium, RUNS (20) fresh browser contexts (clients/js/bench/first-message.mjs).
#
#   scripts/bench-client.sh OUT_DIR
#
# Needs `npm ci && npm run build` in clients/js, `npm ci` in ../shared/bench, Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
BIN="${SHOAL_BIN:-$PWD/target/release/shoal}"
RECEIVERS="${RECEIVERS:-200}"; RATE="${RATE:-15}"; DURATION="${DURATION:-20}"; REPS="${REPS:-3}"
RUNS="${RUNS:-20}"
RUN="$(mktemp -d)"; PORT=5590; B="http://127.0.0.1:$PORT"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
(cd "$RUN" && env HOST=127.0.0.1 PORT="$PORT" DATA_DIR="$RUN/data" LOG_LEVEL=warn \
  JWT_ACCESS_TTL=86400 RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 \
  RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 "$BIN" serve >"$RUN/shoal.log" 2>&1) &
PID=$!
until curl -fs "$B/health/ready" >/dev/null 2>&1; do sleep 0.1; done
echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(git rev-parse --short HEAD)" | tee "$OUT/log.txt"
node "$SHARED/bench/setup.js" --url "$B" --users $((RECEIVERS + 1)) --out "$RUN/state.json" >/dev/null 2>>"$OUT/log.txt"
for rep in $(seq 1 "$REPS"); do
  for client in library bare; do
    node clients/js/bench/fanout.mjs --state "$RUN/state.json" --url "$B" --client "$client" \
      --clients "$RECEIVERS" --rate "$RATE" --duration "$DURATION" | tee -a "$OUT/fanout.jsonl"
  done
done
node clients/js/bench/first-message.mjs --url "$B" --runs "$RUNS" | tee "$OUT/first-message.json"
echo "results in $OUT"
