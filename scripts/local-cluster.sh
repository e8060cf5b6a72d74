#!/usr/bin/env bash
# Start N Shoal instances on this machine in distributed mode, sharing the local
# PostgreSQL and Redis, and stop them again.
#
#   scripts/local-cluster.sh up [N]     # N instances (default 3) on ports 8081..
#   scripts/local-cluster.sh status     # each instance's /health/ready and the cluster view
#   scripts/local-cluster.sh down       # SIGTERM every instance this script started
#
# Environment (all optional): DATABASE_URL (default a `shoal_cluster` database on the
# local PostgreSQL, created when missing), REDIS_URL (redis://127.0.0.1:6379),
# BASE_PORT (8081), SHOAL_BIN (default: builds target/release/shoal), RUN_DIR
# (/tmp/shoal-cluster: pid files, logs and the generated shared secrets), and any
# other Shoal key (RATE_LIMIT_*, LOG_FORMAT, …), passed through to every instance.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${RUN_DIR:-/tmp/shoal-cluster}"
BASE_PORT="${BASE_PORT:-8081}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
DB_NAME=shoal_cluster
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DB_NAME}"
mkdir -p "$RUN_DIR"

binary() {
  if [ -n "${SHOAL_BIN:-}" ]; then echo "$SHOAL_BIN"; return; fi
  cargo build --release --quiet >&2
  echo "$PWD/target/release/shoal"
}

# Instances behind one load balancer must share their secrets; make them once.
secrets() {
  local f="$RUN_DIR/secrets.env"
  if [ ! -f "$f" ]; then
    umask 077
    for k in SESSION_SECRET SESSION_ENCRYPTION_KEY JWT_ACCESS_SECRET JWT_REFRESH_SECRET; do
      echo "export $k=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')"
    done > "$f"
  fi
  # shellcheck disable=SC1090
  . "$f"
}

wait_ready() { # wait_ready PORT
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "instance on :$1 did not become ready; see $RUN_DIR/instance-$1.log" >&2
  return 1
}

up() {
  local n="${1:-3}" bin
  bin="$(binary)"
  secrets
  if [[ "$DATABASE_URL" == *"/$DB_NAME" ]]; then
    psql "${DATABASE_URL%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
      || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE $DB_NAME"
  fi
  for i in $(seq 0 $((n - 1))); do
    local port=$((BASE_PORT + i))
    if [ -f "$RUN_DIR/instance-$port.pid" ] && kill -0 "$(cat "$RUN_DIR/instance-$port.pid")" 2>/dev/null; then
      echo "instance on :$port already running"; continue
    fi
    PORT=$port HOST="${HOST:-127.0.0.1}" INSTANCE_ID="${INSTANCE_PREFIX:-shoal}-$port" \
      DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" LOG_FORMAT="${LOG_FORMAT:-json}" \
      DATA_DIR="$RUN_DIR/data-$port" \
      nohup "$bin" serve >"$RUN_DIR/instance-$port.log" 2>&1 &
    echo $! >"$RUN_DIR/instance-$port.pid"
  done
  for i in $(seq 0 $((n - 1))); do
    wait_ready $((BASE_PORT + i))
    echo "instance on http://127.0.0.1:$((BASE_PORT + i)) ready (pid $(cat "$RUN_DIR/instance-$((BASE_PORT + i)).pid"))"
  done
}

status() {
  for f in "$RUN_DIR"/instance-*.pid; do
    [ -e "$f" ] || { echo "no instances"; return; }
    local port; port="$(basename "$f" .pid)"; port="${port#instance-}"
    printf ':%s pid %s ready=%s\n' "$port" "$(cat "$f")" \
      "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready" || true)"
  done
  curl -s "http://127.0.0.1:$BASE_PORT/health/cluster" && echo
}

down() {
  local pids=()
  for f in "$RUN_DIR"/instance-*.pid; do
    [ -e "$f" ] || continue
    local pid; pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  echo "stopped ${#pids[@]} instance(s)"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up [N] | status | down" >&2; exit 2 ;;
esac
