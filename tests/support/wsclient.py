#!/usr/bin/python3
"""WebSocket client for the integration tests (Debian's python3-websockets).

Each command prints one JSON object on stdout, for the C++ tests to assert on.

  wsclient.py script URL [ACTION ...] [--origin O] [--subprotocol P]... [--header K:V]... [--ca FILE]
      Connects, runs the actions in order, prints what happened:
        send=TEXT         a text message
        binary=N          N random bytes as a binary message (its sha256 is reported)
        hex=HEX           these bytes as a binary message
        fragments=A,B,C   one text message sent as three frames
        ping              a ping; waits for its pong (reported as "pongs")
        recv=N            receive N messages (text, or binary as length + sha256);
                          "Server time" ticks are skipped
        slowrecv=N:S      receive N messages, pausing S seconds after each
                          (their bytes are reported as "slow_received_bytes")
        drain=S           read and drop messages until the server closes, at
                          most S seconds ("drained_bytes")
        close=CODE[:WHY]  start the closing handshake
        wait_close=S      wait up to S seconds for the server to close
        sleep=S           pause
      {"status": 101, "subprotocol": ..., "received": [...], "sent": [...],
       "close_code": ..., "close_reason": ..., "closed_after_s": ...}
      A refused upgrade: {"status": N, "headers": {...}}.

  wsclient.py broadcast URL --users a,b,c
      Connects one client per user (?user=NAME), each sends "hello from NAME",
      and each collects the broadcast lines until it has one per user.
      {"received": {"a": [...], ...}}

  wsclient.py hold URL --count N [--seconds S]
      Opens N sessions one after another and holds them open S seconds.
      {"statuses": [101, 101, 503], "retry_after": ["", "", "1"]}
"""

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import sys
import time

import websockets


def ssl_context(args, url):
    if not url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context(cafile=args.ca) if args.ca else ssl.create_default_context()
    return ctx


def connect(args, url):
    headers = []
    for h in args.header or []:
        k, _, v = h.partition(":")
        headers.append((k.strip(), v.strip()))
    return websockets.connect(
        url,
        origin=args.origin,
        subprotocols=args.subprotocol or None,
        extra_headers=headers,
        ssl=ssl_context(args, url),
        max_size=None,
        open_timeout=10,
        close_timeout=5,
        ping_interval=None,
    )


def refusal(e):
    out = {"status": getattr(e, "status_code", 0)}
    hdrs = getattr(e, "headers", None)
    if hdrs is not None:
        out["headers"] = {k.lower(): v for k, v in hdrs.raw_items()}
    return out


def describe(m):
    if isinstance(m, bytes):
        d = {"type": "binary", "len": len(m), "sha256": hashlib.sha256(m).hexdigest()}
        if len(m) <= 64:
            d["hex"] = m.hex()
        return d
    return {"type": "text", "data": m}


async def script(args):
    out = {"received": [], "sent": []}
    try:
        ws = await connect(args, args.url)
    except websockets.InvalidStatusCode as e:
        return refusal(e)
    out["status"] = 101
    out["subprotocol"] = ws.subprotocol
    started = time.monotonic()
    try:
        for action in args.actions:
            name, _, value = action.partition("=")
            if name == "send":
                await ws.send(value)
                out["sent"].append({"type": "text", "data": value})
            elif name == "binary":
                data = os.urandom(int(value))
                await ws.send(data)
                out["sent"].append(describe(data))
            elif name == "hex":
                data = bytes.fromhex(value)
                await ws.send(data)
                out["sent"].append(describe(data))
            elif name == "fragments":
                parts = value.split(",")
                await ws.send(iter(parts))
                out["sent"].append({"type": "text", "data": "".join(parts), "frames": len(parts)})
            elif name == "ping":
                waiter = await ws.ping()
                await asyncio.wait_for(waiter, 5)
                out["pongs"] = out.get("pongs", 0) + 1
            elif name == "recv":
                want = int(value)
                while want > 0:
                    m = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(m, str) and m.startswith("Server time: "):
                        continue
                    out["received"].append(describe(m))
                    want -= 1
            elif name == "slowrecv":
                # N messages, pausing S seconds after each: a client that
                # reads slower than the server sends. Counted, not described.
                n, _, pause = value.partition(":")
                got = 0
                for _ in range(int(n)):
                    m = await asyncio.wait_for(ws.recv(), 10)
                    got += len(m)
                    await asyncio.sleep(float(pause))
                out["slow_received_bytes"] = out.get("slow_received_bytes", 0) + got
            elif name == "drain":
                # Reads and drops messages until the server closes. (A
                # client that stops reading cannot see the server's close:
                # the library holds at most 32 messages.)
                async def drop():
                    n = 0
                    async for m in ws:
                        n += len(m)
                    return n

                out["drained_bytes"] = await asyncio.wait_for(drop(), float(value))
            elif name == "close":
                code, _, why = value.partition(":")
                await ws.close(int(code), why)
            elif name == "wait_close":
                try:
                    await asyncio.wait_for(ws.wait_closed(), float(value))
                except asyncio.TimeoutError:
                    out["timed_out"] = True
            elif name == "sleep":
                await asyncio.sleep(float(value))
            else:
                raise SystemExit("unknown action " + action)
    except websockets.ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        out["timed_out"] = True
    if ws.close_code is None:
        await ws.close()
    out["close_code"] = ws.close_code
    out["close_reason"] = ws.close_reason
    out["closed_after_s"] = round(time.monotonic() - started, 3)
    return out


async def broadcast(args):
    users = args.users.split(",")
    socks = {}
    for u in users:
        sep = "&" if "?" in args.url else "?"
        socks[u] = await connect(args, f"{args.url}{sep}user={u}")
    for u in users:
        await socks[u].send(f"hello from {u}")
    received = {}

    async def collect(u):
        got = []
        while len(got) < len(users):
            m = await asyncio.wait_for(socks[u].recv(), 10)
            if isinstance(m, str) and m.startswith("Message Received from"):
                got.append(m)
        received[u] = got

    await asyncio.gather(*(collect(u) for u in users))
    for s in socks.values():
        await s.close()
    return {"received": received}


async def hold(args):
    statuses, retry_after, open_ = [], [], []
    for _ in range(args.count):
        try:
            ws = await connect(args, args.url)
            open_.append(ws)
            statuses.append(101)
            retry_after.append("")
        except websockets.InvalidStatusCode as e:
            r = refusal(e)
            statuses.append(r["status"])
            retry_after.append(r.get("headers", {}).get("retry-after", ""))
    await asyncio.sleep(args.seconds)
    for ws in open_:
        await ws.close()
    return {"statuses": statuses, "retry_after": retry_after}


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("script", "broadcast", "hold"):
        s = sub.add_parser(name)
        s.add_argument("url")
        s.add_argument("--origin")
        s.add_argument("--subprotocol", action="append")
        s.add_argument("--header", action="append")
        s.add_argument("--ca")
        if name == "script":
            s.add_argument("actions", nargs="*")
        if name == "broadcast":
            s.add_argument("--users", required=True)
        if name == "hold":
            s.add_argument("--count", type=int, required=True)
            s.add_argument("--seconds", type=float, default=0.5)
    # Options go before the URL when actions follow it.
    args = p.parse_args()
    fn = {"script": script, "broadcast": broadcast, "hold": hold}[args.cmd]
    try:
        result = asyncio.run(fn(args))
    except Exception as e:  # a failure the test should see, not a traceback
        result = {"error": f"{type(e).__name__}: {e}"}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
