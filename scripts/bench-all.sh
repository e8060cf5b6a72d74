#!/usr/bin/env bash
# The whole HTTP comparison of BENCHMARKS.md, end to end, on this machine:
#   Shoal embedded (1 process, SQLite), Shoal distributed with 1 and 3 instances
#   (PostgreSQL + Redis), and the Node.js peer (../shared/peers/node-stack) with
#   1 instance x 2 workers and 3 instances x 1 worker, all through the neutral kit
#   (../shared/bench: setup.js + http.sh, wrapped by scripts/bench-http.sh for CPU time).
#
#   scripts/bench-all.sh OUT_DIR
#
# Needs: wrk, node, `npm ci` done in ../shared/bench and ../shared/peers/node-stack,
# PostgreSQL and Redis on their standard local ports. Builds target/release/shoal
# unless SHOAL_BIN names a binary. PEER=0 leaves the peer out (for alternating runs of
# two Shoal builds: SHOAL_BIN=A PEER=0 …, SHOAL_BIN=B PEER=0 …, and again).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
BIN="${SHOAL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --quiet; BIN="$PWD/target/release/shoal"; fi
RUN="$(mktemp -d)"
# Run a copy from $RUN, so that its command line identifies the processes of this run.
cp "$BIN" "$RUN/shoal"; BIN="$RUN/shoal"
trap 'pkill -TERM -f "$RUN/shoal" 2>/dev/null || true; (cd "$SHARED/peers/node-stack" && RUN_DIR=$RUN/peer scripts/instances.sh stop >/dev/null 2>&1) || true' EXIT
LIMITS=(RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000)
PSQL="psql -h 127.0.0.1 -U postgres -qX"
. scripts/lib/bench.sh
new_secrets
pid_of_port() { for p in $(pgrep -f "$RUN/shoal" || true); do tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "PORT=$1" && echo "$p"; done; }
start_shoal() { # PORT ENV...
  local port="$1"; shift
  env "${LIMITS[@]}" HOST=127.0.0.1 PORT="$port" LOG_LEVEL=warn DATA_DIR="$RUN/data-$port" "$@" \
    nohup "$BIN" serve >"$RUN/shoal-$port.log" 2>&1 &
}
stop_all() { pkill -TERM -f "$RUN/shoal" 2>/dev/null || true; while pgrep -f "$RUN/shoal" >/dev/null; do sleep 0.2; done; }
machine() { echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "== shoal embedded" | tee "$OUT/log.txt"; machine | tee -a "$OUT/log.txt"
start_shoal 5001; ready 5001
node "$SHARED/bench/setup.js" --url http://127.0.0.1:5001 --users 200 --out "$RUN/emb.json" >/dev/null
STATE="$RUN/emb.json" scripts/bench-http.sh "$(pid_of_port 5001)" http://127.0.0.1:5001 >"$OUT/shoal-embedded.jsonl"
stop_all

echo "== shoal distributed" | tee -a "$OUT/log.txt"; machine | tee -a "$OUT/log.txt"
DB="shoal_bench_$$"; $PSQL -c "CREATE DATABASE $DB"
DIST=(DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX="bench$$" "${SECRETS[@]}")
for p in 5001 5002 5003; do start_shoal "$p" "${DIST[@]}" INSTANCE_ID="shoal-$p"; done
for p in 5001 5002 5003; do ready "$p"; done
node "$SHARED/bench/setup.js" --url http://127.0.0.1:5001 --users 200 --out "$RUN/dist.json" >/dev/null
STATE="$RUN/dist.json" scripts/bench-http.sh "$(pid_of_port 5001)" http://127.0.0.1:5001 >"$OUT/shoal-distributed-1.jsonl"
STATE="$RUN/dist.json" scripts/bench-http.sh "$(pid_of_port 5001) $(pid_of_port 5002) $(pid_of_port 5003)" \
  http://127.0.0.1:5001 http://127.0.0.1:5002 http://127.0.0.1:5003 >"$OUT/shoal-distributed-3.jsonl"
stop_all; $PSQL -c "DROP DATABASE $DB WITH (FORCE)"; redis-cli --scan --pattern "bench$$:*" | xargs -r redis-cli del >/dev/null

if [ "${PEER:-1}" = 0 ]; then machine | tee -a "$OUT/log.txt"; echo "results in $OUT"; exit 0; fi
echo "== node peer" | tee -a "$OUT/log.txt"; machine | tee -a "$OUT/log.txt"
$PSQL -c "DROP DATABASE IF EXISTS peer_bench" -c "CREATE DATABASE peer_bench"
PEER_ENV=(RUN_DIR="$RUN/peer" DATABASE_URL=postgres://postgres@127.0.0.1:5432/peer_bench RATE_LIMIT_USER=1000000 RATE_LIMIT_IP=1000000)
(cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" WORKERS=2 scripts/instances.sh start 5101 >/dev/null)
node "$SHARED/bench/setup.js" --url http://127.0.0.1:5101 --users 200 --out "$RUN/peer.json" >/dev/null
STATE="$RUN/peer.json" scripts/bench-http.sh "$(cat "$RUN/peer/instance-5101.pid")" http://127.0.0.1:5101 >"$OUT/peer-1x2.jsonl"
(cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh stop >/dev/null)
(cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" WORKERS=1 scripts/instances.sh start 5101 5102 5103 >/dev/null)
STATE="$RUN/peer.json" scripts/bench-http.sh "$(cat "$RUN"/peer/instance-510?.pid | tr '\n' ' ')" \
  http://127.0.0.1:5101 http://127.0.0.1:5102 http://127.0.0.1:5103 >"$OUT/peer-3x1.jsonl"
(cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh stop >/dev/null)
$PSQL -c "DROP DATABASE peer_bench WITH (FORCE)"
machine | tee -a "$OUT/log.txt"
echo "results in $OUT"
