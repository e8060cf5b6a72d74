#!/usr/bin/env bash
# Redis faults under mixed load, for Shoal and for the Node.js peer
# (../shared/peers/node-stack), side by side: docs/operations.md, "When Redis is down".
#
#   scripts/fault-redis.sh OUT_DIR
#
# The script owns its Redis: a master, a replica and three Sentinels on their own ports
# (nothing touches the shared Redis on 6379). For each target it starts INSTANCES
# instances behind nginx (scripts/local-cluster.sh renders deploy/nginx for both) and
# runs scripts/lib/fault-load.js (HTTP at HTTP_RATE req/s through nginx, chat at
# CHAT_RATE msg/s per instance with receivers on every instance, readiness polled)
# through four phases:
#   before    BEFORE s of normal service;
#   outage    master and replica SIGKILLed: Redis is gone for OUTAGE s;
#   after     both started again, empty (no persistence), for AFTER s;
#   failover  the master SIGKILLed again; the Sentinels promote the replica; FAILOVER s.
# Then the chat drains and fault-load prints one JSON document per target, and the
# script a table (OUT_DIR/summary.md). Shoal follows the Sentinels (REDIS_SENTINELS);
# the peer's Redis client (node-redis 4, as its guides use it) takes one fixed URL, so
# it stays on the killed master.
#
# Environment: TARGETS ("shoal peer"), INSTANCES (3), BEFORE (30), OUTAGE (60),
# AFTER (30), FAILOVER (30), HTTP_RATE (100), CHAT_RATE (5, per instance), SHOAL_BIN
# (default: builds target/release/shoal), REDIS_BASE_PORT (6481: master, +1 replica,
# sentinels on 26481..26483), NGINX_PORT (5380).
# Needs: redis-server (also run as a Sentinel), nginx, node, `npm ci` done in ../shared/bench and
# ../shared/peers/node-stack, PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every client of this script comes from this one address: nginx's per-address limits
# (deploy/nginx/shoal.conf.template) would refuse most of them.
export EDGE_HANDSHAKE_RATE="${EDGE_HANDSHAKE_RATE:-1000000r/s}" EDGE_AUTH_RATE="${EDGE_AUTH_RATE:-1000000r/s}"
OUT="${1:?usage: $0 OUT_DIR}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SHARED="$(cd ../shared && pwd)"
TARGETS="${TARGETS:-shoal peer}"
INSTANCES="${INSTANCES:-3}"
BEFORE="${BEFORE:-30}" OUTAGE="${OUTAGE:-60}" AFTER="${AFTER:-30}" FAILOVER="${FAILOVER:-30}"
HTTP_RATE="${HTTP_RATE:-100}" CHAT_RATE="${CHAT_RATE:-5}"
MASTER="${REDIS_BASE_PORT:-6481}"; REPLICA=$((MASTER + 1))
SENTINELS=("2$MASTER" "2$((MASTER + 1))" "2$((MASTER + 2))")
NGINX_PORT="${NGINX_PORT:-5380}"
MASTER_NAME=fault
RUN="$(mktemp -d)"
PSQL="psql -h 127.0.0.1 -U postgres -qX"
BIN="${SHOAL_BIN:-}"
if [[ " $TARGETS " == *" shoal "* && -z "$BIN" ]]; then
  cargo build --release --locked -p shoal --quiet; BIN="$PWD/target/release/shoal"
fi

log() { echo "$(date -u +%T) $*" | tee -a "$OUT/log.txt"; }

# ---------------------------------------------------------------- Redis topology

redis_start() { # redis_start PORT [replicaof-port]
  local port="$1" extra=()
  [ -n "${2:-}" ] && extra=(--replicaof 127.0.0.1 "$2")
  mkdir -p "$RUN/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN/redis-$port" \
    --logfile "$RUN/redis-$port/log" "${extra[@]}" &
  echo $! >"$RUN/redis-$port.pid"
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "redis-server on $port did not start" >&2; return 1
}

redis_kill() { # redis_kill PORT: SIGKILL and reap
  local pid; pid="$(cat "$RUN/redis-$1.pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$RUN/redis-$1.pid"
}

replica_synced() { redis-cli -p "$REPLICA" info replication | grep -q 'master_link_status:up'; }

sentinels_start() {
  for port in "${SENTINELS[@]}"; do
    mkdir -p "$RUN/sentinel-$port"
    cat >"$RUN/sentinel-$port/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
dir $RUN/sentinel-$port
logfile $RUN/sentinel-$port/log
sentinel monitor $MASTER_NAME 127.0.0.1 $MASTER 2
sentinel down-after-milliseconds $MASTER_NAME 1000
sentinel failover-timeout $MASTER_NAME 5000
sentinel parallel-syncs $MASTER_NAME 1
EOF
    redis-server "$RUN/sentinel-$port/sentinel.conf" --sentinel &
    echo $! >"$RUN/sentinel-$port.pid"
  done
  for port in "${SENTINELS[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  done
}

topology_up() {
  redis_start "$MASTER"
  redis_start "$REPLICA" "$MASTER"
  for _ in $(seq 1 200); do replica_synced && break; sleep 0.05; done
  sentinels_start
}

topology_down() {
  for port in "${SENTINELS[@]}"; do
    kill -KILL "$(cat "$RUN/sentinel-$port.pid" 2>/dev/null)" 2>/dev/null || true
    rm -rf "$RUN/sentinel-$port" "$RUN/sentinel-$port.pid"
  done
  redis_kill "$MASTER"; redis_kill "$REPLICA"
  rm -rf "$RUN/redis-$MASTER" "$RUN/redis-$REPLICA"
}

# The address the Sentinels name as master right now.
sentinel_master() { redis-cli -p "${SENTINELS[0]}" sentinel get-master-addr-by-name "$MASTER_NAME" | tail -1; }

# ---------------------------------------------------------------- targets

PORTS="$(seq -s ' ' 5381 $((5380 + INSTANCES)))"
instance_urls() { local u=""; for p in $PORTS; do u+="${u:+,}http://127.0.0.1:$p"; done; echo "$u"; }

shoal_up() {
  $PSQL -c "DROP DATABASE IF EXISTS shoal_fault WITH (FORCE)" -c "CREATE DATABASE shoal_fault"
  RUN_DIR="$RUN/shoal" PORTS="$PORTS" NGINX_PORT="$NGINX_PORT" SHOAL_BIN="$BIN" LOG_LEVEL=warn \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/shoal_fault \
    REDIS_URL="redis://127.0.0.1:$MASTER" REDIS_SENTINELS="$(printf '127.0.0.1:%s,' "${SENTINELS[@]}" | sed 's/,$//')" \
    REDIS_SENTINEL_MASTER="$MASTER_NAME" \
    RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000 \
    scripts/local-cluster.sh up "$INSTANCES" >>"$OUT/log.txt"
}
shoal_down() { RUN_DIR="$RUN/shoal" scripts/local-cluster.sh down >>"$OUT/log.txt" 2>&1 || true; }

peer_up() {
  $PSQL -c "DROP DATABASE IF EXISTS peer_fault WITH (FORCE)" -c "CREATE DATABASE peer_fault"
  # shellcheck disable=SC2086
  (cd "$SHARED/peers/node-stack" && RUN_DIR="$RUN/peer" WORKERS=1 \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/peer_fault REDIS_URL="redis://127.0.0.1:$MASTER" \
    RATE_LIMIT_USER=1000000 RATE_LIMIT_IP=1000000 scripts/instances.sh start $PORTS >>"$OUT/log.txt")
  RUN_DIR="$RUN/peer-lb" PORTS="$PORTS" NGINX_PORT="$NGINX_PORT" scripts/local-cluster.sh check >>"$OUT/log.txt"
  nginx -p "$RUN/peer-lb/nginx/" -c nginx.conf -g 'daemon off;' >>"$OUT/log.txt" 2>&1 &
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$NGINX_PORT/nginx/health" >/dev/null && break; sleep 0.1; done
}
peer_down() {
  [ -f "$RUN/peer-lb/nginx/nginx.pid" ] && kill -QUIT "$(cat "$RUN/peer-lb/nginx/nginx.pid")" 2>/dev/null || true
  (cd "$SHARED/peers/node-stack" && RUN_DIR="$RUN/peer" scripts/instances.sh stop >>"$OUT/log.txt" 2>&1) || true
}

cleanup() { shoal_down; peer_down; topology_down; }
trap cleanup EXIT

phase() { echo "$1" >"$RUN/phase"; log "phase $1"; }

run_target() { # run_target shoal|peer
  local target="$1" load_pid
  topology_up
  "${target}_up"
  echo setup >"$RUN/phase"
  node scripts/lib/fault-load.js --lb "http://127.0.0.1:$NGINX_PORT" --instances "$(instance_urls)" \
    --phase-file "$RUN/phase" --http-rate "$HTTP_RATE" --chat-rate "$CHAT_RATE" --quiet 1 \
    >"$OUT/$target.json" 2>>"$OUT/log.txt" &
  load_pid=$!
  until grep -q "fault-load: .* waiting for phases" "$OUT/log.txt" 2>/dev/null; do
    kill -0 "$load_pid" 2>/dev/null || { echo "fault-load exited during setup; see $OUT/log.txt" >&2; exit 1; }
    sleep 0.2
  done
  sed -i 's/waiting for phases/started/' "$OUT/log.txt"
  phase before; sleep "$BEFORE"
  phase outage; redis_kill "$REPLICA"; redis_kill "$MASTER"; sleep "$OUTAGE"
  phase after; redis_start "$MASTER"; redis_start "$REPLICA" "$MASTER"
  log "redis back (empty); master dbsize $(redis-cli -p "$MASTER" dbsize)"
  sleep "$AFTER"
  until replica_synced; do sleep 0.1; done
  phase failover; redis_kill "$MASTER"
  for _ in $(seq 1 300); do [ "$(sentinel_master)" = "$REPLICA" ] && break; sleep 0.05; done
  log "sentinels name master :$(sentinel_master)"
  sleep "$FAILOVER"
  phase done
  wait "$load_pid"
  "${target}_down"
  topology_down
}

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(redis-server --version | cut -d' ' -f1-3)"
log "phases: before ${BEFORE}s, outage ${OUTAGE}s, after ${AFTER}s, failover ${FAILOVER}s; $INSTANCES instances; HTTP ${HTTP_RATE}/s; chat ${CHAT_RATE}/s from each of $((INSTANCES - 1)) instances"
for target in $TARGETS; do
  log "== $target"
  run_target "$target"
done
node -e '
  const fs = require("fs"); const dir = process.argv[1]; const targets = process.argv.slice(2);
  const rows = ["| target | phase | HTTP requests | 2xx % | p99 ms | other answers | chat sent / acked | delivered / lost / dup | across instances live after (s): any / receiver-only instance | ready polls not 200 |",
                "|---|---|---:|---:|---:|---|---|---|---|---:|"];
  for (const t of targets) {
    const r = JSON.parse(fs.readFileSync(`${dir}/${t}.json`, "utf8"));
    for (const p of r.phases) {
      const other = Object.entries(p.http.by_status).filter(([k]) => !/^2/.test(k)).map(([k, v]) => `${k}: ${v}`).join(", ") || "none";
      const notReady = Object.values(p.ready).reduce((a, byStatus) => a + Object.entries(byStatus).filter(([k]) => k !== "200").reduce((b, [, v]) => b + v, 0), 0);
      rows.push(`| ${t} | ${p.phase} | ${p.http.requests} | ${p.http.ok_percent} | ${p.http.p99_ms} | ${other} | ${p.chat.sent} / ${p.chat.acked} | ${p.chat.delivered} / ${p.chat.lost} / ${p.chat.duplicated} | ${p.chat.cross_instance_live_after_s ?? "never"} / ${p.chat.quiet_instance_live_after_s ?? "never"} | ${notReady} |`);
    }
  }
  fs.writeFileSync(`${dir}/summary.md`, rows.join("\n") + "\n"); console.log(rows.join("\n"));
' "$OUT" $TARGETS | tee -a "$OUT/log.txt"
