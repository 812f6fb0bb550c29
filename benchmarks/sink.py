"""A loopback HTTP sink for the benchmarks, run in its own process.

It answers ``202 {"successful_rows": n}`` to every POST (counting NDJSON rows, gzip or not) and
``GET /count`` with the number of rows seen, so a benchmark can check what arrived without
the sink's parsing being charged to the process under measurement. ``--status 429`` makes it
answer every POST with 429 and ``Retry-After: 1`` instead (a rate-limit storm).
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_rows = 0
_lock = threading.Lock()


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler that answers JSON (the benchmarks' loopback servers)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm holds
    # the body until the client's delayed ACK (40 ms), which would cap every client.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, code: int, body: Any, headers: dict[str, str]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


def serve(port: int, status: int) -> None:
    class Handler(JSONHandler):
        def do_GET(self) -> None:
            self._answer(200, {"rows": _rows}, {})

        def do_POST(self) -> None:
            global _rows
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if status != 202:
                self._answer(status, {"error": "rate limited"}, {"Retry-After": "1"})
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            n = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
            with _lock:
                _rows += n
            self._answer(202, {"successful_rows": n, "quarantined_rows": 0}, {})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_port, flush=True)
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=202)
    args = parser.parse_args()
    serve(args.port, args.status)
