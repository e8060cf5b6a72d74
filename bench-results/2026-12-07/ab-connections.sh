#!/usr/bin/env bash
# Memory per idle Socket.IO connection before and after a change: one embedded
# instance per build, 2000 authenticated idle connections (`shoal-bench connections`),
# builds alternating, ROUNDS (2) times, before first.
#   BEFORE=/path/shoal AFTER=/path/shoal BENCH=/path/shoal-bench bench-results/2026-12-07/ab-connections.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:?OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
RUN="$(mktemp -d)"; PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null' EXIT
ulimit -n 20000 2>/dev/null || true
for round in $(seq 1 "${ROUNDS:-2}"); do
  for build in before after; do
    bin="$BEFORE"; [ "$build" = after ] && bin="$AFTER"
    rm -rf "$RUN/data"
    RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 \
      RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 REALTIME_MAX_SOCKETS_PER_USER=1000 REALTIME_MAX_SOCKETS_PER_IP=5000 \
      DATA_DIR="$RUN/data" PORT=5602 HOST=127.0.0.1 LOG_LEVEL=warn "$bin" >>"$RUN/shoal.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do curl -fs http://127.0.0.1:5602/health/ready >/dev/null && break; sleep 0.1; done
    node "$SHARED/bench/setup.js" --url http://127.0.0.1:5602 --users 50 --out "$RUN/state.json" >/dev/null
    "$BENCH" connections --url http://127.0.0.1:5602 --state "$RUN/state.json" -n 2000 --pid "$PID" \
      | sed "s/^{/{\"build\":\"$build\",\"round\":$round,/" | tee -a "$OUT/results.jsonl"
    kill -TERM "$PID"; wait "$PID" || true; PID=""
  done
done
