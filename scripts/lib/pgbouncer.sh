# A PgBouncer (Debian's package) in transaction pooling mode in front of the local
# PostgreSQL, for scripts/scale-test.sh and scripts/bench-pooler.sh (sourced, not run).
# What Shoal needs from it: transaction pooling, `extra_float_digits` ignored (sqlx
# sends it; PgBouncer 1.18 refuses startup parameters it does not know), client slots
# for every instance's pool. It runs as `postgres` (it refuses root).

# pgbouncer_start DIR PORT POOL_SIZE MAX_CLIENTS: writes DIR/pgbouncer.ini, starts it
# in the background and waits until its admin console answers.
pgbouncer_start() {
  local dir="$1" port="$2" pool="$3" clients="$4"
  mkdir -p "$dir"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = $pool
max_client_conn = $clients
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  echo '"postgres" ""' >"$dir/userlist.txt"
  chown -R postgres: "$dir" 2>/dev/null || true
  chmod 755 "$(dirname "$dir")"
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- pgbouncer -d "$dir/pgbouncer.ini"
  else pgbouncer -d "$dir/pgbouncer.ini"; fi
  for _ in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$port" -U postgres -XtAq pgbouncer -c "SHOW VERSION" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "PgBouncer did not start on :$port; see $dir/pgbouncer.log" >&2
  return 1
}

# pgbouncer_stop DIR: SIGTERM (an immediate shutdown; SIGINT would wait for clients)
# and wait until it has exited.
pgbouncer_stop() {
  local pid; pid="$(cat "$1/pgbouncer.pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
