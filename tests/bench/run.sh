#!/usr/bin/env bash
# Benchmark: the same native nginx on 127.0.0.1 reached four ways, measured in
# one run — direct (the limit), an nginx one-hop reverse proxy, an `ssh -R`
# reverse tunnel, and Postern (edge -> broker -> connector) — for small GET
# requests and POSTs with a 4 KiB body (wrk), 1 GiB downloads and uploads
# (curl), small-request latency while a bulk transfer shares the route, and
# (Postern only) 10,000 idle WebSocket sessions and the frames per gRPC
# message on its lanes. Prints a table with ratios and PASS/MISS per target
# (issue 25's) and writes it, with the raw numbers as JSON, to a results
# directory.
#
#   tests/bench/run.sh                 # full run, about 6 minutes
#   BENCH_QUICK=1 tests/bench/run.sh   # shorter runs, 100 MiB, 1000 sessions
#
# Not part of tests/run.sh. Everything listens on 127.0.0.1 only; every
# process started here is stopped on exit. BENCH_RESULTS_DIR picks where the
# results go (default: a new /tmp/postern-bench-results.XXXXXX);
# BENCH_KEEP=1 keeps the work directory (configs, logs); BENCH_PERF=1 adds
# perf profiles of edge, broker and connector (linux-perf); BENCH_SKIP_BUILD=1
# skips deploy/local/build.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/tests/bench"
py=/usr/bin/python3   # Debian's, with python3-websockets

quick="${BENCH_QUICK:-0}"
if [ "$quick" = 1 ]; then
  small_s=3; warm_s=1; hol_s=3; bulk_mib=100; sessions=1000; hold_s=15; rtt_s=3
else
  small_s=10; warm_s=2; hol_s=5; bulk_mib=1024; sessions=10000; hold_s=60; rtt_s=10
fi
rtt_rate=1000; rtt_sessions=4
bulk_bytes=$((bulk_mib * 1024 * 1024))
bulk_timeout=$((quick == 1 ? 60 : 180))   # per curl transfer
limit_s=$((quick == 1 ? 600 : 1200))      # the whole run, a backstop

"$root/deploy/local/install-deps.sh" nginx openssh-server openssh-client wrk
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || "$root/deploy/local/build.sh"
bin="${BUILD_DIR:-$root/build}/bin"
for b in postern-edge postern-broker postern-connector postern-policy postern-demo; do
  [ -x "$bin/$b" ] || { echo "bench: $bin/$b missing" >&2; exit 1; }
done

# 10,000 sessions need 10,000+ descriptors in the client, the edge, the
# connector and the demo service.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((sessions + 2000)) ]; then
  echo "bench: ulimit -n is $(ulimit -n), too low for $sessions sessions" >&2; exit 1
fi

work="$(mktemp -d /tmp/postern-bench.XXXXXX)"
shm="$(mktemp -d /dev/shm/postern-bench.XXXXXX)"   # upload sink: nginx DAV writes here (RAM, no disk)
results="${BENCH_RESULTS_DIR:-$(mktemp -d /tmp/postern-bench-results.XXXXXX)}"
mkdir -p "$results"
chmod 0755 "$work" "$shm"
raw="$results/raw.txt"
: > "$raw"

pids=()          # every long-running process started here
watchdog=""      # the time-limit backstop
hol_bg=""        # the head-of-line test's background transfers, while they run
descendants() {  # PID... -> the PIDs and all their descendants
  local want=" $* " found=1 p pp s
  while [ "$found" = 1 ]; do
    found=0
    for s in /proc/[0-9]*/stat; do
      p="${s#/proc/}"; p="${p%/stat}"
      case "$want" in *" $p "*) continue ;; esac
      pp="$(cat "$s" 2>/dev/null)" || continue
      pp="${pp##*) }"; pp="${pp#* }"; pp="${pp%% *}"
      case "$want" in *" $pp "*) want="$want$p "; found=1 ;; esac
    done
  done
  echo $want
}
cleanup() {
  local rc=$? all
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ] || [ -n "$watchdog$hol_bg${perf_pid:-}" ]; then
    all="$(descendants "${pids[@]}" $watchdog $hol_bg ${perf_pid:-})"
    kill -TERM $all 2>/dev/null || true
    for _ in $(seq 1 50); do
      local alive=0 p
      for p in $all; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    kill -KILL $all 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  if [ "$rc" != 0 ] && [ -d "$work" ]; then
    for f in "$work"/*.log "$work"/*/error.log; do
      [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 5 "$f" >&2; }
    done
  fi
  rm -rf "$shm"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: work directory kept: $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM
( sleep "$limit_s"; echo "bench: time limit of ${limit_s}s reached" >&2; kill -TERM $$ ) 2>/dev/null &
watchdog=$!

say() { echo "bench: $*" >&2; }
rec() { echo "$1 $2" >> "$raw"; }   # key value (value: JSON)

# Free ports: bind them all at once so they are distinct.
read -r native_port proxy_port ssh_port tunnel_port edge_port relay_port reg_port policy_port demo_port \
  edge_admin broker_admin connector_admin policy_admin floor_port floor_up_port < <("$py" -c '
import socket
ss = [socket.socket() for _ in range(15)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

tck="$(getconf CLK_TCK)"
cpu_ticks() {  # PID... -> utime+stime summed (all threads of each process)
  local t=0 p s f
  for p in "$@"; do
    s="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    s="${s##*) }"
    read -r -a f <<< "$s"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}

ctx_switches() {  # PID... -> context switches so far, every thread of each process
  local t=0 p f n
  for p in "$@"; do
    for f in /proc/"$p"/task/*/status; do
      while read -r k n; do
        case "$k" in voluntary_ctxt_switches:|nonvoluntary_ctxt_switches:) t=$((t + n)) ;; esac
      done < "$f" 2>/dev/null || true
    done
  done
  echo "$t"
}

wait_http() {  # URL CODE TRIES: poll every 0.1 s
  local i
  for i in $(seq 1 "$3"); do
    [ "$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" 2>/dev/null)" = "$2" ] && return 0
    sleep 0.1
  done
  say "no $2 from $1"; return 1
}

# ------------------------------------------------------------------ native nginx
say "work dir $work"
openssl rand -out "$work/big.bin" "$bulk_bytes"
small_body="postern bench: a small response body of exactly sixty-four bytes"
# The POST workload: wrk sends this body (and its Content-Length) with every
# request to /small.
post_bytes=4096
cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = string.rep("p", $post_bytes)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
nginx_common() {  # DIR
  cat <<EOF
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
worker_rlimit_nofile $(ulimit -n);
events { worker_connections 16384; }
EOF
}
mkdir -p "$work/native" "$work/proxy" "$shm/body" "$shm/put"
{
  nginx_common "$work/native"
  cat <<EOF
worker_processes auto;
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path $shm/body; proxy_temp_path $work/native/proxy;
  fastcgi_temp_path $work/native/fastcgi; uwsgi_temp_path $work/native/uwsgi; scgi_temp_path $work/native/scgi;
  server {
    listen 127.0.0.1:$native_port backlog=4096;
    # "return" answers any method: for a POST it reads and discards the
    # body (ngx_http_send_response -> ngx_http_discard_request_body) and
    # keeps the connection; 4 KiB is well under client_max_body_size's 1m.
    location = /small { default_type text/plain; return 200 "$small_body"; }
    location = /big { alias $work/big.bin; }
    # Upload sink: DAV PUT reads the whole body before it answers (201/204);
    # the script checks the stored file's size and deletes it.
    location /put/ { root $shm; dav_methods PUT; client_max_body_size 0; client_body_buffer_size 1m; client_body_timeout 120s; }
  }
}
EOF
} > "$work/native/nginx.conf"
/usr/sbin/nginx -p "$work/native" -e "$work/native/error.log" -c "$work/native/nginx.conf" & pids+=($!)
native_master=$!

# ------------------------------------------------------------------ nginx one-hop proxy
proxy_workers=auto
{
  nginx_common "$work/proxy"
  cat <<EOF
worker_processes $proxy_workers;
http {
  access_log $work/proxy/access.log;   # nginx's default: one line per request (Postern's edge logs each request too)
  keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path $work/proxy/body; proxy_temp_path $work/proxy/proxy;
  fastcgi_temp_path $work/proxy/fastcgi; uwsgi_temp_path $work/proxy/uwsgi; scgi_temp_path $work/proxy/scgi;
  upstream native {
    server 127.0.0.1:$native_port;
    keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$proxy_port backlog=4096;
    client_max_body_size 0;
    location / {
      proxy_pass http://native;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;      # stream uploads instead of spooling them to disk
      proxy_max_temp_file_size 0;       # and downloads
      proxy_read_timeout 300s; proxy_send_timeout 300s;
    }
  }
}
EOF
} > "$work/proxy/nginx.conf"
/usr/sbin/nginx -p "$work/proxy" -e "$work/proxy/error.log" -c "$work/proxy/nginx.conf" & pids+=($!)
proxy_master=$!

# ------------------------------------------------------------------ ssh -R
mkdir -p "$work/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/user_key"
cp "$work/ssh/user_key.pub" "$work/ssh/authorized_keys"
cat > "$work/ssh/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/ssh/host_key
PidFile none
AuthorizedKeysFile $work/ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding remote
GatewayPorts no
StrictModes no
UsePAM no
X11Forwarding no
PrintMotd no
LogLevel ERROR
EOF
[ "$(id -u)" != 0 ] || [ -d /run/sshd ] || { mkdir -p /run/sshd; chmod 0755 /run/sshd; }  # sshd's privilege separation directory
/usr/sbin/sshd -f "$work/ssh/sshd_config" -D -e > "$work/sshd.log" 2>&1 & pids+=($!)
sshd_master=$!
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port") 2>/dev/null && break; sleep 0.1; done
ssh -F /dev/null -N -T -p "$ssh_port" -i "$work/ssh/user_key" \
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ExitOnForwardFailure=yes \
  -o ServerAliveInterval=30 -o LogLevel=ERROR \
  -R "127.0.0.1:$tunnel_port:127.0.0.1:$native_port" "$(id -un)@127.0.0.1" > "$work/ssh.log" 2>&1 & pids+=($!)
ssh_client=$!

# ------------------------------------------------------------------ Postern
bash "$root/deploy/certs/make-dev-certs.sh" "$work/certs" > /dev/null
c="$work/certs"
cat > "$work/policy.yaml" <<EOF
# No threat protection: no body limit, so 1 GiB goes through.
apis:
  - name: native
    version: "1.0"
    routing: apigateway://nginx/
  - name: chat
    version: "1.0"
    type: websocket
    routing: apigateway://demo/api/demo/
EOF
cat > "$work/policy-service.yaml" <<EOF
id: policy-bench
admin: {listen: "127.0.0.1:$policy_admin"}
listen: {listen: "127.0.0.1:$policy_port"}
policy_file: "$work/policy.yaml"
signing_key_file: "$c/policy-signing.key"
EOF
cat > "$work/broker.yaml" <<EOF
id: broker-bench
admin: {listen: "127.0.0.1:$broker_admin"}
registration:
  listen: "127.0.0.1:$reg_port"
  tls: {cert_file: "$c/broker.crt", key_file: "$c/broker.key", client_ca_file: "$c/ca.crt"}
relay: {listen: "127.0.0.1:$relay_port"}
identities:
  - {identity: "spiffe://postern.dev/connector/green", aliases: [nginx, demo], publish_config: true}
trusted_config_keys: ["$c/policy-signing.pub"]
EOF
connector_max=$((sessions + 1000 > 2000 ? sessions + 1000 : 2000))
cat > "$work/connector.yaml" <<EOF
id: connector-bench
admin: {listen: "127.0.0.1:$connector_admin"}
brokers: ["localhost:$reg_port"]
tls: {ca_file: "$c/ca.crt", cert_file: "$c/connector.crt", key_file: "$c/connector.key"}
aliases:
  nginx: {url: "http://127.0.0.1:$native_port", max_idle_connections: 128, read_timeout: 300s}
  demo: {url: "http://127.0.0.1:$demo_port"}
policy: {address: "127.0.0.1:$policy_port"}
trusted_config_keys: ["$c/policy-signing.pub"]
# Above the WebSocket session count: each session holds one exchange.
max_concurrency: $connector_max
EOF
cat > "$work/edge.yaml" <<EOF
id: edge-bench
admin: {listen: "127.0.0.1:$edge_admin"}
listeners: [{listen: "127.0.0.1:$edge_port"}]
broker: {address: "127.0.0.1:$relay_port"}
trusted_config_keys: ["$c/policy-signing.pub"]
upstream_timeout: 300s
idle_timeout: 300s
EOF
"$bin/postern-policy" validate "$work/policy.yaml" > /dev/null
"$bin/postern-demo" --listen "127.0.0.1:$demo_port" > "$work/demo.log" 2>&1 & pids+=($!)
"$bin/postern-policy" --config "$work/policy-service.yaml" > "$work/policy.log" 2>&1 & pids+=($!)
policy_pid=$!
"$bin/postern-broker" --config "$work/broker.yaml" > "$work/broker.log" 2>&1 & pids+=($!)
broker_pid=$!
"$bin/postern-connector" --config "$work/connector.yaml" > "$work/connector.log" 2>&1 & pids+=($!)
connector_pid=$!
"$bin/postern-edge" --config "$work/edge.yaml" > "$work/edge.log" 2>&1 & pids+=($!)
edge_pid=$!

declare -A base=(
  [direct]="http://127.0.0.1:$native_port"
  [nginx]="http://127.0.0.1:$proxy_port"
  [ssh]="http://127.0.0.1:$tunnel_port"
  [postern]="http://127.0.0.1:$edge_port/gateway/native/1.0"
)
paths=(direct nginx ssh postern)
for k in "${paths[@]}"; do wait_http "${base[$k]}/small" 200 300; done
say "all four paths answer"

# Idle check: every process of every path, 2 s with no load. A process that
# spins (as the broker's trim tick once did, a whole core for ever) takes a
# core from every measurement below, the other paths' included.
idle_all="$(descendants "$native_master" "$proxy_master" "$sshd_master" "$ssh_client") $edge_pid $broker_pid $connector_pid $policy_pid"
declare -A idle_before=()
for p in $idle_all; do idle_before[$p]="$(cpu_ticks "$p")"; done
sleep 2
idle_busy=""
for p in $idle_all; do
  dt=$(($(cpu_ticks "$p") - ${idle_before[$p]}))
  # More than 10 % of a core while idle.
  if [ "$dt" -gt $((tck / 5)) ]; then
    idle_busy+="${idle_busy:+, }$(tr '\0' ' ' < "/proc/$p/cmdline" | cut -c1-60) ($((dt * 1000 / tck)) ms)"
  fi
done
if [ -n "$idle_busy" ]; then
  say "WARNING: busy while idle (CPU in 2 s with no load): $idle_busy"
  rec meta.idle_busy "\"$idle_busy\""
else
  rec meta.idle_busy '""'
fi

proxy_pids() {  # path -> the processes whose CPU counts for it
  case "$1" in
    direct) ;;
    nginx) descendants "$proxy_master" ;;
    ssh) descendants "$sshd_master" "$ssh_client" ;;
    postern) echo "$edge_pid $broker_pid $connector_pid" ;;
  esac
}

rec meta.date "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
rec meta.host "\"$(uname -n)\""
rec meta.cpus "$(nproc)"
rec meta.load "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
rec meta.quick "$([ "$quick" = 1 ] && echo true || echo false)"
rec meta.commit "\"$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- services 2>/dev/null || echo +dirty)\""
rec meta.binaries "\"$bin, edge built $(date -u -r "$bin/postern-edge" +%Y-%m-%dT%H:%M:%SZ)\""
rec meta.nginx_version "\"$(/usr/sbin/nginx -v 2>&1 | sed 's#.*nginx/##')\""
rec meta.ssh_version "\"$(ssh -V 2>&1 | sed 's/^OpenSSH_\([^ ,]*\).*/\1/')\""
rec meta.native_workers "$(($(descendants "$native_master" | wc -w) - 1))"
rec meta.proxy_workers "$(($(descendants "$proxy_master" | wc -w) - 1))"
rec meta.small_seconds "$small_s"
rec meta.small_bytes "${#small_body}"
rec meta.post_bytes "$post_bytes"
rec meta.hol_seconds "$hol_s"
rec meta.bulk_mib "$bulk_mib"
rec meta.sessions "$sessions"
rec meta.rtt_rate "$rtt_rate"
rec meta.rtt_seconds "$rtt_s"
rec meta.rtt_sessions "$rtt_sessions"
rec meta.connector_max_concurrency "$connector_max"

# ------------------------------------------------------------------ WebSocket (first: a fresh Postern, so RSS deltas are sessions)
say "WebSocket: $sessions idle sessions for ${hold_s}s, then round trips"
wait_http "http://127.0.0.1:$edge_port/gateway/chat/1.0/" 426 100
timeout $((hold_s + 300)) "$py" "$here/bench.py" ws --url "ws://127.0.0.1:$edge_port/gateway/chat/1.0" \
  --sessions "$sessions" --concurrency 200 --hold "$hold_s" --budget 150 \
  --rtt-sessions "$rtt_sessions" --rtt-rate "$rtt_rate" --rtt-seconds "$rtt_s" \
  --pids "edge=$edge_pid,broker=$broker_pid,connector=$connector_pid" --out "$work/ws.json" || say "WebSocket run failed"
[ -s "$work/ws.json" ] && rec ws "$(tr -d '\n' < "$work/ws.json")"
sleep 2

# ------------------------------------------------------------------ small requests and POST 4 KiB
run_wrk() {  # [-s LUA] KEY THREADS CONNS SECONDS URL [PID...]: wrk, CPU of the PIDs while it ran
  local -a script=()
  if [ "$1" = -s ]; then script=(-s "$2"); shift 2; fi
  local key=$1 t=$2 cn=$3 d=$4 url=$5
  shift 5
  local -a cpu_before=()
  local p cs_before
  for p in "$@"; do cpu_before+=("$(cpu_ticks "$p")"); done
  cs_before="$(ctx_switches "$@")"
  timeout $((d + 30)) wrk -t"$t" -c"$cn" -d"${d}s" --latency "${script[@]}" "$url" > "$work/wrk.$key.txt" 2>&1 || true
  # No parsable result (wrk failed): the report shows "-" for it, the run goes on.
  "$py" "$here/bench.py" wrk "$work/wrk.$key.txt" "$key" >> "$raw" || { say "wrk $key: no result"; return 0; }
  if [ $# -gt 0 ]; then
    local req total=0 i=0 dt
    req="$(grep "^$key.requests " "$raw" | tail -n1 | cut -d' ' -f2)"
    for p in "$@"; do
      dt=$(($(cpu_ticks "$p") - cpu_before[i])); total=$((total + dt)); i=$((i + 1))
      echo "$p $dt" >> "$work/cpu.$key.txt"
    done
    rec "$key.cpu_ticks" "$total"
    rec "$key.ctx_per_req" "$(awk -v c=$(($(ctx_switches "$@") - cs_before)) -v r="$req" 'BEGIN{printf "%.2f", (r > 0 ? c / r : 0)}')"
    rec "$key.cpu_s_per_10k" "$(awk -v t="$total" -v h="$tck" -v r="$req" 'BEGIN{printf "%.4f", (r > 0 ? t / h / r * 10000 : 0)}')"
  fi
}
# BENCH_PERF=1: perf record -g on edge, broker and connector during Postern's
# small-request and bulk runs; summaries go to the results directory.
perf_pid=""
perf_during() {  # NAME SECONDS
  [ "${BENCH_PERF:-0}" = 1 ] || return 0
  command -v perf > /dev/null || { say "BENCH_PERF=1 but no perf (apt-get install linux-perf)"; return 0; }
  ( sleep 1
    perf record -q -F 499 -g -p "$edge_pid,$broker_pid,$connector_pid" -o "$work/perf.$1.data" -- sleep "$2" > /dev/null 2>&1 || true
    { echo "# perf, Postern $1: samples in the kernel (scheduler, network stack)"
      perf report -i "$work/perf.$1.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep kernel.kallsyms || true
      echo; echo "# by thread and library"
      perf report -i "$work/perf.$1.data" --no-children -g none --sort comm,dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25 || true
      echo; echo "# by symbol"
      perf report -i "$work/perf.$1.data" --no-children -g none --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 || true
    } > "$results/perf.$1.txt" ) &
  perf_pid=$!
}
perf_wait() {
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; perf_pid=""; fi
}
# Lane batching (issue 25): each service's lane writer observes the frames
# in every gRPC message it writes (postern_{edge,broker,connector}_lane_
# frames_per_message). Scraped just before and just after Postern's run,
# outside run_wrk's CPU and context-switch window; bench.py frames turns the
# histograms' growth into KEY.frames_per_message (median) and friends.
lane_metrics() {  # FILE: edge's, broker's and connector's /metrics, one after another
  local port
  for port in "$edge_admin" "$broker_admin" "$connector_admin"; do
    curl -s --max-time 5 "http://127.0.0.1:$port/metrics" || say "no /metrics from 127.0.0.1:$port"
  done > "$1"
}
cpu_split() {  # KEY: Postern's CPU per 10k requests of KEY, per service
  local key=$1 req pair name pid dt
  req="$(grep "^$key.requests " "$raw" | tail -n1 | cut -d' ' -f2)" || true   # none: wrk failed
  [ -n "$req" ] && [ -s "$work/cpu.$key.txt" ] || return 0
  for pair in "edge $edge_pid" "broker $broker_pid" "connector $connector_pid"; do
    read -r name pid <<< "$pair"
    dt="$(awk -v p="$pid" '$1 == p {print $2}' "$work/cpu.$key.txt")"
    rec "$key.cpu_s_per_10k.$name" "$(awk -v t="$dt" -v h="$tck" -v r="$req" 'BEGIN{printf "%.4f", (r > 0 ? t / h / r * 10000 : 0)}')"
  done
}
wrk_paths() {  # NAME [-s LUA]: wrk -t2 -c64 on /small through every path, Postern's lanes scraped around its run
  local name=$1 k
  shift
  local -a pp
  for k in "${paths[@]}"; do
    say "$name: $k"
    timeout $((warm_s + 30)) wrk -t2 -c64 -d"${warm_s}s" "$@" "${base[$k]}/small" > /dev/null 2>&1 || true
    read -r -a pp <<< "$(proxy_pids "$k")"
    if [ "$k" = postern ]; then
      perf_during "$name" "$((small_s - 2))"
      lane_metrics "$work/lanes.$name.before"
    fi
    run_wrk "$@" "$name.$k" 2 64 "$small_s" "${base[$k]}/small" "${pp[@]}"
    if [ "$k" = postern ]; then
      lane_metrics "$work/lanes.$name.after"
      "$py" "$here/bench.py" frames "$work/lanes.$name.before" "$work/lanes.$name.after" "$name.postern" >> "$raw" ||
        say "$name: no lane frames per message"
    fi
    perf_wait
  done
  cpu_split "$name.postern"
}
wrk_paths small
# POST with a 4 KiB body, same load: the request body rides the tunnel.
wrk_paths post -s "$work/post.lua"

# ------------------------------------------------------------------ the gRPC floor
# Two gRPC hops alone (client -> relay -> server), through the same bridge as
# the services: two hops of gRPC lanes, N exchanges at once on one lane
# (--streams N: exchanges at once), frames batched as Postern's lanes batch
# them, no HTTP, no TLS, no policies. What the lane design costs at least on
# this machine. Run with the rest of the paths idle.
floor_at_once=64
rec meta.floor_exchanges_at_once "$floor_at_once"
say "gRPC floor: two hops of lanes, $floor_at_once exchanges at once, no HTTP"
"$bin/postern-bench-grpc-floor" server --listen "127.0.0.1:$floor_up_port" > "$work/floor-server.log" 2>&1 & pids+=($!)
floor_server=$!
"$bin/postern-bench-grpc-floor" relay --listen "127.0.0.1:$floor_port" --upstream "127.0.0.1:$floor_up_port" \
  > "$work/floor-relay.log" 2>&1 & pids+=($!)
floor_relay=$!
floor_cpu_since() {  # TICKS -> CPU seconds the relay and the server used since (the client reports its own)
  awk -v t=$(($(cpu_ticks "$floor_server" "$floor_relay") - $1)) -v h="$tck" 'BEGIN{printf "%.3f", t / h}'
}
sleep 0.5
floor_c0="$(cpu_ticks "$floor_server" "$floor_relay")"
timeout $((small_s + warm_s + 30)) "$bin/postern-bench-grpc-floor" client --target "127.0.0.1:$floor_port" \
  --streams "$floor_at_once" --seconds "$small_s" --warmup "$warm_s" > "$work/floor.json" 2> "$work/floor-client.log" ||
  say "gRPC floor client failed: $(tail -n 3 "$work/floor-client.log")"
if [ -s "$work/floor.json" ]; then rec floor "$(cat "$work/floor.json")"; fi
rec floor.others_cpu_s "$(floor_cpu_since "$floor_c0")"
# Bulk on the same two hops: one download and one upload of bulk_mib.
floor_c0="$(cpu_ticks "$floor_server" "$floor_relay")"
timeout "$bulk_timeout" "$bin/postern-bench-grpc-floor" client --target "127.0.0.1:$floor_port" --bulk-mib "$bulk_mib" \
  > "$work/floor-bulk.json" 2>> "$work/floor-client.log" || say "gRPC floor bulk failed: $(tail -n 3 "$work/floor-client.log")"
if [ -s "$work/floor-bulk.json" ]; then rec floor_bulk "$(cat "$work/floor-bulk.json")"; fi
rec floor_bulk.others_cpu_s "$(floor_cpu_since "$floor_c0")"
kill -TERM "$floor_server" "$floor_relay" 2>/dev/null || true

# ------------------------------------------------------------------ bulk
per_gib() {  # TICKS -> CPU seconds per GiB moved
  awk -v t="$1" -v h="$tck" -v b="$bulk_bytes" 'BEGIN{printf "%.3f", t / h / (b / 1073741824)}'
}
bulk() {  # KEY [PID...]: one download and one upload of bulk_bytes, CPU of the PIDs during each
  local key=$1 url=${base[$1]} out code size speed got c0 x0
  shift
  c0="$(cpu_ticks "$@")"; x0="$(ctx_switches "$@")"
  out="$(curl -sS --max-time "$bulk_timeout" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$url/big" || true)"
  read -r code size speed <<< "$out"
  if [ "$code" = 200 ] && [ "$size" = "$bulk_bytes" ]; then
    rec "bulk.$key.down_mbps" "$(awk -v s="$speed" 'BEGIN{printf "%.1f", s / 1e6}')"
    if [ $# -gt 0 ]; then
      rec "bulk.$key.down_cpu_s_per_gib" "$(per_gib $(($(cpu_ticks "$@") - c0)))"
      rec "bulk.$key.down_ctx_per_64k" "$(awk -v x=$(($(ctx_switches "$@") - x0)) -v b="$bulk_bytes" 'BEGIN{printf "%.2f", x / (b / 65536)}')"
    fi
  else
    say "download via $key failed: $out"
  fi
  rm -f "$shm/put/bulk.bin"
  c0="$(cpu_ticks "$@")"; x0="$(ctx_switches "$@")"
  out="$(curl -sS --max-time "$bulk_timeout" -o /dev/null -H 'Expect:' -T "$work/big.bin" \
           -w '%{http_code} %{size_upload} %{speed_upload}' "$url/put/bulk.bin" || true)"
  read -r code size speed <<< "$out"
  got="$(stat -c %s "$shm/put/bulk.bin" 2>/dev/null || echo 0)"
  rm -f "$shm/put/bulk.bin"
  # The native service answers only once the whole body is stored: check it is all there.
  if { [ "$code" = 201 ] || [ "$code" = 204 ]; } && [ "$size" = "$bulk_bytes" ] && [ "$got" = "$bulk_bytes" ]; then
    rec "bulk.$key.up_mbps" "$(awk -v s="$speed" 'BEGIN{printf "%.1f", s / 1e6}')"
    if [ $# -gt 0 ]; then
      rec "bulk.$key.up_cpu_s_per_gib" "$(per_gib $(($(cpu_ticks "$@") - c0)))"
      rec "bulk.$key.up_ctx_per_64k" "$(awk -v x=$(($(ctx_switches "$@") - x0)) -v b="$bulk_bytes" 'BEGIN{printf "%.2f", x / (b / 65536)}')"
    fi
  else
    say "upload via $key failed: $out, native stored $got bytes"
  fi
}
for k in "${paths[@]}"; do
  say "bulk $bulk_mib MiB: $k"
  [ "$k" = postern ] && perf_during bulk 4
  read -r -a pp <<< "$(proxy_pids "$k")"
  bulk "$k" "${pp[@]}"
  perf_wait
done

# ------------------------------------------------------------------ head-of-line
background_transfers() {  # URL KIND STOPFILE: back-to-back transfers until STOPFILE exists
  local url=$1 kind=$2 stop=$3 i
  for i in $(seq 1 50); do
    [ -e "$stop" ] && break
    if [ "$kind" = down ]; then
      curl -s --max-time "$bulk_timeout" -o /dev/null "$url/big" &
    else
      curl -s --max-time "$bulk_timeout" -o /dev/null -H 'Expect:' -T "$work/big.bin" "$url/put/hol.bin" &
    fi
    echo $! > "$stop.curl"
    wait $! || true
  done
}
for k in "${paths[@]}"; do
  say "head-of-line: $k"
  run_wrk "hol.$k.quiet" 1 8 "$hol_s" "${base[$k]}/small"
  for kind in down up; do
    stop="$work/hol.$k.$kind.stop"
    background_transfers "${base[$k]}" "$kind" "$stop" & hol_bg=$!
    sleep 0.5   # the transfer is under way
    run_wrk "hol.$k.$kind" 1 8 "$hol_s" "${base[$k]}/small"
    touch "$stop"
    for _ in $(seq 1 20); do   # the transfer running now (the loop may just have started one)
      kill "$(cat "$stop.curl")" 2>/dev/null || true
      kill -0 "$hol_bg" 2>/dev/null || break
      sleep 0.1
    done
    wait "$hol_bg" 2>/dev/null || true
    hol_bg=""
    rm -f "$shm/put/hol.bin"
    sleep 0.5
  done
done

# ------------------------------------------------------------------ report
rec meta.load_end "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
"$py" "$here/bench.py" report "$raw" "$results/results.json" "$results/results.txt"
echo
echo "Results: $results/results.txt (table), $results/results.json (raw numbers)"
