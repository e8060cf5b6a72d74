# Shared by the scripts/bench-*.sh scripts (sourced, not run).

# A random secret of 40 characters (call twice for the 64-character minimum).
secret() { head -c 30 /dev/urandom | base64 | tr -d '/+=\n'; }

# SECRETS: the four secrets of a Shoal instance as VAR=value words for `env`, fresh per
# run and shared by every instance the script starts (tokens work on all of them).
new_secrets() {
  SECRETS=(SESSION_SECRET="$(secret)$(secret)" SESSION_ENCRYPTION_KEY="$(secret)$(secret)"
           JWT_ACCESS_SECRET="$(secret)$(secret)" JWT_REFRESH_SECRET="$(secret)$(secret)")
}

# ready PORT: waits (30 s at most) for 200 from the instance's /health/ready.
ready() {
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
