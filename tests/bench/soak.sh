#!/usr/bin/env bash
# Soak: mixed HTTP and WebSocket load through Postern for SOAK_SECONDS
# (default 600), on 127.0.0.1. Every 10 s it samples the RSS and open file
# descriptors of edge, broker, connector and policy. It passes when each
# service's RSS at the end of the load is within 5 % of its RSS after the
# warm-up (SOAK_WARMUP seconds, default 120), and each service has no more
# descriptors 5 s after the load than before it (after a 5 s burst of the
# same load has filled its connection pools; the connector's idle connections
# to the native service are a pool and not counted).
#
#   tests/bench/soak.sh                      # 10 minutes
#   SOAK_SECONDS=120 SOAK_WARMUP=30 tests/bench/soak.sh
#
# Load: wrk (16 connections, small GETs), a curl loop of 1 MiB downloads and
# uploads, and 20 WebSocket clients that each open a session, exchange 20
# echoes and close, over and over. Not part of tests/run.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py=/usr/bin/python3   # Debian's, with python3-websockets
seconds="${SOAK_SECONDS:-600}"
warmup="${SOAK_WARMUP:-120}"
[ "$warmup" -lt "$seconds" ] || { echo "soak: SOAK_WARMUP must be below SOAK_SECONDS" >&2; exit 2; }

"$root/deploy/local/install-deps.sh" wrk
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || "$root/deploy/local/build.sh"
bin="${BUILD_DIR:-$root/build}/bin"
work="$(mktemp -d /tmp/postern-soak.XXXXXX)"
pids=()
cleanup() {
  local rc=$?
  trap - EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "soak: work directory kept: $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT

read -r edge_port relay_port reg_port policy_port demo_port edge_admin broker_admin connector_admin policy_admin \
  < <("$py" -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

bash "$root/deploy/certs/make-dev-certs.sh" "$work/certs" > /dev/null
c="$work/certs"
cat > "$work/policy.yaml" <<EOF
apis:
  - {name: demo, version: "1.0", routing: "apigateway://demo/"}
  - {name: chat, version: "1.0", type: websocket, routing: "apigateway://demo/api/demo/"}
EOF
cat > "$work/policy-service.yaml" <<EOF
id: policy-soak
admin: {listen: "127.0.0.1:$policy_admin"}
listen: {listen: "127.0.0.1:$policy_port"}
policy_file: "$work/policy.yaml"
signing_key_file: "$c/policy-signing.key"
EOF
cat > "$work/broker.yaml" <<EOF
id: broker-soak
admin: {listen: "127.0.0.1:$broker_admin"}
registration:
  listen: "127.0.0.1:$reg_port"
  tls: {cert_file: "$c/broker.crt", key_file: "$c/broker.key", client_ca_file: "$c/ca.crt"}
relay: {listen: "127.0.0.1:$relay_port"}
identities: [{identity: "spiffe://postern.dev/connector/green", aliases: [demo], publish_config: true}]
trusted_config_keys: ["$c/policy-signing.pub"]
EOF
cat > "$work/connector.yaml" <<EOF
id: connector-soak
admin: {listen: "127.0.0.1:$connector_admin"}
brokers: ["localhost:$reg_port"]
tls: {ca_file: "$c/ca.crt", cert_file: "$c/connector.crt", key_file: "$c/connector.key"}
aliases: {demo: {url: "http://127.0.0.1:$demo_port"}}
policy: {address: "127.0.0.1:$policy_port"}
trusted_config_keys: ["$c/policy-signing.pub"]
EOF
cat > "$work/edge.yaml" <<EOF
id: edge-soak
admin: {listen: "127.0.0.1:$edge_admin"}
listeners: [{listen: "127.0.0.1:$edge_port"}]
broker: {address: "127.0.0.1:$relay_port"}
trusted_config_keys: ["$c/policy-signing.pub"]
EOF
"$bin/postern-demo" --listen "127.0.0.1:$demo_port" > "$work/demo.log" 2>&1 & pids+=($!)
"$bin/postern-policy" --config "$work/policy-service.yaml" --log-level warn > "$work/policy.log" 2>&1 & pids+=($!)
policy_pid=$!
"$bin/postern-broker" --config "$work/broker.yaml" --log-level warn > "$work/broker.log" 2>&1 & pids+=($!)
broker_pid=$!
"$bin/postern-connector" --config "$work/connector.yaml" --log-level warn > "$work/connector.log" 2>&1 & pids+=($!)
connector_pid=$!
"$bin/postern-edge" --config "$work/edge.yaml" --log-level warn > "$work/edge.log" 2>&1 & pids+=($!)
edge_pid=$!
base="http://127.0.0.1:$edge_port/gateway/demo/1.0"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/")" = 200 ] || { echo "soak: Postern did not come up" >&2; exit 1; }

names=(edge broker connector policy)
svc_pids=("$edge_pid" "$broker_pid" "$connector_pid" "$policy_pid")
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Open descriptors, less the connector's idle keep-alive connections to the
# native service: a pool (up to max_idle_connections) whose size follows the
# load, not a leak.
fds() {
  local all pooled
  all="$(ls "/proc/$1/fd" | wc -l)"
  pooled="$(ss -Htnp state established "dst 127.0.0.1:$demo_port" 2>/dev/null | grep -c "pid=$1," || true)"
  echo $((all - pooled))
}
# A short burst of the same load first fills the pools (the connector's idle
# native connections, gRPC's channels), so that the descriptor baseline is a
# warm one.
wrk -t1 -c16 -d5s "$base/" > /dev/null 2>&1
"$py" "$root/tests/bench/bench.py" churn --url "ws://127.0.0.1:$edge_port/gateway/chat/1.0" --seconds 5 > /dev/null
curl -s -o /dev/null --max-time 30 "$base/bytes/1048576"
sleep 5
fds_before=()
for p in "${svc_pids[@]}"; do fds_before+=("$(fds "$p")"); done

echo "soak: ${seconds}s of load (warm-up ${warmup}s) through edge :$edge_port; samples every 10 s"
head -c $((1 << 20)) /dev/urandom > "$work/1m.bin"
wrk -t1 -c16 -d"${seconds}s" "$base/" > "$work/wrk.txt" 2>&1 & load=($!)
(
  end=$((SECONDS + seconds))
  while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null --max-time 30 "$base/bytes/1048576" || echo down >> "$work/curl-errors"
    curl -s -o /dev/null --max-time 30 -X POST --data-binary @"$work/1m.bin" "$base/sink" || echo up >> "$work/curl-errors"
  done
) & load+=($!)
"$py" "$root/tests/bench/bench.py" churn --url "ws://127.0.0.1:$edge_port/gateway/chat/1.0" \
  --seconds "$seconds" > "$work/churn.json" & load+=($!)
pids+=("${load[@]}")

samples="$work/samples.csv"
echo "t,${names[*]// /,}" | tr ' ' ',' > "$samples"
start=$SECONDS
while [ $((SECONDS - start)) -le "$seconds" ]; do
  row="$((SECONDS - start))"
  for p in "${svc_pids[@]}"; do row="$row,$(rss "$p")"; done
  echo "$row" >> "$samples"
  sleep 10
done
wait "${load[@]}" || true
sleep 5

fail=0
printf '\n%-10s %12s %12s %12s %8s   %s\n' service "RSS@warm KiB" "RSS@end KiB" "peak KiB" growth "fds before → after"
for i in "${!names[@]}"; do
  col=$((i + 2))
  warm_rss="$(awk -F, -v w="$warmup" -v c="$col" 'NR > 1 && $1 >= w {print $c; exit}' "$samples")"
  end_rss="$(awk -F, -v c="$col" 'NR > 1 {v = $c} END {print v}' "$samples")"
  peak="$(awk -F, -v c="$col" 'NR > 1 && $c > m {m = $c} END {print m}' "$samples")"
  growth="$(awk -v a="$warm_rss" -v b="$end_rss" 'BEGIN {printf "%.1f", (b - a) * 100 / a}')"
  after="$(fds "${svc_pids[$i]}")"
  verdict=ok
  awk -v g="$growth" 'BEGIN {exit !(g > 5)}' && { verdict="RSS GREW"; fail=1; }
  [ "$after" -le "${fds_before[$i]}" ] || { verdict="$verdict, FDS LEAKED"; fail=1; }
  printf '%-10s %12s %12s %12s %7s%%   %s → %s  %s\n' "${names[$i]}" "$warm_rss" "$end_rss" "$peak" "$growth" \
    "${fds_before[$i]}" "$after" "$verdict"
done
echo
grep -E "Requests/sec|requests in|Non-2xx|Socket errors" "$work/wrk.txt" | sed 's/^/wrk: /'
echo "bulk transfers failed: $(cat "$work/curl-errors" 2>/dev/null | wc -l)"
echo "websocket churn: $(cat "$work/churn.json")"
echo "samples: $samples"
cp "$samples" "/tmp/postern-soak-samples.csv"
echo "(copied to /tmp/postern-soak-samples.csv)"
if [ "$fail" = 0 ]; then echo "soak: PASS"; else echo "soak: FAIL"; exit 1; fi
