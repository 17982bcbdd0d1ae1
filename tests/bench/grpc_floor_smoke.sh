#!/usr/bin/env bash
# Smoke test of the benchmark's gRPC floor tool (not a measurement): server,
# relay and client run on 127.0.0.1 for a second, then a small bulk transfer
# each way; every exchange and every byte must arrive.
#   grpc_floor_smoke.sh BINARY
set -euo pipefail
bin="$1"
read -r up_port port < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"$bin" server --listen "127.0.0.1:$up_port" & pids+=($!)
"$bin" relay --listen "127.0.0.1:$port" --upstream "127.0.0.1:$up_port" & pids+=($!)
small="$(timeout 30 "$bin" client --target "127.0.0.1:$port" --streams 4 --seconds 1 --warmup 0.2)"
echo "$small"
bulk="$(timeout 60 "$bin" client --target "127.0.0.1:$port" --bulk-mib 8)"
echo "$bulk"
/usr/bin/python3 - "$small" "$bulk" <<'PY'
import json, sys
small, bulk = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert small["exchanges"] > 0 and small["failed_streams"] == 0, small
assert bulk["down_mbps"] > 0 and bulk["up_mbps"] > 0, bulk
PY
