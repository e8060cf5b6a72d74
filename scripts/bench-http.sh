#!/usr/bin/env bash
# Runs the neutral kit's wrk scenarios (../shared/bench/http.sh) and, around each
# measured run, reads the CPU time of the server processes (and their descendants)
# and of Redis from /proc, so that requests per CPU-second can be compared.
#
#   STATE=state.json scripts/bench-http.sh "PID [PID…]" URL [URL…]
#
# Per scenario: a warm-up run (WARMUP, default 3s, output discarded), then the measured
# run (DURATION, default 10s) with the kit's defaults (64 connections, 2 threads).
# Prints the kit's JSON line with three fields added: server_cpu_s, redis_cpu_s and
# requests_per_cpu_s = requests / (server_cpu_s + redis_cpu_s).
# Env: SCENARIOS ("health me create_task"), BENCH_DIR (../shared/bench), REDIS_PID
# (default: the redis-server listening on 6379; set REDIS_PID=none to leave it out).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$HERE/../shared/bench}"
[ "$#" -ge 2 ] || { echo "usage: STATE=state.json $0 \"PID [PID…]\" URL [URL…]" >&2; exit 2; }
PIDS="$1"; shift
SCENARIOS="${SCENARIOS:-health me create_task}"
WARMUP="${WARMUP:-3s}"
if [ -z "${REDIS_PID:-}" ]; then
  REDIS_PID="$(pgrep -f 'redis-server .*:6379' | head -n1 || true)"
fi
TICKS="$(getconf CLK_TCK)"

descendants() { # PID -> PID and all its descendants
  local p="$1"; echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null || true); do descendants "$c"; done
}
cpu_ticks() { # PIDs -> summed utime+stime of them and their descendants
  local total=0
  for p in $1; do
    for d in $(descendants "$p"); do
      if [ -r "/proc/$d/stat" ]; then
        # fields after the ")" of the command name: utime is the 12th, stime the 13th
        local t; t="$(sed 's/^.*) //' "/proc/$d/stat" | awk '{print $12 + $13}')"
        total=$((total + t))
      fi
    done
  done
  echo "$total"
}

for s in $SCENARIOS; do
  SCENARIOS="$s" DURATION="$WARMUP" WARMUP=0 "$BENCH_DIR/http.sh" "$@" >/dev/null
  s0="$(cpu_ticks "$PIDS")"; r0=0; [ "$REDIS_PID" = none ] || r0="$(cpu_ticks "$REDIS_PID")"
  line="$(SCENARIOS="$s" WARMUP=0 "$BENCH_DIR/http.sh" "$@")"
  s1="$(cpu_ticks "$PIDS")"; r1=0; [ "$REDIS_PID" = none ] || r1="$(cpu_ticks "$REDIS_PID")"
  node -e '
    const r = JSON.parse(process.argv[1]);
    const [s, rd, hz] = [Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
    r.server_cpu_s = s / hz; r.redis_cpu_s = rd / hz;
    const req = r.requests ?? Math.round(r.rps * (r.duration_s ?? 10));
    r.requests_per_cpu_s = Math.round(req / Math.max(0.01, r.server_cpu_s + r.redis_cpu_s));
    console.log(JSON.stringify(r));
  ' "$line" "$((s1 - s0))" "$((r1 - r0))" "$TICKS"
done
