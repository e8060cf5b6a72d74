#!/usr/bin/env bash
# The realtime comparison of BENCHMARKS.md, end to end, on this machine:
#   fan-out: 1000 receivers (+ publishers) over 2 instances in one workspace room, for a
#   list of message rates, with Shoal (shoal-bench fanout) and the Node.js peer
#   (../shared/bench/fanout.js), the same method and settings;
#   idle connections: N authenticated Socket.IO connections to one freshly started
#   instance, RSS before and with them (shoal-bench connections / connections.js).
#
#   scripts/bench-realtime.sh OUT_DIR
#
# Env: RATES ("20 40 60 80 100"), CLIENTS (1000), REPS (1; runs per rate), FANOUT_TOOL
# (the fan-out client for both servers: "native" = shoal-bench for Shoal and the kit's
# fanout.js for the peer; "shoal-bench" or "fanout.js" = that one for both), N_SHOAL
# (19800: one process may hold 20,000 files here, see BENCHMARKS.md), N_PEER (10000),
# STEPS ("shoal-fanout shoal-connections peer-fanout peer-connections"), SHOAL_DB_QUERY
# (appended to Shoal's DATABASE_URL, e.g. "?options=-c%20synchronous_commit%3Doff"),
# FANOUT_VARIANTS ("default"; with shoal-bench, the fan-out runs of each rep in turn with
# each of these words: "default" or a flag of `shoal-bench fanout` without its dashes,
# e.g. "default delayed-acks"; the files of a variant other than default end -VARIANT).
# Needs: node with `npm ci` done in ../shared/bench and the peer, PostgreSQL and Redis
# on their standard local ports. Builds the release binaries unless SHOAL_BIN/BENCH_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
RATES="${RATES:-20 40 60 80 100}"; CLIENTS="${CLIENTS:-1000}"; REPS="${REPS:-1}"
N_SHOAL="${N_SHOAL:-19800}"; N_PEER="${N_PEER:-10000}"
STEPS="${STEPS:-shoal-fanout shoal-connections peer-fanout peer-connections}"
if [ -z "${SHOAL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet -p shoal -p shoal-bench
fi
BIN="${SHOAL_BIN:-$PWD/target/release/shoal}"; BENCH="${BENCH_BIN:-$PWD/target/release/shoal-bench}"
RUN="$(mktemp -d)"
cp "$BIN" "$RUN/shoal"; BIN="$RUN/shoal"
PSQL="psql -h 127.0.0.1 -U postgres -qX"
DB="shoal_rt_bench_$$"; PREFIX="rtbench$$"
LIMITS=(RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000)
. scripts/lib/bench.sh
new_secrets
PEER_ENV=(RUN_DIR="$RUN/peer" DATABASE_URL=postgres://postgres@127.0.0.1:5432/peer_rt_bench
          RATE_LIMIT_USER=1000000 RATE_LIMIT_IP=1000000 WORKERS=1)
stop_shoal() { pkill -TERM -f "$RUN/shoal" 2>/dev/null || true; while pgrep -f "$RUN/shoal" >/dev/null; do sleep 0.2; done; }
stop_peer() { (cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh stop >/dev/null 2>&1) || true; }
cleanup() {
  stop_shoal; stop_peer
  $PSQL -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS peer_rt_bench WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$PREFIX:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT
machine() { echo "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/log.txt"; }
start_shoal() { # PORT: one distributed instance; the access tokens must outlive the run
  ulimit -n 20000 2>/dev/null || true
  env "${LIMITS[@]}" "${SECRETS[@]}" HOST=127.0.0.1 PORT="$1" LOG_LEVEL=warn INSTANCE_ID="shoal-$1" \
    JWT_ACCESS_TTL=86400 DATA_DIR="$RUN/data-$1" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB${SHOAL_DB_QUERY:-}" \
    REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX="$PREFIX" \
    nohup "$BIN" serve >>"$RUN/shoal-$1.log" 2>&1 &
  echo $! >"$RUN/shoal-$1.pid"
}
publishers() { echo $(( ($1 + 19) / 20 )); } # Shoal allows 20 events/s per socket
shoal_ticks() { # CPU time (user + system, clock ticks) of the two instances so far
  local total=0 p
  for p in $(cat "$RUN/shoal-5401.pid" "$RUN/shoal-5402.pid" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
FANOUT_TOOL="${FANOUT_TOOL:-native}"
fanout() { # TOOL STATE OUT RATE URL URL [FLAG]: one fan-out run with the given client
  local tool="$1" state="$2" out="$3" rate="$4"; shift 4
  local args=(--state "$state" --url "$1" --url "$2" --clients "$CLIENTS"
              --publishers "$(publishers "$rate")" --rate "$rate" --duration 10)
  [ -n "${3:-}" ] && args+=("--$3")
  case "$tool" in
    shoal-bench) "$BENCH" fanout "${args[@]}" >"$out" 2>>"$OUT/log.txt" ;;
    fanout.js) node "$SHARED/bench/fanout.js" "${args[@]}" >"$out" 2>>"$OUT/log.txt" ;;
  esac
}
tool_for() { # SERVER -> the client to use
  case "$FANOUT_TOOL" in native) [ "$1" = shoal ] && echo shoal-bench || echo fanout.js ;; *) echo "$FANOUT_TOOL" ;; esac
}
in_steps() { [[ " $STEPS " == *" $1 "* ]]; }

$PSQL -c "CREATE DATABASE $DB"
if in_steps shoal-fanout || in_steps shoal-connections; then
  echo "== shoal: setup" | tee -a "$OUT/log.txt"; machine
  start_shoal 5401; start_shoal 5402; ready 5401; ready 5402
  node "$SHARED/bench/setup.js" --url http://127.0.0.1:5401 --users 200 --out "$RUN/shoal.json" >/dev/null
fi
if in_steps shoal-fanout; then
  tool="$(tool_for shoal)"
  variants="${FANOUT_VARIANTS:-default}"; [ "$tool" = shoal-bench ] || variants=default
  for rate in $RATES; do for rep in $(seq 1 "$REPS"); do for variant in $variants; do
    flag=""; sfx="$rep"
    [ "$variant" = default ] || { flag="$variant"; sfx="$rep-$variant"; }
    echo "== shoal fanout $CLIENTS x $rate msg/s with $tool $flag (rep $rep)" | tee -a "$OUT/log.txt"; machine
    ticks0="$(shoal_ticks)"
    fanout "$tool" "$RUN/shoal.json" "$OUT/shoal-fanout-$tool-$CLIENTS-r$rate-$sfx.json" "$rate" \
      http://127.0.0.1:5401 http://127.0.0.1:5402 "$flag"
    # The servers' CPU seconds for the whole run (connect, send, settle), both instances.
    echo "shoal_cpu_s=$(awk -v t="$(( $(shoal_ticks) - ticks0 ))" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')" \
      >"$OUT/shoal-cpu-r$rate-$sfx.txt"
    for port in 5401 5402; do # the servers' own view (cumulative over the runs)
      curl -fsS "http://127.0.0.1:$port/metrics" >"$OUT/shoal-metrics-$port-r$rate-$sfx.txt" || true
    done
  done; done; done
fi
if in_steps shoal-connections; then
  stop_shoal; start_shoal 5401; ready 5401   # a freshly started process
  echo "== shoal idle connections ($N_SHOAL)" | tee -a "$OUT/log.txt"; machine
  ulimit -n 20000 2>/dev/null || true
  "$BENCH" connections --state "$RUN/shoal.json" --url http://127.0.0.1:5401 -n "$N_SHOAL" \
    --source-ips 127.0.0.1,127.0.0.2 --pid "$(cat "$RUN/shoal-5401.pid")" \
    >"$OUT/shoal-connections-$N_SHOAL.json" 2>>"$OUT/log.txt"
fi
stop_shoal

if in_steps peer-fanout || in_steps peer-connections; then
  $PSQL -c "DROP DATABASE IF EXISTS peer_rt_bench" -c "CREATE DATABASE peer_rt_bench"
  echo "== peer: setup" | tee -a "$OUT/log.txt"; machine
  (cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh start 5411 5412 >>"$OUT/log.txt")
  node "$SHARED/bench/setup.js" --url http://127.0.0.1:5411 --users 200 --out "$RUN/peer.json" >/dev/null
fi
if in_steps peer-fanout; then
  for rate in $RATES; do for rep in $(seq 1 "$REPS"); do
    tool="$(tool_for peer)"
    echo "== peer fanout $CLIENTS x $rate msg/s with $tool (rep $rep)" | tee -a "$OUT/log.txt"; machine
    fanout "$tool" "$RUN/peer.json" "$OUT/peer-fanout-$tool-$CLIENTS-r$rate-$rep.json" "$rate" \
      http://127.0.0.1:5411 http://127.0.0.1:5412
  done; done
fi
if in_steps peer-connections; then
  stop_peer; (cd "$SHARED/peers/node-stack" && env "${PEER_ENV[@]}" scripts/instances.sh start 5411 >>"$OUT/log.txt")
  echo "== peer idle connections ($N_PEER)" | tee -a "$OUT/log.txt"; machine
  node "$SHARED/bench/connections.js" --state "$RUN/peer.json" --url http://127.0.0.1:5411 -n "$N_PEER" \
    --pid "$(cat "$RUN/peer/instance-5411.pid")" >"$OUT/peer-connections-$N_PEER.json" 2>>"$OUT/log.txt"
fi
machine
echo "results in $OUT"
