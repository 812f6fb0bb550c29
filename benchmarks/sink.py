"""A loopback HTTP sink for the benchmarks, run in its own process.

It accepts the wire protocol of every measured shipper, each on its own path, and counts the
rows it decodes per protocol, so a benchmark can check what arrived without the sink's parsing
being charged to the process under measurement:

* ``tinybird``: ``/v0/events`` (tblog and the Tinybird SDK), NDJSON lines, gzip or not;
  answered ``202 {"successful_rows": n, ...}`` as the Events API does.
* ``logtail``: ``/logtail`` (logtail-python), a msgpack array of records; answered 202.
* ``logtide``: ``/api/v1/ingest`` (logtide-sdk), JSON ``{"logs": [...]}``; answered 200.
* ``otlp``: ``/v1/logs`` (OpenTelemetry's OTLP/HTTP exporter), a protobuf
  ``ExportLogsServiceRequest`` whose log records are counted; answered 200 with an empty
  ``ExportLogsServiceResponse``.

A body that does not decode is answered 400 and counted under ``rejected``; an unknown path is
answered 404.  ``GET /count`` returns ``{"rows": total, "protocols": {...}, "requests": {...},
"rejected": n}``.  ``--status 429`` makes it answer every POST with 429 and ``Retry-After: 1``
instead (a rate-limit storm); those requests are still counted under ``requests``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS: dict[str, str] = {
    "/v0/events": "tinybird",
    "/logtail": "logtail",
    "/api/v1/ingest": "logtide",
    "/v1/logs": "otlp",
}
PROTOCOLS = tuple(PATHS.values())

_rows: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
_requests: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
_rejected = 0
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
        self._answer_raw(code, json.dumps(body).encode(), "application/json", headers)

    def _answer_raw(
        self, code: int, raw: bytes, content_type: str, headers: dict[str, str]
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


def _ndjson_rows(body: bytes) -> int:
    return body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)


def _msgpack_rows(body: bytes) -> int:
    import msgpack  # logtail-python's own dependency

    records = msgpack.unpackb(body, raw=False)
    if not isinstance(records, list):
        raise ValueError("logtail sends a msgpack array")
    return len(records)


def _logtide_rows(body: bytes) -> int:
    logs = json.loads(body)["logs"]
    if not isinstance(logs, list):
        raise ValueError("logtide sends {'logs': [...]}")
    return len(logs)


def _otlp_rows(body: bytes) -> int:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    request = ExportLogsServiceRequest.FromString(body)
    return sum(
        len(scope.log_records)
        for resource in request.resource_logs
        for scope in resource.scope_logs
    )


DECODERS: dict[str, Callable[[bytes], int]] = {
    "tinybird": _ndjson_rows,
    "logtail": _msgpack_rows,
    "logtide": _logtide_rows,
    "otlp": _otlp_rows,
}


def _inflate(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _accept(protocol: str, n: int) -> tuple[int, bytes, str]:
    """The answer each real service gives to a good request: (status, body, content type)."""
    if protocol == "tinybird":
        body = json.dumps({"successful_rows": n, "quarantined_rows": 0}).encode()
        return 202, body, "application/json"
    if protocol == "logtail":
        return 202, b"", "text/plain"
    if protocol == "logtide":
        return 200, json.dumps({"received": n}).encode(), "application/json"
    return 200, b"", "application/x-protobuf"  # an empty ExportLogsServiceResponse


class QuietServer(ThreadingHTTPServer):
    """A threading server that does not print a traceback when a client drops its connection
    (a measured process killed mid-request, a peer that gives up on its own timeout)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


def serve(port: int, status: int) -> None:
    class Handler(JSONHandler):
        def do_GET(self) -> None:
            with _lock:
                body = {
                    "rows": sum(_rows.values()),
                    "protocols": dict(_rows),
                    "requests": dict(_requests),
                    "rejected": _rejected,
                }
            self._answer(200, body, {})

        def do_POST(self) -> None:
            global _rejected
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            protocol = PATHS.get(self.path.split("?", 1)[0])
            if protocol is None:
                self._answer(404, {"error": f"no protocol at {self.path}"}, {})
                return
            with _lock:
                _requests[protocol] += 1
            if status != 202:
                self._answer(status, {"error": "rate limited"}, {"Retry-After": "1"})
                return
            try:
                n = DECODERS[protocol](_inflate(body, self.headers.get("Content-Encoding")))
            except Exception as exc:  # noqa: BLE001 - a body that does not decode is rejected
                with _lock:
                    _rejected += 1
                self._answer(400, {"error": f"{type(exc).__name__}: {exc}"[:200]}, {})
                return
            with _lock:
                _rows[protocol] += n
            code, raw, content_type = _accept(protocol, n)
            self._answer_raw(code, raw, content_type, {})

    server = QuietServer(("127.0.0.1", port), Handler)
    server.request_queue_size = 128  # the Tinybird SDK opens a connection per record
    print(server.server_port, flush=True)
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=202)
    args = parser.parse_args()
    serve(args.port, args.status)
