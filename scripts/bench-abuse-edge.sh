#!/usr/bin/env bash
# The request floods of `scripts/bench-abuse.sh` (handshakes, logins) through the
# shipped nginx with its default per-address limits (deploy/nginx/shoal.conf.template,
# "Limits at the edge"): the attacker connects from 127.0.0.2, the victim from
# 127.0.0.1, both through nginx to one instance; quiet first, the reference
# (BENCHMARKS.md, "Abuse").
#
#   scripts/bench-abuse-edge.sh OUT_DIR [scenario …]
#
# Env: SHOAL_BIN / BENCH_BIN (else the release binaries are built), SECONDS_EACH (30).
# Needs nginx, and node with `npm ci` done in ../shared/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR [scenario …]}"; shift; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SCENARIOS=("$@"); [ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(quiet handshakes logins)
SHARED="$(cd ../shared && pwd)"
if [ -z "${SHOAL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet -p shoal -p shoal-bench
fi
export SHOAL_BIN="${SHOAL_BIN:-$PWD/target/release/shoal}"
BENCH="${BENCH_BIN:-$PWD/target/release/shoal-bench}"
RUN="$(mktemp -d)"; PSQL="psql -h 127.0.0.1 -U postgres -qX"; DB="shoal_abuse_edge_$$"
export RUN_DIR="$RUN/cluster" PORTS=5461 NGINX_PORT=5460 OPERATOR_PORT=5462 LOG_LEVEL=warn \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" RATE_LIMIT_USER_PER_MIN=6000 JWT_ACCESS_TTL=86400
cleanup() {
  scripts/local-cluster.sh down >/dev/null 2>&1 || true
  $PSQL -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true
$PSQL -c "CREATE DATABASE $DB"
for scenario in "${SCENARIOS[@]}"; do
  REDIS_KEY_PREFIX="abuse-edge$$-$scenario" scripts/local-cluster.sh up 1 >>"$RUN/log.txt"
  node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$NGINX_PORT" --users 2 --out "$RUN/state-$scenario.json" >/dev/null
  "$BENCH" abuse "$scenario" --url "http://127.0.0.1:$NGINX_PORT" --attacker-ip 127.0.0.2 \
    --state "$RUN/state-$scenario.json" --pid "$(cat "$RUN_DIR/instance-5461.pid")" \
    --seconds "${SECONDS_EACH:-30}" | sed 's/^{/{"via":"nginx",/' | tee -a "$OUT/abuse-edge.jsonl"
  scripts/local-cluster.sh down >>"$RUN/log.txt" 2>&1
done
