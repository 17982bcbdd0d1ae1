#!/usr/bin/python3
"""A small OpenTelemetry collector for tests: OTLP/HTTP with JSON bodies.

  otlp_collector.py [--hang]

Listens on 127.0.0.1 (a free port), prints
  {"msg":"listening","listener":"collector","port":N}
then, for each POST, one line
  {"msg":"export","path":"/v1/traces","content_type":"...","body":{...}}
with the request's JSON body as it arrived, and answers 200 with an empty
ExportTraceServiceResponse ({}). A body that is not JSON is answered 400.

--hang: read each request and never answer (a collector that is stuck),
to show that spans are dropped and no request waits.

Tests only: loopback, bounded by the test's own lifetime.
"""
import http.server
import json
import sys
import threading

HANG = "--hang" in sys.argv[1:]
lock = threading.Lock()


def emit(record):
    with lock:
        sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        sys.stdout.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if HANG:
            threading.Event().wait()
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        emit({"msg": "export", "path": self.path,
              "content_type": self.headers.get("Content-Type", ""), "body": body})
        answer = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
emit({"msg": "listening", "listener": "collector", "port": server.server_address[1]})
server.serve_forever()
