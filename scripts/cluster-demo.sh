#!/usr/bin/env bash
# The promises of distributed mode, checked by hand against `scripts/local-cluster.sh up 3`
# (start it with RATE_LIMIT_USER_PER_MIN=12 to see the shared budget run out):
#   RATE_LIMIT_USER_PER_MIN=12 scripts/local-cluster.sh up 3 && scripts/cluster-demo.sh
# Prints the status of each step; needs curl.
set -u
JAR="$(mktemp)"; LOGIN="$(mktemp)"; trap 'rm -f "$JAR" "$LOGIN"' EXIT
J='content-type: application/json'; E="demo-$RANDOM@example.com"
curl -s -X POST http://127.0.0.1:8081/api/auth/register -H "$J" -d "{\"email\":\"$E\",\"password\":\"correct horse\",\"display_name\":\"Ann\"}" >/dev/null
curl -s -c "$JAR" -X POST http://127.0.0.1:8081/api/auth/login -H "$J" -d "{\"email\":\"$E\",\"password\":\"correct horse\"}" > "$LOGIN"
TOKEN=$(grep -o '"access_token":"[^"]*"' "$LOGIN" | cut -d'"' -f4)
for p in 8081 8082 8083; do echo "cookie on $p: $(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" http://127.0.0.1:$p/api/me)  bearer on $p: $(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" http://127.0.0.1:$p/api/me)"; done
curl -s -b "$JAR" -X PATCH http://127.0.0.1:8082/api/me -H "$J" -d '{"display_name":"Grace"}' >/dev/null
echo "name on 8081 after PATCH on 8082: $(curl -s -b "$JAR" http://127.0.0.1:8081/api/me | grep -o '"display_name":"[^"]*"')"
curl -s -b "$JAR" -X POST http://127.0.0.1:8081/api/analytics/opt-out >/dev/null
echo "opt-out seen on 8083: $(curl -s -b "$JAR" http://127.0.0.1:8083/api/analytics/status)"
for i in $(seq 1 6); do p=$((8081 + i % 3)); printf '%s:%s ' $p "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" http://127.0.0.1:$p/api/me)"; done; echo
echo "health/cluster on 8082: $(curl -s http://127.0.0.1:8082/health/cluster | grep -o '"id":"[^"]*"' | tr '\n' ' ')"
curl -s -o /dev/null -w 'logout on 8083: %{http_code}\n' -b "$JAR" -X POST http://127.0.0.1:8083/api/auth/logout
echo "cookie on 8081 after logout: $(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" http://127.0.0.1:8081/api/me)"
