#!/usr/bin/env bash
# One distributed Shoal instance on one Redis and then on a 3-master Redis Cluster
# (REDIS_CLUSTER_NODES), back to back in one run, through the neutral kit's scenarios
# (scripts/bench-http.sh: wrk, CPU time of the server and of every Redis process).
#
#   scripts/bench-redis-cluster.sh OUT_DIR
#
# Needs: wrk, node, `npm ci` done in ../shared/bench, PostgreSQL and Redis on their
# standard local ports, redis-server and redis-cli. Starts (and stops) its own cluster
# on ports 7101-7103 (bus ports 17101-17103). Builds target/release/shoal.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
BIN="${SHOAL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --quiet; BIN="$PWD/target/release/shoal"; fi
RUN="$(mktemp -d)"
cp "$BIN" "$RUN/shoal"; BIN="$RUN/shoal"
PORTS=(7101 7102 7103)
cleanup() {
  pkill -TERM -f "$RUN/shoal" 2>/dev/null || true
  for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
LIMITS=(RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000)
PSQL="psql -h 127.0.0.1 -U postgres -qX"
. scripts/lib/bench.sh
new_secrets
machine() { echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"; }
run_one() { # NAME REDIS_PIDS ENV...
  local name="$1" redis_pids="$2"; shift 2
  local db="shoal_bench_cluster_$$"
  $PSQL -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  env "${LIMITS[@]}" "${SECRETS[@]}" HOST=127.0.0.1 PORT=5001 LOG_LEVEL=warn DATA_DIR="$RUN/data" \
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" REDIS_KEY_PREFIX="bench$$" "$@" \
    nohup "$BIN" serve >"$RUN/shoal-$name.log" 2>&1 &
  local pid=$!
  ready 5001
  node "$SHARED/bench/setup.js" --url http://127.0.0.1:5001 --users 200 --out "$RUN/$name.json" >/dev/null
  echo "== $name" | tee -a "$OUT/log.txt"; machine | tee -a "$OUT/log.txt"
  STATE="$RUN/$name.json" REDIS_PID="$redis_pids" scripts/bench-http.sh "$pid" http://127.0.0.1:5001 \
    >"$OUT/$name.jsonl"
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  $PSQL -c "DROP DATABASE $db WITH (FORCE)"
}

run_one shoal-redis "$(pgrep -f 'redis-server .*:6379' | head -n1)" REDIS_URL=redis://127.0.0.1:6379
redis-cli --scan --pattern "bench$$:*" | xargs -r redis-cli del >/dev/null
redis-cli --scan --pattern "{bench$$:*" | xargs -r redis-cli del >/dev/null

for p in "${PORTS[@]}"; do
  mkdir -p "$RUN/redis-$p"
  (cd "$RUN/redis-$p" && redis-server --port "$p" --cluster-port $((p + 10000)) --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file nodes.conf --save '' --appendonly no \
    --daemonize yes --logfile redis.log)
done
for p in "${PORTS[@]}"; do until redis-cli -p "$p" ping >/dev/null 2>&1; do sleep 0.1; done; done
redis-cli --cluster create 127.0.0.1:7101 127.0.0.1:7102 127.0.0.1:7103 --cluster-replicas 0 \
  --cluster-yes >/dev/null
for p in "${PORTS[@]}"; do
  until redis-cli -p "$p" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
CLUSTER_PIDS="$(for p in "${PORTS[@]}"; do pgrep -f "redis-server 127.0.0.1:$p"; done | tr '\n' ' ')"
run_one shoal-redis-cluster "$CLUSTER_PIDS" \
  REDIS_CLUSTER_NODES=redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103
machine | tee -a "$OUT/log.txt"
echo "results in $OUT"
