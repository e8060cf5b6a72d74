#!/usr/bin/env bash
# What a delivered realtime event costs the whole deployment as instances are added
# (BENCHMARKS.md, "Room channels"). Two scenarios, all processes on this machine:
#
#   spread: N instances (INSTANCES, "2 5 10 20"); one busy workspace, its CLIENTS
#     (1000) receivers on instances 1 and 2, RATE (100) msg/s for 10 s; a quiet
#     workspace with 2 sockets on every instance (1 msg/s). For each N and each Shoal
#     binary (BINS, alternating within each N): the CPU seconds of all instances and
#     of redis-server during the busy run, per delivered message, and the delivery p99.
#   small: N instances (INSTANCES), SMALL_WS (10) small teams of SMALL_CLIENTS (6)
#     receivers at SMALL_RATE (10) msg/s each for SMALL_SECONDS, team k on instances 2k+1 and 2k+2 (mod N):
#     the case where an event has few receivers, so decoding it on every instance is
#     most of its cost. CPU is counted over the run and also given net of what the N
#     instances and Redis spend idle over the same time (measured just before).
#   ten: 10 instances, 10 busy workspaces of WS_CLIENTS (100) receivers at WS_RATE (20)
#     msg/s, workspace k on instances k and k+1; each Shoal binary, then the Node.js peer
#     (../shared/peers/node-stack, Socket.IO Redis adapter) with the same clients
#     (the kit's fanout.js for both, so the client side is the same program).
#
#   scripts/bench-room-channels.sh OUT_DIR
#
# Env: BINS ("label=path …", default "room-channels=target/release/shoal"), BENCH_BIN,
# STEPS ("spread small ten"), INSTANCES, CLIENTS, RATE, SMALL_WS, SMALL_CLIENTS,
# SMALL_RATE, SMALL_SECONDS (40: long enough that connecting is a small part),
# WS_CLIENTS, WS_RATE, REPS (1), REDIS_CLUSTER (0; 1: the instances use a three-master
# Redis Cluster this script starts on ports 7301-7303, "redis" CPU is its three nodes',
# and the publishes its cluster bus carried are counted: CLUSTER INFO
# cluster_stats_messages_publish_sent + publishshard_sent).
# Needs node with `npm ci` done in ../shared/bench and the peer, PostgreSQL and Redis
# on their standard local ports (Redis: the server on 6379, whose CPU is counted).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
INSTANCES="${INSTANCES:-2 5 10 20}"; CLIENTS="${CLIENTS:-1000}"; RATE="${RATE:-100}"
WS_CLIENTS="${WS_CLIENTS:-100}"; WS_RATE="${WS_RATE:-20}"; REPS="${REPS:-1}"
STEPS="${STEPS:-spread small ten}"
SMALL_WS="${SMALL_WS:-10}"; SMALL_CLIENTS="${SMALL_CLIENTS:-6}"; SMALL_RATE="${SMALL_RATE:-10}"
SMALL_SECONDS="${SMALL_SECONDS:-40}"
BINS="${BINS:-room-channels=$PWD/target/release/shoal}"
BENCH="${BENCH_BIN:-$PWD/target/release/shoal-bench}"
RUN="$(mktemp -d)"
PSQL="psql -h 127.0.0.1 -U postgres -qX"
DB="shoal_rooms_bench_$$"; PEER_DB="peer_rooms_bench_$$"
LIMITS=(RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000
        RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000)
. scripts/lib/bench.sh
new_secrets
PEER_ENV=(RUN_DIR="$RUN/peer" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PEER_DB"
          RATE_LIMIT_USER=1000000 RATE_LIMIT_IP=1000000 WORKERS=1 DB_POOL_MAX=4 LOG_LEVEL=warn)
REDIS_PID="$(pgrep -f 'redis-server .*:6379' | head -1)"
REDIS_ENV=(REDIS_URL=redis://127.0.0.1:6379)
CLUSTER_PORTS=""
if [ "${REDIS_CLUSTER:-0}" = 1 ]; then
  CLUSTER_PORTS="7301 7302 7303"; mkdir -p "$RUN/cluster"
  for p in $CLUSTER_PORTS; do
    (cd "$RUN/cluster" && redis-server --port "$p" --cluster-port $((p + 100)) --bind 127.0.0.1 \
      --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --save '' --appendonly no \
      --daemonize yes --logfile "redis-$p.log" --pidfile "$RUN/cluster/$p.pid")
  done
  for p in $CLUSTER_PORTS; do until redis-cli -p "$p" ping >/dev/null 2>&1; do sleep 0.1; done; done
  # shellcheck disable=SC2046
  redis-cli --cluster create $(for p in $CLUSTER_PORTS; do echo "127.0.0.1:$p"; done) \
    --cluster-replicas 0 --cluster-yes >/dev/null
  for p in $CLUSTER_PORTS; do until redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done; done
  REDIS_ENV=(REDIS_CLUSTER_NODES="$(for p in $CLUSTER_PORTS; do printf 'redis://127.0.0.1:%s,' "$p"; done | sed 's/,$//')")
  REDIS_PID="$(cat "$RUN"/cluster/*.pid | tr '\n' ' ')"
fi
bus_publishes() { # publishes the cluster bus carried so far (0 without a cluster)
  local total=0 p
  for p in $CLUSTER_PORTS; do
    total=$((total + $(redis-cli -p "$p" cluster info | tr -d '\r' | awk -F: '/^cluster_stats_messages_publish(shard)?_sent:/ {n += $2} END {print n + 0}')))
  done
  echo "$total"
}
stop_shoal() { pkill -TERM -f "$RUN/shoal-" 2>/dev/null || true; while pgrep -f "$RUN/shoal-" >/dev/null; do sleep 0.2; done; }
stop_peer() { (cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh stop >/dev/null 2>&1) || true; }
cleanup() {
  stop_shoal; stop_peer; pkill -f "$RUN/" 2>/dev/null || true
  for f in "$RUN"/cluster/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  $PSQL -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $PEER_DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true
machine() { echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/log.txt"; }
ticks() { # clock ticks (user + system) of the given pids
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
secs() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'; }
port_of() { echo $((5500 + $1)); } # instance i (1-based)
urls() { local i; for i in "$@"; do printf -- '--url http://127.0.0.1:%s ' "$(port_of "$i")"; done; }

start_shoal() { # LABEL BIN N PREFIX: N distributed instances
  local label="$1" bin="$2" n="$3" prefix="$4" i port
  for i in $(seq 1 "$n"); do
    port="$(port_of "$i")"; cp "$bin" "$RUN/shoal-$label-$i"
    env "${LIMITS[@]}" "${SECRETS[@]}" HOST=127.0.0.1 PORT="$port" LOG_LEVEL=warn INSTANCE_ID="shoal-$port" \
      JWT_ACCESS_TTL=86400 DATA_DIR="$RUN/data-$port" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
      DB_POOL_MIN=1 DB_POOL_MAX=4 "${REDIS_ENV[@]}" REDIS_KEY_PREFIX="$prefix" \
      nohup "$RUN/shoal-$label-$i" serve >>"$RUN/shoal-$port.log" 2>&1 &
  done
  for i in $(seq 1 "$n"); do ready "$(port_of "$i")"; done
}
shoal_pids() { pgrep -f "$RUN/shoal-" | tr '\n' ' '; }
# The JSON array of the fan-out results in FILES.
json_array() { python3 -c 'import json, sys; print(json.dumps([json.load(open(f)) for f in sys.argv[1:]]))' "$@"; }

$PSQL -c "CREATE DATABASE $DB"
if [[ " $STEPS " == *" spread "* ]]; then
  for n in $INSTANCES; do for rep in $(seq 1 "$REPS"); do for entry in $BINS; do
    label="${entry%%=*}"; bin="${entry#*=}"
    echo "== spread: $label, $n instances (rep $rep)" | tee -a "$OUT/log.txt"; machine
    start_shoal "$label" "$bin" "$n" "rooms$$-$label-$n-$rep"
    node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$(port_of 1)" --users 200 --out "$RUN/busy.json" >/dev/null
    node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$(port_of 1)" --users 20 --out "$RUN/quiet.json" >/dev/null
    # The quiet workspace: 2 sockets on every instance, 1 message a second.
    # shellcheck disable=SC2046
    "$BENCH" fanout --state "$RUN/quiet.json" $(urls $(seq 1 "$n")) --clients $((2 * n)) \
      --publishers 1 --rate 1 --duration 120 --settle 0 >"$RUN/quiet-out.json" 2>>"$OUT/log.txt" &
    quiet=$!
    sleep 5
    pids="$(shoal_pids)"
    # shellcheck disable=SC2086
    t0="$(ticks $pids)"; r0="$(ticks $REDIS_PID)"
    # shellcheck disable=SC2046
    "$BENCH" fanout --state "$RUN/busy.json" $(urls 1 2) --clients "$CLIENTS" \
      --publishers $(( (RATE + 19) / 20 )) --rate "$RATE" --duration 10 \
      >"$OUT/spread-$label-n$n-$rep.json" 2>>"$OUT/log.txt"
    # shellcheck disable=SC2086
    t1="$(ticks $pids)"; r1="$(ticks $REDIS_PID)"
    kill "$quiet" 2>/dev/null || true; wait "$quiet" 2>/dev/null || true
    for i in 1 2 "$n"; do
      curl -fsS "http://127.0.0.1:$(port_of "$i")/metrics" | grep -E '^shoal_realtime_(events_decoded_total|channels) ' \
        | sed "s/^/instance $i: /" >>"$OUT/spread-$label-n$n-$rep-metrics.txt" || true
    done
    echo "{\"scenario\":\"spread\",\"binary\":\"$label\",\"instances\":$n,\"rep\":$rep,\"instances_cpu_s\":$(secs $((t1 - t0))),\"redis_cpu_s\":$(secs $((r1 - r0))),\"fanout\":$(cat "$OUT/spread-$label-n$n-$rep.json")}" \
      | tee -a "$OUT/summary.jsonl" >/dev/null
    stop_shoal
  done; done; done
fi

if [[ " $STEPS " == *" small "* ]]; then
  for n in $INSTANCES; do for rep in $(seq 1 "$REPS"); do for entry in $BINS; do
    label="${entry%%=*}"; bin="${entry#*=}"
    echo "== small teams: $label, $n instances (rep $rep)" | tee -a "$OUT/log.txt"; machine
    start_shoal "$label" "$bin" "$n" "rooms$$-$label-small-$n-$rep"
    for k in $(seq 0 $((SMALL_WS - 1))); do
      node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$(port_of 1)" --users "$SMALL_CLIENTS" --out "$RUN/small-$k.json" >/dev/null 2>&1
    done
    pids="$(shoal_pids)"
    # shellcheck disable=SC2086
    i0="$(ticks $pids)"; ir0="$(ticks $REDIS_PID)"; sleep 10
    # shellcheck disable=SC2086
    i1="$(ticks $pids)"; ir1="$(ticks $REDIS_PID)"
    # shellcheck disable=SC2086
    t0="$(ticks $pids)"; r0="$(ticks $REDIS_PID)"; b0="$(bus_publishes)"; start=$(date +%s.%N)
    jobs=()
    for k in $(seq 0 $((SMALL_WS - 1))); do
      a=$(( (2 * k) % n + 1 )); b=$(( (2 * k + 1) % n + 1 ))
      # shellcheck disable=SC2046
      "$BENCH" fanout --state "$RUN/small-$k.json" $(urls "$a" "$b") --clients "$SMALL_CLIENTS" \
        --publishers 1 --rate "$SMALL_RATE" --duration "$SMALL_SECONDS" --settle 2 \
        >"$OUT/small-$label-n$n-$rep-ws$k.json" 2>>"$OUT/log.txt" &
      jobs+=($!)
    done
    wait "${jobs[@]}" || true
    # shellcheck disable=SC2086
    t1="$(ticks $pids)"; r1="$(ticks $REDIS_PID)"; b1="$(bus_publishes)"; took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
    idle=$(awk -v a="$((i1 - i0 + ir1 - ir0))" -v took="$took" 'BEGIN {printf "%d", a * took / 10}')
    curl -fsS "http://127.0.0.1:$(port_of 1)/metrics" | grep -E '^shoal_(realtime|http_requests_total)' \
      >"$OUT/small-$label-n$n-$rep-metrics-1.txt" || true
    echo "{\"scenario\":\"small\",\"binary\":\"$label\",\"instances\":$n,\"rep\":$rep,\"run_s\":$took,\"instances_cpu_s\":$(secs $((t1 - t0))),\"redis_cpu_s\":$(secs $((r1 - r0))),\"idle_cpu_s_same_time\":$(secs "$idle"),\"bus_publishes\":$((b1 - b0)),\"fanouts\":$(json_array "$OUT"/small-"$label"-n"$n"-"$rep"-ws*.json)}" \
      | tee -a "$OUT/summary.jsonl" >/dev/null
    stop_shoal
  done; done; done
fi

ten_workspaces() { # LABEL PIDS-FN: 10 setups, then 10 fan-outs at once; CPU of what PIDS-FN lists
  local label="$1" pidsfn="$2" k a b
  for k in $(seq 0 9); do
    node "$SHARED/bench/setup.js" --url "http://127.0.0.1:$(port_of 1)" --users 50 --out "$RUN/ws-$k.json" >/dev/null
  done
  local pids; pids="$($pidsfn)"
  # shellcheck disable=SC2086
  local t0; t0="$(ticks $pids)"; local r0; r0="$(ticks $REDIS_PID)"
  local jobs=()
  for k in $(seq 0 9); do
    a=$((k + 1)); b=$(( (k + 1) % 10 + 1 ))
    # shellcheck disable=SC2046
    node "$SHARED/bench/fanout.js" --state "$RUN/ws-$k.json" $(urls "$a" "$b") --clients "$WS_CLIENTS" \
      --publishers 2 --rate "$WS_RATE" --duration 10 >"$OUT/ten-$label-ws$k.json" 2>>"$OUT/log.txt" &
    jobs+=($!)
  done
  wait "${jobs[@]}" || true
  # shellcheck disable=SC2086
  local t1; t1="$(ticks $pids)"; local r1; r1="$(ticks $REDIS_PID)"
  echo "{\"scenario\":\"ten\",\"server\":\"$label\",\"instances_cpu_s\":$(secs $((t1 - t0))),\"redis_cpu_s\":$(secs $((r1 - r0))),\"fanouts\":$(json_array "$OUT"/ten-"$label"-ws*.json)}" \
    | tee -a "$OUT/summary.jsonl" >/dev/null
}
peer_pids() { cat "$RUN"/peer/instance-*.pid 2>/dev/null | tr '\n' ' '; }
if [[ " $STEPS " == *" ten "* ]]; then
  for entry in $BINS; do
    label="${entry%%=*}"; bin="${entry#*=}"
    echo "== ten workspaces: $label" | tee -a "$OUT/log.txt"; machine
    start_shoal "$label" "$bin" 10 "rooms$$-$label-ten"
    ten_workspaces "shoal-$label" shoal_pids
    stop_shoal
  done
  echo "== ten workspaces: the Node.js peer" | tee -a "$OUT/log.txt"; machine
  $PSQL -c "CREATE DATABASE $PEER_DB"
  # shellcheck disable=SC2046
  (cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh start $(for i in $(seq 1 10); do port_of "$i"; done) >>"$OUT/log.txt")
  ten_workspaces peer peer_pids
  stop_peer
fi
machine
echo "results in $OUT"
