#!/usr/bin/env bash
# scripts/bench-idle-db.sh BIN: PostgreSQL transactions/s of one idle distributed instance, 30 s.
# Needs PostgreSQL and Redis on their standard local ports, curl and bc; uses port 5901.
set -euo pipefail
BIN="$1"; DB="idle_claims_$$"; PSQL="psql -h 127.0.0.1 -U postgres -qXAt"
$PSQL -c "CREATE DATABASE $DB" >/dev/null
. "$(dirname "$0")/lib/bench.sh"
D=$(mktemp -d)
env HOST=127.0.0.1 PORT=5901 LOG_LEVEL=warn DATA_DIR=$D DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB \
  REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX=idle$$ SESSION_SECRET=$(secret)$(secret) \
  SESSION_ENCRYPTION_KEY=$(secret)$(secret) JWT_ACCESS_SECRET=$(secret)$(secret) JWT_REFRESH_SECRET=$(secret)$(secret) \
  "$BIN" serve >$D/log 2>&1 &
PID=$!
for _ in $(seq 1 150); do curl -fs http://127.0.0.1:5901/health/ready >/dev/null 2>&1 && break; sleep 0.2; done
sleep 10
q() { $PSQL -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$DB'"; }
a=$(q); sleep 30; b=$(q)
echo "$BIN: $(( (b - a) )) transactions in 30 s ($(echo "scale=1; ($b - $a) / 30" | bc) /s)"
kill -TERM $PID; wait $PID || true
$PSQL -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
