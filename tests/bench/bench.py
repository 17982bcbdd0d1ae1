#!/usr/bin/python3
"""Helpers for tests/bench/run.sh (Debian's /usr/bin/python3, python3-websockets 10.4).

  bench.py wrk FILE PREFIX            wrk --latency output -> "PREFIX.key value" lines
  bench.py frames BEFORE AFTER PREFIX two /metrics scrapes of edge+broker+connector -> lane frames per
                                      gRPC message over the time between them, "PREFIX.key value" lines
  bench.py ws --url URL ... --out F   idle WebSocket sessions + message round trip through the edge
  bench.py report RAW JSON TXT        raw "key value" lines -> table (stdout and TXT) and JSON
"""
import argparse
import asyncio
import json
import os
import re
import sys
import time

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def parse_wrk(path, prefix):
    text = open(path).read()
    out = {}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        out["avg_ms"] = to_ms(m.group(1))
        out["max_ms"] = to_ms(m.group(3))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}%\s+(\S+)", text, re.M)
        if m:
            out[f"p{pct}_ms"] = to_ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(\w+)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    out["errors"] = errors
    if "rps" not in out or "p99_ms" not in out:
        print(f"bench.py: could not parse wrk output {path}:\n{text}", file=sys.stderr)
        sys.exit(1)
    for k, v in out.items():
        print(f"{prefix}.{k} {v}")


# ------------------------------------------------------------------ lane frames per message

# Each service's lane writer observes how many frames went into each gRPC
# message it wrote (issue 25: batching across exchanges).
FRAME_SERVICES = ("edge", "broker", "connector")
FRAME_METRIC = re.compile(r"postern_(edge|broker|connector)_lane_frames_per_message_(bucket|sum|count)"
                          r"(\{[^}]*\})?\s+(\S+)")


def parse_frame_histograms(text):
    """Prometheus text (one or more scrapes one after another) -> {service:
    {"buckets": {le: cumulative count}, "sum": frames, "count": messages}},
    summed over label sets. le is a float (+Inf -> inf)."""
    out = {}
    for line in text.splitlines():
        m = FRAME_METRIC.match(line.strip())
        if not m:
            continue
        svc, kind, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        h = out.setdefault(svc, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if kind == "bucket":
            le = re.search(r'le="([^"]+)"', labels or "")
            if le:
                bound = float(le.group(1))
                h["buckets"][bound] = h["buckets"].get(bound, 0.0) + v
        else:
            h[kind] += v
    return out


def frame_deltas(before, after):
    """The histograms' growth between two scrapes, per service. A service
    missing after, restarted in between (a count went down) or with no new
    messages is left out."""
    out = {}
    for svc, a in after.items():
        b = before.get(svc, {"buckets": {}, "sum": 0.0, "count": 0.0})
        d = {"buckets": {le: n - b["buckets"].get(le, 0.0) for le, n in a["buckets"].items()},
             "sum": a["sum"] - b["sum"], "count": a["count"] - b["count"]}
        if d["count"] < 0 or any(n < 0 for n in d["buckets"].values()):
            print(f"bench.py: {svc}'s lane histogram went down between the scrapes (restarted?)", file=sys.stderr)
            continue
        if d["count"] > 0 and d["buckets"]:
            out[svc] = d
    return out


def bucket_median(buckets):
    """Cumulative buckets {le: count} -> the smallest bound whose cumulative
    count is at least half the total (the +Inf bucket's); None with no
    samples. inf when the median lies beyond the largest finite bound."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    for le in bounds:
        if buckets[le] >= total / 2.0:
            return le
    return bounds[-1]


def combine_frames(deltas):
    """Sum per-service deltas: buckets on the bounds every service has."""
    if not deltas:
        return None
    common = set.intersection(*(set(d["buckets"]) for d in deltas.values()))
    return {"buckets": {le: sum(d["buckets"][le] for d in deltas.values()) for le in common},
            "sum": sum(d["sum"] for d in deltas.values()), "count": sum(d["count"] for d in deltas.values())}


def median_value(le):
    """A bucket bound as a raw.txt value: an integer where it is one; beyond
    the largest finite bound, the string ">N" (a lower bound)."""
    if le is None:
        return None
    if le == float("inf"):
        return ">512"
    return int(le) if float(le).is_integer() else le


def frames_lines(before_text, after_text, prefix):
    """Two scrapes -> ["PREFIX.frames_per_message 4", ...]: the median (bucket
    bound) and mean frames per lane message, all three services together and
    each on its own, and how many lane messages they wrote."""
    deltas = frame_deltas(parse_frame_histograms(before_text), parse_frame_histograms(after_text))
    out = []

    def emit(suffix, d):
        med = median_value(bucket_median(d["buckets"]))
        if med is None:
            return
        out.append(f"{prefix}.frames_per_message{suffix} {json.dumps(med)}")
        out.append(f"{prefix}.frames_per_message_mean{suffix} {d['sum'] / d['count']:.2f}")
        out.append(f"{prefix}.lane_messages{suffix} {int(d['count'])}")

    total = combine_frames(deltas)
    if total:
        emit("", total)
    for svc in FRAME_SERVICES:
        if svc in deltas:
            emit(f".{svc}", deltas[svc])
    return out


def frames_main(before_path, after_path, prefix):
    def read(path):
        try:
            return open(path).read()
        except OSError:
            return ""

    lines = frames_lines(read(before_path), read(after_path), prefix)
    if not lines:
        print(f"bench.py: no lane messages between {before_path} and {after_path}", file=sys.stderr)
    for line in lines:
        print(line)


# ------------------------------------------------------------------ WebSocket


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_all(pids):
    return {name: rss_kib(pid) for name, pid in pids.items()}


def cpu_ms(pid):
    """User + system CPU of every thread of `pid` so far, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def pct(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


async def ws_main(a):
    import websockets  # Debian's python3-websockets 10.4

    pids = dict(kv.split("=") for kv in a.pids.split(","))
    kw = dict(ping_interval=None, compression=None, open_timeout=30, close_timeout=2, max_queue=4)
    result = {"sessions_wanted": a.sessions}
    deadline = time.monotonic() + a.budget

    async def open_many(n, path, sem, errors):
        conns = []

        async def one(i):
            async with sem:
                if time.monotonic() > deadline:
                    errors["budget"] = errors.get("budget", 0) + 1
                    return
                try:
                    c = await websockets.connect(f"{a.url}/{path}?user=u{i}", **kw)
                    conns.append(c)
                except Exception as e:  # a refused upgrade or a timeout is a result, not a crash
                    key = type(e).__name__ + (f" {e.status_code}" if hasattr(e, "status_code") else "")
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
        return conns

    async def close_many(conns):
        sem = asyncio.Semaphore(500)

        async def one(c):
            async with sem:
                try:
                    await asyncio.wait_for(c.close(), 5)
                except Exception:
                    c.transport.abort()

        try:
            await asyncio.wait_for(asyncio.gather(*(one(c) for c in conns)), 60)
        except asyncio.TimeoutError:
            for c in conns:
                c.transport.abort()

    # Warm-up: the first sessions pay for lazily allocated buffers and threads.
    errs = {}
    warm = await open_many(50, "warmup", asyncio.Semaphore(50), errs)
    await close_many(warm)
    await asyncio.sleep(2)

    result["rss_before_kib"] = rss_all(pids)
    errors = {}
    t0 = time.monotonic()
    conns = await open_many(a.sessions, "idle", asyncio.Semaphore(a.concurrency), errors)
    result["open_seconds"] = time.monotonic() - t0
    result["sessions_opened"] = len(conns)
    result["open_errors"] = errors
    opened_at = time.monotonic()
    await asyncio.sleep(3)  # let the services settle (buffers returned)
    result["rss_open_kib"] = rss_all(pids)

    # Message round trip on a few sessions, each on its own path (the demo
    # broadcasts to every client on a path), while the idle sessions stay open.
    rtt = []
    rtt_errors = 0
    rtt_conns = []
    for i in range(a.rtt_sessions):
        try:
            rtt_conns.append(await websockets.connect(f"{a.url}/rtt-{i}?user=r{i}", **kw))
        except Exception:
            rtt_errors += 1
    sent = {}
    total = int(a.rtt_rate * a.rtt_seconds)

    async def reader(i, c):
        nonlocal rtt_errors
        try:
            async for msg in c:
                now = time.perf_counter()
                parts = msg.rsplit(" ", 2)
                if len(parts) == 3 and parts[0].endswith("rtt") and parts[1] == str(i):
                    t = sent.pop((i, int(parts[2])), None)
                    if t is not None:
                        rtt.append((now - t) * 1000.0)
        except Exception:
            rtt_errors += 1

    readers = [asyncio.ensure_future(reader(i, c)) for i, c in enumerate(rtt_conns)]
    if rtt_conns:
        start = time.perf_counter()
        for k in range(total):
            target = start + k / a.rtt_rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            i = k % len(rtt_conns)
            sent[(i, k)] = time.perf_counter()
            try:
                await rtt_conns[i].send(f"rtt {i} {k}")
            except Exception:
                rtt_errors += 1
        result["rtt_send_seconds"] = time.perf_counter() - start
        await asyncio.sleep(1)  # the last echoes
    for r in readers:
        r.cancel()
    await close_many(rtt_conns)
    rtt.sort()
    result["rtt_sent"] = total if rtt_conns else 0
    result["rtt_received"] = len(rtt)
    result["rtt_errors"] = rtt_errors
    result["rtt_p50_ms"] = pct(rtt, 50)
    result["rtt_p99_ms"] = pct(rtt, 99)
    result["rtt_max_ms"] = rtt[-1] if rtt else None

    # Hold the idle sessions for the rest of the hold time, sampling RSS,
    # and what holding them costs in CPU (keepalives, timers).
    peak = result["rss_open_kib"]
    cpu0, idle_t0 = {name: cpu_ms(pid) for name, pid in pids.items()}, time.monotonic()
    while time.monotonic() - opened_at < a.hold:
        await asyncio.sleep(min(5, max(0.1, a.hold - (time.monotonic() - opened_at))))
        now = rss_all(pids)
        if sum(now.values()) > sum(peak.values()):
            peak = now
    idle_s = time.monotonic() - idle_t0
    result["idle_cpu_ms_per_s"] = {name: (cpu_ms(pid) - cpu0[name]) / max(idle_s, 0.001) for name, pid in pids.items()}
    result["held_seconds"] = time.monotonic() - opened_at
    result["rss_end_kib"] = rss_all(pids)
    result["rss_peak_kib"] = peak
    result["sessions_still_open"] = sum(1 for c in conns if c.open)
    await close_many(conns)
    json.dump(result, open(a.out, "w"), indent=1)


# ------------------------------------------------------------------ report

PATHS = [("direct", "direct"), ("nginx", "nginx"), ("ssh", "ssh -R"), ("postern", "Postern")]


def fmt(v, spec="{:.2f}", none="-"):
    return none if v is None else spec.format(v)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def num(v):
    """A raw value as a number for a target: ints and floats as they are, a
    lower bound ">N" as N, anything else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str) and v.startswith(">"):
        try:
            return float(v[1:])
        except ValueError:
            return None
    return None


def report(raw_path, json_path, txt_path):
    raw = {}
    for line in open(raw_path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition(" ")
        try:
            raw[k] = json.loads(v)
        except ValueError:
            raw[k] = v
    g = raw.get
    lines = []
    p = lines.append
    size_mib = g("meta.bulk_mib")

    def wrk_table(prefix, note=False):
        """The req/s table of one wrk workload over the four paths."""
        p(f"  {'path':<8} {'req/s':>9} {'×direct':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU s/10k req':>14} "
          f"{'ctx sw/req':>11} {'errors':>7}")
        for key, name in PATHS:
            rps = g(f"{prefix}.{key}.rps")
            cpu = g(f"{prefix}.{key}.cpu_s_per_10k")
            p(f"  {name:<8} {fmt(rps, '{:.0f}'):>9} {fmt(ratio(rps, g(f'{prefix}.direct.rps'))):>8} "
              f"{fmt(g(f'{prefix}.{key}.p50_ms')):>8} {fmt(g(f'{prefix}.{key}.p99_ms')):>8} "
              f"{fmt(g(f'{prefix}.{key}.max_ms')):>8} "
              f"{(fmt(cpu, '{:.3f}') if key != 'direct' else '(none)'):>14} "
              f"{fmt(g(f'{prefix}.{key}.ctx_per_req'), '{:.1f}'):>11} {fmt(g(f'{prefix}.{key}.errors'), '{:d}'):>7}")
        if note:
            p("  (CPU and context switches: every thread of the proxy's processes — nginx proxy master+workers; "
              "sshd+ssh; edge+broker+connector)")
        split = [(s, g(f"{prefix}.postern.cpu_s_per_10k.{s}")) for s in FRAME_SERVICES]
        if all(v is not None for _, v in split):
            p("  Postern CPU split per 10k req: " + ", ".join(f"{s} {v:.3f} s" for s, v in split))
        med = g(f"{prefix}.postern.frames_per_message")
        if med is None:
            p("  Postern lane frames per gRPC message: no figure (no /metrics scrape, or no lane messages)")
        else:
            per = [f"{s} {g(f'{prefix}.postern.frames_per_message.{s}')} "
                   f"(mean {fmt(g(f'{prefix}.postern.frames_per_message_mean.{s}'))})"
                   for s in FRAME_SERVICES if g(f"{prefix}.postern.frames_per_message.{s}") is not None]
            p(f"  Postern lane frames per gRPC message over this run: median {med}, "
              f"mean {fmt(g(f'{prefix}.postern.frames_per_message_mean'))}, "
              f"{fmt(g(f'{prefix}.postern.lane_messages'), '{:d}')} lane messages written")
            if per:
                p("    " + "; ".join(per) + " (median: the histogram's bucket bound, le=1,2,4,8,...)")

    p(f"Postern benchmark — {g('meta.date')}, {g('meta.host')}, {g('meta.cpus')} CPUs, load before start {g('meta.load')}"
      f"{', BENCH_QUICK=1' if g('meta.quick') else ''}")
    p(f"native: nginx {g('meta.nginx_version')} on 127.0.0.1 ({g('meta.native_workers')} workers, access log off); "
      f"nginx proxy: {g('meta.proxy_workers')} workers, upstream keepalive, access log on; ssh -R: OpenSSH {g('meta.ssh_version')}; "
      f"Postern: edge → broker → connector (commit {g('meta.commit')}, {g('meta.binaries')})")
    p(f"load average at the end {g('meta.load_end')}: other work on this machine makes the numbers noisy")
    if g("meta.idle_busy"):
        p(f"WARNING: busy with no load (CPU in 2 idle s), every figure below is skewed: {g('meta.idle_busy')}")
    p("")
    p(f"Small requests: wrk -t2 -c64 -d{g('meta.small_seconds')}s --latency, GET {g('meta.small_bytes')}-byte body")
    wrk_table("small", note=True)
    fl = g("floor")
    if isinstance(fl, dict):
        # CPU of all three processes over the warm-up and the measured
        # seconds, per exchange of both.
        fcpu = ((g("floor.others_cpu_s") + fl["client_cpu_s"]) / fl["exchanges_total"] * 10000
                if fl.get("exchanges_total") and fl.get("client_cpu_s") is not None
                and g("floor.others_cpu_s") is not None else None)
        raw["floor.cpu_s_per_10k"] = fcpu
        at_once = g("meta.floor_exchanges_at_once")
        fpm = fl.get("frames_per_message")
        p(f"  gRPC floor (two hops of gRPC lanes, {at_once if at_once is not None else 'N'} exchanges at once on one lane, "
          f"alone: no HTTP, no TLS, no policies, no wrk or nginx beside it; {fl.get('failed_streams', 0)} failures): "
          f"{fmt(fl.get('exchanges_per_s'), '{:.0f}')} exchanges/s, p50 {fmt(fl.get('p50_ms'))} ms, "
          f"p99 {fmt(fl.get('p99_ms'))} ms, CPU {fmt(fcpu, '{:.3f}')} s/10k"
          + (f", {fpm:.2f} frames per message (mean, the client's lane)" if isinstance(fpm, (int, float)) else ""))
        p(f"    its CPU per exchange: {fmt(ratio(fcpu, g('small.postern.cpu_s_per_10k')))}x Postern's, "
          f"{fmt(ratio(fcpu, g('small.ssh.cpu_s_per_10k')))}x ssh -R's, "
          f"{fmt(ratio(fcpu, g('small.nginx.cpu_s_per_10k')))}x the nginx proxy's per request")
    p("")
    p(f"POST 4 KiB: wrk -t2 -c64 -d{g('meta.small_seconds')}s --latency -s post.lua, POST {g('meta.post_bytes')}-byte "
      f"body to the same location, {g('meta.small_bytes')}-byte answer")
    wrk_table("post")
    p("")
    p(f"Bulk: curl, one {size_mib} MiB transfer each way (MB/s = 10^6 bytes/s)")
    p(f"  {'path':<8} {'download MB/s':>14} {'×direct':>8} {'CPU s/GiB':>10} {'ctx/64KiB':>10} "
      f"{'upload MB/s':>12} {'×direct':>8} {'CPU s/GiB':>10} {'ctx/64KiB':>10}")
    for key, name in PATHS:
        d, u = g(f"bulk.{key}.down_mbps"), g(f"bulk.{key}.up_mbps")
        p(f"  {name:<8} {fmt(d, '{:.0f}'):>14} {fmt(ratio(d, g('bulk.direct.down_mbps'))):>8} "
          f"{fmt(g(f'bulk.{key}.down_cpu_s_per_gib')):>10} {fmt(g(f'bulk.{key}.down_ctx_per_64k')):>10} "
          f"{fmt(u, '{:.0f}'):>12} {fmt(ratio(u, g('bulk.direct.up_mbps'))):>8} {fmt(g(f'bulk.{key}.up_cpu_s_per_gib')):>10} "
          f"{fmt(g(f'bulk.{key}.up_ctx_per_64k')):>10}")
    p("  (CPU of the proxy's processes only; the upload sink is nginx DAV PUT into tmpfs, checked for the full size)")
    fb = g("floor_bulk")
    if isinstance(fb, dict):
        if g("floor_bulk.others_cpu_s") is not None and fb.get("client_cpu_s") is not None and fb.get("mib"):
            raw["floor_bulk.cpu_s_per_gib"] = (g("floor_bulk.others_cpu_s") + fb["client_cpu_s"]) / (2 * fb["mib"] / 1024)
        p(f"  gRPC floor (the two hops' lanes alone, no HTTP, no TLS, 256 KiB pieces): download "
          f"{fmt(fb.get('down_mbps'), '{:.0f}')} MB/s, upload {fmt(fb.get('up_mbps'), '{:.0f}')} MB/s, "
          f"{fmt(g('floor_bulk.cpu_s_per_gib'))} CPU s/GiB (client, relay and server)")
    p("")
    p(f"Head-of-line: small-request p99 (wrk -t1 -c8 -d{g('meta.hol_seconds')}s) alone and while {size_mib} MiB "
      f"transfers run back to back on the same route")
    p(f"  {'path':<8} {'quiet p99':>10} {'+download':>10} {'×quiet':>7} {'+upload':>10} {'×quiet':>7}")
    for key, name in PATHS:
        q, d, u = g(f"hol.{key}.quiet.p99_ms"), g(f"hol.{key}.down.p99_ms"), g(f"hol.{key}.up.p99_ms")
        p(f"  {name:<8} {fmt(q):>10} {fmt(d):>10} {fmt(ratio(d, q)):>7} {fmt(u):>10} {fmt(ratio(u, q)):>7}")
    p("  (ms)")
    p("")
    ws = g("ws")
    per_session = None
    still_open = None
    sessions_wanted = g("meta.sessions")
    if isinstance(ws, dict) and ws.get("sessions_opened"):
        n = ws["sessions_opened"]
        if sessions_wanted is None:
            sessions_wanted = ws.get("sessions_wanted")
        still_open = ws.get("sessions_still_open")
        before, opened, end = ws["rss_before_kib"], ws["rss_open_kib"], ws["rss_end_kib"]
        per_session = (sum(opened.values()) - sum(before.values())) / n
        per_end = (sum(end.values()) - sum(before.values())) / n
        p(f"WebSocket through Postern: {n} of {ws['sessions_wanted']} idle sessions opened in {ws['open_seconds']:.1f} s, "
          f"held {ws['held_seconds']:.0f} s, {ws['sessions_still_open']} still open at the end"
          + (f"; open errors {ws['open_errors']}" if ws["open_errors"] else ""))
        p(f"  memory per session: {per_session:.1f} KiB (RSS after open − before, summed over edge+broker+connector); "
          f"{per_end:.1f} KiB at the end of the hold")
        p("  " + ", ".join(f"{s} {(opened[s] - before[s]) / n:.1f} KiB ({(opened[s] - before[s]) / max(1, sum(opened.values()) - sum(before.values())) * 100:.0f}%)"
                           for s in before))
        p("  RSS MiB before → open: " + ", ".join(f"{s} {before[s] / 1024:.0f} → {opened[s] / 1024:.0f}" for s in before))
        if ws.get("idle_cpu_ms_per_s"):
            c = ws["idle_cpu_ms_per_s"]
            p(f"  CPU while the sessions sit idle: {sum(c.values()):.1f} ms per second ("
              + ", ".join(f"{s} {v:.1f}" for s, v in c.items()) + ")")
        p(f"  message round trip at {g('meta.rtt_rate')} msg/s for {g('meta.rtt_seconds')} s on {g('meta.rtt_sessions')} sessions: "
          f"p50 {fmt(ws['rtt_p50_ms'])} ms, p99 {fmt(ws['rtt_p99_ms'])} ms, max {fmt(ws['rtt_max_ms'])} ms "
          f"({ws['rtt_received']}/{ws['rtt_sent']} echoes, {ws['rtt_errors']} errors)")
    else:
        p("WebSocket through Postern: no result")
    p("")

    targets = []

    def target(name, value, limit, ok, shown):
        targets.append({"target": name, "value": value, "limit": limit,
                        "result": None if value is None else ("PASS" if ok else "MISS")})
        p(f"  {('PASS' if ok else 'MISS') if value is not None else 'N/A ':<5} {name:<72} {shown}")

    def at_least(name, value, limit, unit="x", note=""):
        target(name, value, limit, value is not None and value >= limit,
               f"{fmt(value)}{unit if value is not None else ''}{note}")

    def at_most(name, value, limit, unit="x", note=""):
        target(name, value, limit, value is not None and value <= limit,
               f"{fmt(value)}{unit if value is not None else ''}{note}")

    # Issue 25's list, "How it is judged".
    p("Targets (issue 25)")
    r = ratio(g("small.postern.rps"), g("small.ssh.rps"))
    at_least("small GET: Postern req/s >= 1.5x ssh -R", r, 1.5)
    p(f"  {'info':<5} {'small GET: the goal beyond issue 25 is 2x ssh -R (not a target)':<72} "
      + ("-" if r is None else f"{fmt(r)}x, {'reached' if r >= 2.0 else 'not yet'}"))
    r = ratio(g("post.postern.rps"), g("post.ssh.rps"))
    at_least("POST 4 KiB: Postern req/s >= 1x ssh -R", r, 1.0)
    r = ratio(g("small.postern.cpu_s_per_10k"), g("small.ssh.cpu_s_per_10k"))
    at_most("CPU per 10k requests <= 2x ssh -R's (small GET)", r, 2.0)
    at_most("context switches per request <= 1.5 (edge+broker+connector, small GET)",
            num(g("small.postern.ctx_per_req")), 1.5, "")
    r = ratio(g("small.postern.p99_ms"), g("small.nginx.p99_ms"))
    at_most("p99 at 64 connections <= 2x the nginx one-hop proxy's (small GET)", r, 2.0)
    r = ratio(g("bulk.postern.down_mbps"), g("bulk.ssh.down_mbps"))
    at_least("bulk download >= 1.5x ssh -R", r, 1.5, note=f" ({size_mib} MiB)")
    r = ratio(g("bulk.postern.up_mbps"), g("bulk.ssh.up_mbps"))
    at_least("bulk upload >= 1.5x ssh -R", r, 1.5, note=f" ({size_mib} MiB)")
    r = ratio(g("hol.postern.down.p99_ms"), g("hol.postern.quiet.p99_ms"))
    at_most("head-of-line: p99 during download <= 2x quiet p99", r, 2.0)
    r = ratio(g("hol.postern.up.p99_ms"), g("hol.postern.quiet.p99_ms"))
    at_most("head-of-line: p99 during upload <= 2x quiet p99", r, 2.0)
    target("idle WebSocket session <= 20 KiB (edge+broker+connector)", per_session, 20.0,
           per_session is not None and per_session <= 20.0, f"{fmt(per_session, '{:.1f}')} KiB")
    held = still_open if sessions_wanted is not None else None
    target("idle WebSocket sessions: all of meta.sessions held to the end", held, sessions_wanted,
           held is not None and held == sessions_wanted,
           f"{fmt(held, '{}')} of {fmt(sessions_wanted, '{}')}"
           + (" (BENCH_QUICK: a full run holds 10000)" if g("meta.quick") else ""))
    v = g("small.postern.frames_per_message")
    target("lane frames per gRPC message at 64 connections: median >= 4 (small GET)", v, 4,
           num(v) is not None and num(v) >= 4, f"{fmt(v, '{}')} (mean {fmt(g('small.postern.frames_per_message_mean'))})")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    open(txt_path, "w").write(text)
    json.dump({"raw": raw, "targets": targets}, open(json_path, "w"), indent=1, sort_keys=True)


async def churn_main(a):
    """Soak: `workers` WebSocket clients, each opening a session, exchanging
    `messages` echoes and closing, again and again until `seconds` pass."""
    import websockets  # Debian's python3-websockets 10.4

    kw = dict(ping_interval=None, compression=None, open_timeout=10, close_timeout=2)
    stop = time.monotonic() + a.seconds
    counts = {"sessions": 0, "messages": 0}
    errors = {}

    async def worker(w):
        n = 0
        while time.monotonic() < stop:
            n += 1
            try:
                async with websockets.connect(f"{a.url}/soak-{w}?user=w{w}", **kw) as c:
                    for i in range(a.messages):
                        await c.send(f"{w}-{n}-{i}")
                        await asyncio.wait_for(c.recv(), 10)
                        counts["messages"] += 1
                counts["sessions"] += 1
            except Exception as e:
                key = type(e).__name__
                errors[key] = errors.get(key, 0) + 1
                await asyncio.sleep(0.2)

    await asyncio.gather(*(worker(w) for w in range(a.workers)))
    print(json.dumps({"counts": counts, "errors": errors}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wrk")
    w.add_argument("file")
    w.add_argument("prefix")
    s = sub.add_parser("ws")
    s.add_argument("--url", required=True, help="ws://host:port/gateway/chat/1.0")
    s.add_argument("--sessions", type=int, default=10000)
    s.add_argument("--concurrency", type=int, default=200)
    s.add_argument("--hold", type=float, default=60)
    s.add_argument("--rtt-sessions", type=int, default=4)
    s.add_argument("--rtt-rate", type=float, default=1000)
    s.add_argument("--rtt-seconds", type=float, default=10)
    s.add_argument("--budget", type=float, default=120, help="seconds allowed for opening sessions")
    s.add_argument("--pids", required=True, help="edge=PID,broker=PID,connector=PID")
    s.add_argument("--out", required=True)
    c = sub.add_parser("churn")
    c.add_argument("--url", required=True, help="ws://host:port/gateway/chat/1.0")
    c.add_argument("--workers", type=int, default=20)
    c.add_argument("--messages", type=int, default=20)
    c.add_argument("--seconds", type=float, default=600)
    f = sub.add_parser("frames")
    f.add_argument("before", help="the three services' /metrics before the run, one after another")
    f.add_argument("after", help="the same after the run")
    f.add_argument("prefix", help="key prefix, e.g. small.postern")
    r = sub.add_parser("report")
    r.add_argument("raw")
    r.add_argument("json")
    r.add_argument("txt")
    a = ap.parse_args()
    if a.cmd == "wrk":
        parse_wrk(a.file, a.prefix)
    elif a.cmd == "ws":
        asyncio.run(ws_main(a))
    elif a.cmd == "churn":
        asyncio.run(churn_main(a))
    elif a.cmd == "frames":
        frames_main(a.before, a.after, a.prefix)
    else:
        report(a.raw, a.json, a.txt)


if __name__ == "__main__":
    main()
