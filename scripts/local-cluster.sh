#!/usr/bin/env bash
# N Shoal instances on this machine in distributed mode, sharing the local PostgreSQL
# and Redis, behind nginx (docs/scaling.md).
#
#   scripts/local-cluster.sh up [N]     # N instances (default 3) on ports 8081.., nginx on :8080
#   scripts/local-cluster.sh status     # each instance's /health/ready and the cluster view
#   scripts/local-cluster.sh roll       # restart the instances one by one, no failed request,
#                                       # without touching nginx
#   scripts/local-cluster.sh down       # stop nginx and every instance this script started
#   scripts/local-cluster.sh check      # render the nginx config for PORTS and `nginx -t` it
#
# Environment (all optional): DATABASE_URL (default a `shoal_cluster` database on the
# local PostgreSQL, created when missing), REDIS_URL (redis://127.0.0.1:6379),
# BASE_PORT (8081) or PORTS ("p1 p2 …", explicit instance ports), NGINX_PORT (8080;
# 0 = no nginx), OPERATOR_PORT (8090: nginx's operator server, the only way through
# nginx to /metrics, /dashboard, /health and /health/cluster), NGINX_BIN (nginx), SHOAL_BIN (default: builds target/release/shoal),
# RUN_DIR (/tmp/shoal-cluster: pid files, logs, the rendered nginx prefix and the
# generated shared secrets), and any other Shoal key (RATE_LIMIT_*, LOG_FORMAT, …),
# passed through to every instance. TRUSTED_PROXIES defaults to 127.0.0.1/32 (nginx).
# TLS_PORT with TLS_CERT and TLS_KEY (PEM files) makes nginx serve HTTPS there too.
# EDGE_HANDSHAKE_RATE (20r/s) and EDGE_AUTH_RATE (10r/s): nginx's per-address limits on
# Socket.IO handshakes and /api/auth/ (deploy/nginx/shoal.conf.template); load tests
# that open thousands of sockets from this one address raise them.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${RUN_DIR:-/tmp/shoal-cluster}"
BASE_PORT="${BASE_PORT:-8081}"
NGINX_PORT="${NGINX_PORT:-8080}"
OPERATOR_PORT="${OPERATOR_PORT:-8090}"
EDGE_HANDSHAKE_RATE="${EDGE_HANDSHAKE_RATE:-20r/s}"
EDGE_AUTH_RATE="${EDGE_AUTH_RATE:-10r/s}"
NGINX_BIN="${NGINX_BIN:-nginx}"
NGINX_PREFIX="$RUN_DIR/nginx"
TEMPLATE="$PWD/deploy/nginx/shoal.conf.template"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
DB_NAME=shoal_cluster
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DB_NAME}"
export TRUSTED_PROXIES="${TRUSTED_PROXIES:-127.0.0.1/32}"
mkdir -p "$RUN_DIR"

binary() {
  if [ -n "${SHOAL_BIN:-}" ]; then echo "$SHOAL_BIN"; return; fi
  cargo build --release --locked -p shoal --quiet >&2
  echo "$PWD/target/release/shoal"
}

# Instances behind one load balancer must share their secrets; make them once.
secrets() {
  local f="$RUN_DIR/secrets.env"
  if [ ! -f "$f" ]; then
    umask 077
    for k in SESSION_SECRET SESSION_ENCRYPTION_KEY JWT_ACCESS_SECRET JWT_REFRESH_SECRET; do
      echo "export $k=\${$k:-$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')}"
    done > "$f"
  fi
  # shellcheck disable=SC1090
  . "$f"
}

# The instance ports of this cluster: written by `up`, read by the other commands.
ports() { cat "$RUN_DIR/ports"; }

wait_ready() { # wait_ready PORT
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "instance on :$1 did not become ready; see $RUN_DIR/instance-$1.log" >&2
  return 1
}

pid_of() { cat "$RUN_DIR/instance-$1.pid" 2>/dev/null || true; }

start_instance() { # start_instance PORT BINARY
  local port="$1" bin="$2" pid
  pid="$(pid_of "$port")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "instance on :$port already running"; return
  fi
  PORT=$port HOST="${HOST:-127.0.0.1}" INSTANCE_ID="${INSTANCE_PREFIX:-shoal}-$port" \
    DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" LOG_FORMAT="${LOG_FORMAT:-json}" \
    DATA_DIR="$RUN_DIR/data-$port" \
    nohup "$bin" serve >>"$RUN_DIR/instance-$port.log" 2>&1 &
  echo $! >"$RUN_DIR/instance-$port.pid"
}

stop_instance() { # stop_instance PORT: SIGTERM, then wait until it has exited
  local pid; pid="$(pid_of "$1")"
  rm -f "$RUN_DIR/instance-$1.pid"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# ---------------------------------------------------------------- nginx

nginx_on() { [ "$NGINX_PORT" != 0 ]; }
nginx_pid() { cat "$NGINX_PREFIX/nginx.pid" 2>/dev/null || true; }
nginx_cmd() { "$NGINX_BIN" -p "$NGINX_PREFIX/" -c nginx.conf -g 'daemon off;' "$@"; }

# Renders deploy/nginx/shoal.conf.template with every instance and checks it with
# `nginx -t`.
render_nginx() {
  local servers="" port
  for port in $(ports); do
    servers+="        server 127.0.0.1:$port max_fails=1 fail_timeout=5s;\n"
  done
  mkdir -p "$NGINX_PREFIX/logs" "$NGINX_PREFIX/tmp"
  local tls=""
  if [ -n "${TLS_PORT:-}" ]; then
    tls="        listen 127.0.0.1:$TLS_PORT ssl;\n        ssl_certificate ${TLS_CERT:?TLS_CERT};\n        ssl_certificate_key ${TLS_KEY:?TLS_KEY};\n        ssl_protocols TLSv1.2 TLSv1.3;\n"
  fi
  sed -e "s|listen @LISTEN@|listen 127.0.0.1:$NGINX_PORT|" -e "s|^@SERVERS@\$|$servers|" \
    -e "s|listen @OPERATOR_LISTEN@|listen 127.0.0.1:$OPERATOR_PORT|" \
    -e "s|@EDGE_HANDSHAKE_RATE@|$EDGE_HANDSHAKE_RATE|g" -e "s|@EDGE_AUTH_RATE@|$EDGE_AUTH_RATE|g" \
    -e "s|^@TLS@\$|$tls|" "$TEMPLATE" \
    >"$NGINX_PREFIX/nginx.conf.new"
  mv "$NGINX_PREFIX/nginx.conf.new" "$NGINX_PREFIX/nginx.conf"
  nginx_cmd -t -q
}

start_nginx() {
  local pid; pid="$(nginx_pid)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then reload_nginx; return; fi
  render_nginx
  # In the foreground of its own process (daemon off), with our pid file and logs.
  nohup "$NGINX_BIN" -p "$NGINX_PREFIX/" -c nginx.conf -g 'daemon off;' \
    >>"$NGINX_PREFIX/logs/stderr.log" 2>&1 &
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$NGINX_PORT/nginx/health" >/dev/null 2>&1 && {
      echo "nginx on http://127.0.0.1:$NGINX_PORT (pid $(nginx_pid))"; return 0; }
    sleep 0.1
  done
  echo "nginx did not start; see $NGINX_PREFIX/logs/error.log" >&2
  return 1
}

workers() { pgrep -P "$(nginx_pid)" | sort; }

# Reloads the rendered config (a new set of instance ports for a running nginx) and
# returns once new worker processes run it.
reload_nginx() {
  local before now
  render_nginx
  before="$(workers)"
  kill -HUP "$(nginx_pid)"
  for _ in $(seq 1 200); do
    now="$(workers)"
    if [ -n "$(comm -13 <(echo "$before") <(echo "$now"))" ]; then return 0; fi
    sleep 0.05
  done
  echo "nginx did not reload; see $NGINX_PREFIX/logs/error.log" >&2
  return 1
}

stop_nginx() {
  local pid; pid="$(nginx_pid)"
  [ -n "$pid" ] || return 0
  kill -QUIT "$pid" 2>/dev/null || return 0   # graceful: finish requests, then exit
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# Until a request through nginx is answered by the instance on $1: nginx marked it
# failed when it refused a connection while down (`fail_timeout`), and the next
# instance must not go down before this one takes traffic again.
wait_routed() {
  local id="${INSTANCE_PREFIX:-shoal}-$1" urls=() n
  n="$(ports | wc -l)"
  # One curl sends 20 requests on one kept-alive connection: with many instances a
  # given one answers about one request in N.
  for _ in $(seq 1 20); do urls+=("http://127.0.0.1:$NGINX_PORT/health/live"); done
  local headers
  # At least 15 s: nginx leaves a refused instance alone for fail_timeout (5 s).
  for _ in $(seq 1 $((300 + 5 * n))); do
    # Read whole, then searched: `grep -q` in the pipe would stop reading at the first
    # match, and under pipefail the writer's SIGPIPE would turn the match into a miss.
    headers="$(curl -s -o /dev/null -D - "${urls[@]}" 2>/dev/null | tr -d '\r' || true)"
    grep -qix "x-instance-id: $id" <<<"$headers" && return 0
    sleep 0.05
  done
  echo "nginx did not route to the instance on :$1 again" >&2
  return 1
}

# ---------------------------------------------------------------- commands

up() {
  local n="${1:-3}" bin port
  bin="$(binary)"
  secrets
  if [[ "$DATABASE_URL" == *"/$DB_NAME" ]]; then
    psql "${DATABASE_URL%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
      || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE $DB_NAME"
  fi
  if [ -n "${PORTS:-}" ]; then
    echo "$PORTS" | tr ' ' '\n' | grep . >"$RUN_DIR/ports"
  else
    seq "$BASE_PORT" $((BASE_PORT + n - 1)) >"$RUN_DIR/ports"
  fi
  for port in $(ports); do start_instance "$port" "$bin"; done
  for port in $(ports); do
    wait_ready "$port"
    echo "instance on http://127.0.0.1:$port ready (pid $(pid_of "$port"))"
  done
  if nginx_on; then start_nginx; fi
}

# One instance at a time: SIGTERM, wait for exit, start, wait for ready, wait until
# nginx routes to it again. nginx is never reloaded (a reload resets the idle
# keep-alive connections of clients); why no request fails: docs/scaling.md.
roll() {
  local bin port
  bin="$(binary)"
  secrets
  for port in $(ports); do
    echo "restarting :$port (pid $(pid_of "$port"))"
    stop_instance "$port"
    start_instance "$port" "$bin"
    wait_ready "$port"
    if nginx_on; then wait_routed "$port"; fi
    echo "instance on :$port back (pid $(pid_of "$port"))"
  done
}

status() {
  [ -f "$RUN_DIR/ports" ] || { echo "no instances"; return; }
  local port first=""
  for port in $(ports); do
    first="${first:-$port}"
    printf ':%s pid %s ready=%s\n' "$port" "$(pid_of "$port")" \
      "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready" || true)"
  done
  if nginx_on && [ -n "$(nginx_pid)" ]; then
    echo "nginx :$NGINX_PORT pid $(nginx_pid)"
    curl -s "http://127.0.0.1:$OPERATOR_PORT/health/cluster" && echo
  else
    curl -s "http://127.0.0.1:$first/health/cluster" && echo
  fi
}

down() {
  local n=0 pids=() f pid
  stop_nginx
  rm -f "$NGINX_PREFIX/nginx.pid"
  for f in "$RUN_DIR"/instance-*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    n=$((n + 1))
  done
  rm -f "$RUN_DIR/ports"
  echo "stopped $n instance(s)"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  status) status ;;
  roll) roll ;;
  down) down ;;
  check)
    if [ -n "${PORTS:-}" ]; then echo "$PORTS" | tr ' ' '\n' | grep . >"$RUN_DIR/ports"
    elif [ ! -f "$RUN_DIR/ports" ]; then seq "$BASE_PORT" $((BASE_PORT + 2)) >"$RUN_DIR/ports"; fi
    render_nginx && echo "nginx config OK: $NGINX_PREFIX/nginx.conf" ;;
  *) echo "usage: $0 up [N] | status | roll | down | check" >&2; exit 2 ;;
esac
