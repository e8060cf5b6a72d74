#!/usr/bin/env bash
# Idle Socket.IO connections on ONE instance run as `shoal serve --workers W` (one
# port, W worker processes behind SO_REUSEPORT, each with its own open-files limit),
# opened by C `shoal-bench connections` processes at once (one process may hold at
# most 20,000 files here, client or server). Reports the RSS of the instance's whole
# process tree before and while all connections are held, and per connection.
#
#   scripts/bench-connections-workers.sh OUT_DIR
#
# Env: N (20000 connections in all), WORKERS (2), CLIENTS (2 bench processes).
# Needs: node (../shared/bench/setup.js), PostgreSQL and Redis on their standard local
# ports, ss. Builds the release binaries unless SHOAL_BIN/BENCH_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
N="${N:-20000}"; WORKERS="${WORKERS:-2}"; CLIENTS="${CLIENTS:-2}"
if [ -z "${SHOAL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet -p shoal -p shoal-bench
fi
BIN="${SHOAL_BIN:-$PWD/target/release/shoal}"; BENCH="${BENCH_BIN:-$PWD/target/release/shoal-bench}"
RUN="$(mktemp -d)"; cp "$BIN" "$RUN/shoal"; BIN="$RUN/shoal"
PSQL="psql -h 127.0.0.1 -U postgres -qX"; DB="shoal_conn_bench_$$"; PREFIX="connbench$$"; PORT=5401
. scripts/lib/bench.sh
cleanup() {
  pkill -TERM -f "$RUN/shoal" 2>/dev/null || true
  while pgrep -f "$RUN/shoal" >/dev/null; do sleep 0.2; done
  $PSQL -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$PREFIX:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
  redis-cli --scan --pattern "{$PREFIX:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT
tree_rss_kb() { # PID -> summed VmRSS of it and its descendants
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
established() { ss -Htn state established "( sport = :$PORT )" | wc -l; }

$PSQL -c "CREATE DATABASE $DB" >/dev/null
ulimit -n 20000 2>/dev/null || true
start() { # one instance with WORKERS worker processes
env RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 \
  SESSION_SECRET="$S1" SESSION_ENCRYPTION_KEY="$S2" \
  JWT_ACCESS_SECRET="$S3" JWT_REFRESH_SECRET="$S4" JWT_ACCESS_TTL=86400 \
  HOST=127.0.0.1 PORT=$PORT LOG_LEVEL=warn INSTANCE_ID=shoal-$PORT DATA_DIR="$RUN/data" \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" REDIS_URL=redis://127.0.0.1:6379 \
  REDIS_KEY_PREFIX="$PREFIX" nohup "$BIN" serve --workers "$WORKERS" >>"$RUN/shoal.log" 2>&1 &
SUPERVISOR=$!
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done
}
S1="$(secret)$(secret)"; S2="$(secret)$(secret)"; S3="$(secret)$(secret)"; S4="$(secret)$(secret)"
start
node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$PORT" --users 200 --out "$RUN/state.json" >/dev/null
# Measured on a fresh instance: the 200 password hashes of the setup leave the workers'
# allocator holding memory that the connections would then reuse.
kill -TERM "$SUPERVISOR"; wait "$SUPERVISOR" || true
start
sleep 2
before="$(tree_rss_kb "$SUPERVISOR")"
echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); $WORKERS workers: $(pgrep -P "$SUPERVISOR" | tr '\n' ' ')" | tee "$OUT/log.txt"
per=$((N / CLIENTS)); pids=()
for c in $(seq 1 "$CLIENTS"); do
  ips="127.0.$c.1,127.0.$c.2"
  "$BENCH" connections --state "$RUN/state.json" --url "http://127.0.0.1:$PORT" -n "$per" \
    --source-ips "$ips" --hold 60 --time-limit 240 >"$OUT/client-$c.json" 2>>"$OUT/log.txt" &
  pids+=($!)
done
# All open (or the clients gave up opening): then let the instance settle and read.
for _ in $(seq 1 1200); do
  [ "$(established)" -ge "$N" ] && break
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 1 ] || break
  sleep 0.2
done
sleep 5
held="$(established)"; with="$(tree_rss_kb "$SUPERVISOR")"
per_worker="$(for p in $(pgrep -P "$SUPERVISOR"); do echo -n "$(ls /proc/$p/fd | wc -l) "; done)"
for p in "${pids[@]}"; do wait "$p" || true; done
node -e '
  const [n, held, before, withKb, fds] = process.argv.slice(1);
  console.log(JSON.stringify({scenario: "connections-workers", workers: Number(process.env.WORKERS || 2),
    requested: Number(n), held: Number(held), rss_before_kb: Number(before), rss_with_kb: Number(withKb),
    rss_per_conn_kb: Math.round((withKb - before) / held * 100) / 100, open_files_per_worker: fds.trim()}));
' "$N" "$held" "$before" "$with" "$per_worker" | tee "$OUT/result.json"
