#!/usr/bin/env bash
# Quick start: install what is needed, build, and run the whole reverse-invoke
# path on 127.0.0.1 — demo native service, policy, broker, connector, edge — with dev
# certificates generated into .run/. Ctrl-C stops everything.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
"$root/deploy/local/install-deps.sh"
"$root/deploy/local/build.sh"
bin="${BUILD_DIR:-$root/build}/bin"
run="$root/.run"
mkdir -p "$run"
bash "$root/deploy/certs/make-dev-certs.sh" "$run/certs"

EDGE_PORT="${EDGE_PORT:-8080}"
DEMO_PORT="${DEMO_PORT:-8081}"
REG_PORT="${REG_PORT:-7443}"
RELAY_PORT="${RELAY_PORT:-7080}"
POLICY_PORT="${POLICY_PORT:-7090}"

# A demo API key: only its hash leaves the policy service.
[ -s "$run/demo-api-key" ] || (umask 077; openssl rand -hex 16 > "$run/demo-api-key")
key="$(cat "$run/demo-api-key")"
# The policy file is copied once, then yours to edit while the system runs.
[ -f "$run/policy.yaml" ] || cp "$root/deploy/local/policy.yaml" "$run/policy.yaml"

sed -e "s#@RUN@#$run#g" -e "s#@EDGE_PORT@#$EDGE_PORT#g" -e "s#@DEMO_PORT@#$DEMO_PORT#g" \
    -e "s#@REG_PORT@#$REG_PORT#g" -e "s#@RELAY_PORT@#$RELAY_PORT#g" \
    "$root/deploy/local/broker.yaml" > "$run/broker.yaml"
sed -e "s#@RUN@#$run#g" -e "s#@DEMO_PORT@#$DEMO_PORT#g" -e "s#@REG_PORT@#$REG_PORT#g" \
    -e "s#@POLICY_PORT@#$POLICY_PORT#g" "$root/deploy/local/connector.yaml" > "$run/connector.yaml"
sed -e "s#@RUN@#$run#g" -e "s#@EDGE_PORT@#$EDGE_PORT#g" -e "s#@RELAY_PORT@#$RELAY_PORT#g" \
    "$root/deploy/local/edge.yaml" > "$run/edge.yaml"
sed -e "s#@RUN@#$run#g" -e "s#@POLICY_PORT@#$POLICY_PORT#g" \
    "$root/deploy/local/policy-service.yaml" > "$run/policy-service.yaml"
"$bin/postern-policy" validate "$run/policy.yaml"

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/postern-demo" --listen "127.0.0.1:$DEMO_PORT" > "$run/demo.log" 2>&1 & pids+=($!)
"$bin/postern-policy" --config "$run/policy-service.yaml" > "$run/policy.log" 2>&1 & pids+=($!)
"$bin/postern-broker" --config "$run/broker.yaml" > "$run/broker.log" 2>&1 & pids+=($!)
"$bin/postern-connector" --config "$run/connector.yaml" > "$run/connector.log" 2>&1 & pids+=($!)
"$bin/postern-edge" --config "$run/edge.yaml" > "$run/edge.log" 2>&1 & pids+=($!)

url="http://127.0.0.1:$EDGE_PORT/gateway/demo/1.0/"
for _ in $(seq 1 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = "200" ]; then break; fi
  sleep 0.1
done
echo
echo "Postern is up: edge :$EDGE_PORT -> broker :$RELAY_PORT/:$REG_PORT <- connector (mTLS, dialled out) -> demo :$DEMO_PORT"
echo "               connector -> policy :$POLICY_PORT (policy file: $run/policy.yaml, hot reloaded)"
echo "Logs: $run/*.log    Stop: Ctrl-C"
echo
echo "  curl -i $url"
echo "  curl -i http://127.0.0.1:$EDGE_PORT/gateway/demo/1.0/headers"
echo "  curl -i http://127.0.0.1:$EDGE_PORT/gateway/secured/1.0/headers                        # 401"
echo "  curl -i -H 'x-Gateway-APIKey: $key' http://127.0.0.1:$EDGE_PORT/gateway/secured/1.0/headers"
echo "  curl -i 'http://127.0.0.1:$EDGE_PORT/gateway/inside/1.0/headers?x-Gateway-APIKey=$key'  # checked in the green zone"
echo
echo "WebSocket (the echo broadcaster): open http://127.0.0.1:$EDGE_PORT/gateway/demo/1.0/demo.html, or"
echo "  /usr/bin/python3 -m websockets 'ws://127.0.0.1:$EDGE_PORT/gateway/chat/1.0/broadcast?user=me'"
echo "  /usr/bin/python3 -m websockets 'ws://127.0.0.1:$EDGE_PORT/gateway/chat-secured/1.0/?user=me&x-Gateway-APIKey=$key'"
echo
wait
