#!/usr/bin/env bash
# Throughput and p99 through nginx (deploy/nginx, rendered by local-cluster.sh) with 1,
# 2 and 3 Shoal instances, one instance without nginx (the proxy hop's cost), and the
# Node.js peer (../shared/peers/node-stack) with 1 and 3 instances behind the same
# nginx config — all through the neutral kit (../shared/bench, via scripts/bench-http.sh,
# which adds CPU time; the nginx processes are counted with the servers).
#
#   scripts/bench-nginx.sh OUT_DIR
#
# Needs: nginx, wrk, node (`npm ci` done in ../shared/bench and the peer), PostgreSQL
# and Redis on their standard local ports. Builds target/release/shoal unless SHOAL_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every client of this script comes from this one address: nginx's per-address limits
# (deploy/nginx/shoal.conf.template) would refuse most of them.
export EDGE_HANDSHAKE_RATE="${EDGE_HANDSHAKE_RATE:-1000000r/s}" EDGE_AUTH_RATE="${EDGE_AUTH_RATE:-1000000r/s}"
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
BIN="${SHOAL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --locked --quiet; BIN="$PWD/target/release/shoal"; fi
RUN="$(mktemp -d)"
NGINX_PORT="${NGINX_PORT:-5280}"
PSQL="psql -h 127.0.0.1 -U postgres -qX"
DB="shoal_nginx_bench_$$"
export SHOAL_BIN="$BIN" NGINX_PORT LOG_LEVEL=warn \
  RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" REDIS_KEY_PREFIX="nbench$$"
cluster() { RUN_DIR="$RUN/cluster" scripts/local-cluster.sh "$@"; }
cleanup() {
  cluster down >/dev/null 2>&1 || true
  [ -f "$RUN/peer-nginx/nginx.pid" ] && kill -QUIT "$(cat "$RUN/peer-nginx/nginx.pid")" 2>/dev/null || true
  (cd "$SHARED/peers/node-stack" && RUN_DIR="$RUN/peer" scripts/instances.sh stop >/dev/null 2>&1) || true
}
trap cleanup EXIT
machine() { echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(nginx -v 2>&1)"; }
pids() { cat "$RUN"/cluster/instance-*.pid | tr '\n' ' '; cat "$RUN/cluster/nginx/nginx.pid"; }

$PSQL -c "CREATE DATABASE $DB"
for n in 1 2 3; do
  echo "== shoal x$n behind nginx" | tee -a "$OUT/log.txt"; machine | tee -a "$OUT/log.txt"
  PORTS="$(seq -s ' ' 5201 $((5200 + n)))" cluster up "$n" >>"$OUT/log.txt"
  [ -f "$RUN/shoal.json" ] || node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$NGINX_PORT" --users 200 --out "$RUN/shoal.json" >/dev/null
  STATE="$RUN/shoal.json" scripts/bench-http.sh "$(pids)" "http://127.0.0.1:$NGINX_PORT" | tee "$OUT/shoal-nginx-$n.jsonl"
  if [ "$n" = 1 ]; then
    echo "== shoal x1 direct (no nginx)" | tee -a "$OUT/log.txt"
    STATE="$RUN/shoal.json" scripts/bench-http.sh "$(cat "$RUN"/cluster/instance-5201.pid)" http://127.0.0.1:5201 | tee "$OUT/shoal-direct-1.jsonl"
  fi
  cluster down >>"$OUT/log.txt"
done
$PSQL -c "DROP DATABASE $DB WITH (FORCE)"
redis-cli --scan --pattern "nbench$$:*" | xargs -r redis-cli del >/dev/null

# The Node.js peer behind the same template (rendered by `local-cluster.sh check`).
$PSQL -c "DROP DATABASE IF EXISTS peer_bench" -c "CREATE DATABASE peer_bench"
PEER_ENV=(RUN_DIR="$RUN/peer" DATABASE_URL=postgres://postgres@127.0.0.1:5432/peer_bench RATE_LIMIT_USER=1000000 RATE_LIMIT_IP=1000000 WORKERS=1)
for n in 1 3; do
  echo "== node peer x$n behind nginx" | tee -a "$OUT/log.txt"; machine | tee -a "$OUT/log.txt"
  ports="$(seq -s ' ' 5301 $((5300 + n)))"
  # shellcheck disable=SC2086
  (cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh start $ports >>"$OUT/log.txt")
  RUN_DIR="$RUN/peer-cfg" PORTS="$ports" scripts/local-cluster.sh check >>"$OUT/log.txt"
  nginx -p "$RUN/peer-cfg/nginx/" -c nginx.conf -g 'daemon off;' >>"$OUT/log.txt" 2>&1 &
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$NGINX_PORT/nginx/health" >/dev/null && break; sleep 0.1; done
  [ -f "$RUN/peer.json" ] || node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$NGINX_PORT" --users 200 --out "$RUN/peer.json" >/dev/null
  STATE="$RUN/peer.json" scripts/bench-http.sh "$(cat "$RUN"/peer/instance-*.pid | tr '\n' ' ') $(cat "$RUN/peer-cfg/nginx/nginx.pid")" \
    "http://127.0.0.1:$NGINX_PORT" | tee "$OUT/peer-nginx-$n.jsonl"
  kill -QUIT "$(cat "$RUN/peer-cfg/nginx/nginx.pid")"; wait
  (cd "$SHARED/peers/node-stack" && RUN_DIR="$RUN/peer" scripts/instances.sh stop >>"$OUT/log.txt")
done
$PSQL -c "DROP DATABASE peer_bench WITH (FORCE)"
echo "results in $OUT"
