#!/usr/bin/python3
"""Loads a page in headless Chromium and waits for text to appear in it.

  browser.py URL --expect TEXT [--expect TEXT ...] [--selector CSS] [--timeout S] [--chromium PATH]
             [--screenshot FILE.png]

Drives Chromium over the DevTools protocol (its WebSocket, with Debian's
python3-websockets), so the page runs in real time with real sockets. Prints
one JSON object: {"ok": true|false, "text": "<the element's innerText>", "missing": [...]}.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets


def start_chromium(path, profile):
    args = [
        path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def devtools_port(profile, proc, timeout):
    marker = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        try:
            with open(marker) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError("chromium did not open its DevTools port")


async def run(args):
    profile = tempfile.mkdtemp(prefix="postern-chromium-")
    proc = start_chromium(args.chromium, profile)
    try:
        port = devtools_port(profile, proc, 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        async with websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as cdp:
            seq = 0

            async def call(method, **params):
                nonlocal seq
                seq += 1
                await cdp.send(json.dumps({"id": seq, "method": method, "params": params}))
                while True:
                    msg = json.loads(await cdp.recv())
                    if msg.get("id") == seq:
                        return msg.get("result", {})

            await call("Page.enable")
            await call("Page.navigate", url=args.url)
            deadline = time.monotonic() + args.timeout
            text, missing = "", list(args.expect)
            while time.monotonic() < deadline:
                res = await call("Runtime.evaluate", returnByValue=True,
                                 expression=f"(document.querySelector({json.dumps(args.selector)})||{{}}).innerText||''")
                text = res.get("result", {}).get("value", "") or ""
                missing = [e for e in args.expect if e not in text]
                if not missing:
                    break
                await asyncio.sleep(0.2)
            if args.screenshot:
                import base64
                shot = await call("Page.captureScreenshot", format="png")
                with open(args.screenshot, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))
            return {"ok": not missing, "text": text, "missing": missing}
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--expect", action="append", default=[])
    p.add_argument("--selector", default="body")
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--screenshot", help="write a PNG of the page once the texts are there")
    args = p.parse_args()
    try:
        result = asyncio.run(run(args))
    except Exception as e:
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
