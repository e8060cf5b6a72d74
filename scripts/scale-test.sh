#!/usr/bin/env bash
# N Shoal instances (default 100) started at the same moment on an empty database,
# through a PgBouncer (transaction pooling) in front of the local, untouched
# PostgreSQL, sharing the local Redis, behind nginx (docs/scaling.md):
#
#   scripts/scale-test.sh [N]
#
# 1. starts PgBouncer on its own port with a config written here, creates an empty
#    database, starts N instances at once (DATABASE_POOLER=transaction) and, at the
#    same moment, `shoal migrate` on the direct URL (as a Kubernetes Job would;
#    MIGRATE=instances gives every instance DATABASE_MIGRATION_URL instead);
# 2. waits until every instance is ready and checks: none exited, each migration
#    applied once, /health/cluster lists N, a login on instance 1 works on instance N
#    and a logout on N ends it on 1, a Socket.IO client on 1 receives a message sent
#    from N and back (scripts/lib/cross-instance.js, the stock socket.io-client);
# 3. restarts all N one by one behind nginx (scripts/local-cluster.sh roll) under a
#    keep-alive wrk load on GET /api/me, and counts failed requests;
# 4. prints the figures (time until all ready, RSS per instance, PostgreSQL server
#    connections, PgBouncer client connections, Redis connections, requests and
#    failures during the roll) and stops everything it started.
#
# Needs: pgbouncer, nginx, wrk, psql, redis-cli, node with `npm ci` done in
# ../shared/bench (for socket.io-client); PostgreSQL on 127.0.0.1:5432 and Redis on
# 127.0.0.1:6379. Builds target/release/shoal unless SHOAL_BIN is set.
# Environment: BASE_PORT (9201), NGINX_PORT (9200), BOUNCER_PORT (6433),
# BOUNCER_POOL (20 server connections), DB_POOL_MAX (10 per instance), MIGRATE
# (job | instances), ROLL (1; 0 skips step 3), OUT (a directory for the figures and
# wrk's output; default a temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
# Every client of this script comes from this one address: nginx's per-address limits
# (deploy/nginx/shoal.conf.template) would refuse most of them.
export EDGE_HANDSHAKE_RATE="${EDGE_HANDSHAKE_RATE:-1000000r/s}" EDGE_AUTH_RATE="${EDGE_AUTH_RATE:-1000000r/s}"
N="${1:-100}"
BASE_PORT="${BASE_PORT:-9201}"
NGINX_PORT="${NGINX_PORT:-9200}"
BOUNCER_PORT="${BOUNCER_PORT:-6433}"
BOUNCER_POOL="${BOUNCER_POOL:-20}"
export DB_POOL_MAX="${DB_POOL_MAX:-10}"
MIGRATE="${MIGRATE:-job}"
RUN="$(mktemp -d /tmp/shoal-scale.XXXXXX)"
OUT="${OUT:-$RUN/out}"; mkdir -p "$OUT"
DB="shoal_scale_$$"
PREFIX="scale$$"
DIRECT="postgres://postgres@127.0.0.1:5432/$DB"
POOLED="postgres://postgres@127.0.0.1:$BOUNCER_PORT/$DB"
PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -qXtA)
BIN="${SHOAL_BIN:-}"
if [ -z "$BIN" ]; then cargo build --release --locked -p shoal --quiet; BIN="$PWD/target/release/shoal"; fi

# shellcheck source=scripts/lib/pgbouncer.sh
. scripts/lib/pgbouncer.sh
cluster() { RUN_DIR="$RUN/cluster" SHOAL_BIN="$BIN" scripts/local-cluster.sh "$@"; }
cleanup() {
  [ -n "${WRK_PID:-}" ] && kill -INT "$WRK_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  pgbouncer_stop "$RUN/bouncer"
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$PREFIX:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT
figure() { printf '%-44s %s\n' "$1" "$2" | tee -a "$OUT/figures.txt"; }
now_ms() { date +%s%3N; }

# ------------------------------------------------------------------ PgBouncer
ulimit -n "$(( $(ulimit -Hn) < 16384 ? $(ulimit -Hn) : 16384 ))"
pgbouncer_start "$RUN/bouncer" "$BOUNCER_PORT" "$BOUNCER_POOL" $((N * DB_POOL_MAX + 100))
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
REDIS_BEFORE="$(redis-cli info clients | tr -d '\r' | awk -F: '/^connected_clients/{print $2}')"
echo "pgbouncer :$BOUNCER_PORT (pool $BOUNCER_POOL), database $DB, $N instances, logs in $RUN"

# ------------------------------------------------------------------ start all at once
export DATABASE_URL="$POOLED" DATABASE_POOLER=transaction REDIS_KEY_PREFIX="$PREFIX" \
  LOG_LEVEL=warn INSTANCE_PREFIX=scale \
  RATE_LIMIT_AUTH_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN=1000000 RATE_LIMIT_USER_PER_MIN=1000000 RATE_LIMIT_IP_PER_MIN=1000000
[ "$MIGRATE" = instances ] && export DATABASE_MIGRATION_URL="$DIRECT"
PORTS="$(seq -s ' ' "$BASE_PORT" $((BASE_PORT + N - 1)))"
START="$(now_ms)"
if [ "$MIGRATE" = job ]; then
  DATABASE_URL="$DIRECT" DATABASE_POOLER=none "$BIN" migrate >"$RUN/migrate.log" 2>&1 &
  MIGRATE_PID=$!
fi
# `up` starts every instance in one loop without waiting, then waits for each.
PORTS="$PORTS" NGINX_PORT=0 cluster up "$N" >"$RUN/up.log"
ALL_READY="$(now_ms)"
[ -n "${MIGRATE_PID:-}" ] && { wait "$MIGRATE_PID" || { cat "$RUN/migrate.log"; exit 1; }; }
figure "instances ready" "$N of $N, $(( (ALL_READY - START) )) ms after the start"

# ------------------------------------------------------------------ the promises
exited=0
for port in $PORTS; do kill -0 "$(cat "$RUN/cluster/instance-$port.pid")" 2>/dev/null || exited=$((exited + 1)); done
figure "instances exited" "$exited"
applied="$("${PSQL[@]}" -d "$DB" -c "SELECT count(*) || ' rows, ' || count(DISTINCT version) || ' versions, ' || count(*) FILTER (WHERE success) || ' successful' FROM _sqlx_migrations")"
figure "migrations applied" "$applied"
listed="$(curl -fs "http://127.0.0.1:$BASE_PORT/health/cluster" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).instances.length))')"
figure "/health/cluster on instance 1 lists" "$listed"
LAST=$((BASE_PORT + N - 1))
cross="$(node scripts/lib/cross-instance.js "http://127.0.0.1:$BASE_PORT" "http://127.0.0.1:$LAST")" || { echo "$cross"; exit 1; }
figure "login, logout and chat, instance 1 <-> $N" "$cross"

rss_kib=0
for port in $PORTS; do
  rss_kib=$((rss_kib + $(ps -o rss= -p "$(cat "$RUN/cluster/instance-$port.pid")")))
done
figure "RSS per instance (mean, idle)" "$((rss_kib / N / 1024)) MiB"
figure "PostgreSQL server connections (all)" "$("${PSQL[@]}" -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")"
figure "PostgreSQL server connections to $DB" "$("${PSQL[@]}" -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")"
clients="$(psql -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -XtA pgbouncer -c "SHOW POOLS" \
  | awk -F'|' -v db="$DB" '$1 == db { active += $3; waiting += $4 } END { print active + waiting }')"
figure "PgBouncer client connections" "$clients"
REDIS_NOW="$(redis-cli info clients | tr -d '\r' | awk -F: '/^connected_clients/{print $2}')"
figure "Redis connections (added by the instances)" "$((REDIS_NOW - REDIS_BEFORE))"

# ------------------------------------------------------------------ the roll
if [ "${ROLL:-1}" = 0 ]; then echo "figures in $OUT/figures.txt"; exit 0; fi
cluster check >/dev/null
PORTS="$PORTS" NGINX_PORT="$NGINX_PORT" cluster up "$N" >>"$RUN/up.log"
cookie="$(curl -fs -o /dev/null -c - -H 'content-type: application/json' \
  -d "{\"email\":\"roll-$$@example.com\",\"password\":\"correct horse battery staple\",\"display_name\":\"Roll\"}" \
  "http://127.0.0.1:$NGINX_PORT/api/auth/register" >/dev/null;
  curl -fs -D - -o /dev/null -H 'content-type: application/json' \
  -d "{\"email\":\"roll-$$@example.com\",\"password\":\"correct horse battery staple\"}" \
  "http://127.0.0.1:$NGINX_PORT/api/auth/login" | tr -d '\r' | awk -F': ' 'tolower($1)=="set-cookie"{split($2,a,";"); print a[1]; exit}')"
[ -n "$cookie" ] || { echo "no session cookie from the login through nginx" >&2; exit 1; }
wrk -t2 -c32 -d1h --latency -H "Cookie: $cookie" "http://127.0.0.1:$NGINX_PORT/api/me" >"$OUT/wrk-roll.txt" 2>&1 &
WRK_PID=$!
sleep 2
ROLL_START="$(now_ms)"
PORTS="$PORTS" NGINX_PORT="$NGINX_PORT" cluster roll >"$RUN/roll.log"
ROLL_END="$(now_ms)"
sleep 2
kill -INT "$WRK_PID"; wait "$WRK_PID" || true; WRK_PID=""
requests="$(awk '/requests in/{print $1}' "$OUT/wrk-roll.txt")"
non2xx="$(awk -F': ' '/Non-2xx/{print $2}' "$OUT/wrk-roll.txt")"
errors="$(awk '/Socket errors/{print}' "$OUT/wrk-roll.txt")"
figure "rolling restart of $N behind nginx" "$(( (ROLL_END - ROLL_START) / 1000 )) s"
figure "requests during the roll (wrk, keep-alive)" "$requests"
figure "failed (non-2xx)" "${non2xx:-0}"
figure "socket errors" "${errors:-none}"
figure "p99 during the roll" "$(awk '/ 99%/{print $2}' "$OUT/wrk-roll.txt")"
exited=0
for port in $PORTS; do kill -0 "$(cat "$RUN/cluster/instance-$port.pid")" 2>/dev/null || exited=$((exited + 1)); done
figure "instances running after the roll" "$((N - exited)) of $N"
echo "figures in $OUT/figures.txt"
[ -z "${non2xx:-}" ] && [ -z "$errors" ] && [ "$exited" = 0 ]
