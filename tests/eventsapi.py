"""A real HTTP server on 127.0.0.1 that speaks Tinybird's Events API, with faults on demand.

It accepts ``POST /v0/events?name=DS[&wait=true]`` with an NDJSON body (gzip or
not), checks the ``Authorization: Bearer`` token, validates each row against the
datasource's ``.datasource`` schema (rows that do not fit are quarantined, as
Tinybird does) and answers 202 (200 with ``wait=true``) with ``successful_rows``
and ``quarantined_rows``.  Tests script faults with ``fail_next`` / ``fault``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DATASOURCES = Path(__file__).resolve().parent.parent / "tblog" / "datasources"
_COLUMN = re.compile(r"`(?P<name>\w+)`\s+(?P<type>.+?)\s+`json:(?P<path>[^`]+)`(?P<rest>[^,]*),?$")


@dataclass
class Column:
    name: str
    type: str
    path: list[str]
    has_default: bool


def load_schema(name: str) -> list[Column] | None:
    """Columns of ``tblog/datasources/<name>.datasource`` (None: accept any row)."""
    path = DATASOURCES / f"{name}.datasource"
    if not path.exists():
        return None
    columns = []
    for line in path.read_text().splitlines():
        m = _COLUMN.search(line.strip())
        if m:
            json_path = m["path"].removeprefix("$.").split(".")
            columns.append(Column(m["name"], m["type"], json_path, "DEFAULT" in m["rest"]))
    return columns


_INT_RANGES = {
    "UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1), "Int8": (-(2**7), 2**7 - 1), "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1),
}  # fmt: skip
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$")


def check_value(col: Column, value: Any) -> str | None:
    """Why ``value`` does not fit ``col``, or None when it fits."""
    base = col.type
    for wrapper in ("LowCardinality(", "Nullable("):
        if base.startswith(wrapper):
            base = base[len(wrapper) : -1]
    if value is None:
        return None if (col.has_default or col.type.startswith("Nullable")) else "null"
    if base == "String":
        return None  # objects are stored as their JSON text
    if base == "Bool":
        return None if isinstance(value, bool) else f"{value!r} is not Bool"
    if base in _INT_RANGES:
        lo, hi = _INT_RANGES[base]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"{value!r} is not {base}"
        return None
    if base.startswith(("Float", "Decimal")):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "num"
    if base.startswith("DateTime") or base == "Date":
        return None if isinstance(value, str) and _ISO.match(value) else f"bad date {value!r}"
    if base == "UUID":
        try:
            uuid.UUID(str(value))
        except ValueError:
            return f"bad uuid {value!r}"
        return None
    return None


def validate(columns: list[Column] | None, row: Any) -> str | None:
    if not isinstance(row, dict):
        return "row is not an object"
    for col in columns or ():
        value: Any = row
        for part in col.path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None and not col.has_default and not col.type.startswith("Nullable"):
            return f"missing {col.name}"
        problem = check_value(col, value)
        if problem:
            return f"{col.name}: {problem}"
    return None


@dataclass
class Fault:
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | str = field(default_factory=lambda: {"error": "injected fault"})
    delay: float = 0.0  # seconds before answering
    reset: bool = False  # close the connection without an answer
    accept: bool = False  # store the rows even though the status is an error
    close_after: bool = False  # answer normally, then drop the kept-alive connection silently
    content_type: str = "application/json"  # e.g. text/html: a proxy's or portal's page
    trickle: float = 0.0  # seconds between bytes of the answer, headers included
    on_end: Callable[[], None] | None = None  # called when a trickled answer ends or breaks


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    rows: int
    status: int


class EventsAPI:
    """The server; ``rows(ds)`` returns what arrived, ``requests`` every request seen."""

    def __init__(
        self,
        token: str = "p.test-token-0123456789abcdef",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.data: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.quarantine: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.fault: Callable[[Request], Fault | None] | None = None
        self.schemas: dict[str, list[Column] | None] = {}
        self.strict_datasources = True  # unknown datasources are created on the fly otherwise
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                api._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:  # HTTPS: the handshake happens on accept
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test API ----------------------------------------------------------------------

    def rows(self, ds: str = "tb_logs") -> list[dict[str, Any]]:
        with self.lock:
            return list(self.data[ds])

    def fail_next(self, n: int, **fault: Any) -> None:
        with self.lock:
            self.faults.extend(Fault(**fault) for _ in range(n))

    def schema(self, ds: str) -> list[Column] | None:
        if ds not in self.schemas:
            self.schemas[ds] = load_schema(ds)
        return self.schemas[ds]

    # -- the protocol ------------------------------------------------------------------

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str],
        content_type: str = "application/json",
        trickle: float = 0.0,
    ) -> None:
        raw = (body if isinstance(body, str) else json.dumps(body)).encode()
        if trickle:
            self._trickle(h, status, raw, headers, content_type, trickle)
            return
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(raw)

    def _trickle(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        raw: bytes,
        headers: dict[str, str],
        content_type: str,
        every: float,
    ) -> None:
        """The answer a byte at a time, status line first: no read on the client times out."""
        head = [f"HTTP/1.1 {status} Slow", f"Content-Type: {content_type}"]
        head += [f"Content-Length: {len(raw)}", *(f"{k}: {v}" for k, v in headers.items())]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + raw
        h.close_connection = True
        for i in range(len(data)):
            try:
                h.wfile.write(data[i : i + 1])
                h.wfile.flush()
            except OSError:  # the client gave up
                return
            time.sleep(every)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length)
        headers = dict(h.headers.items())
        req = Request(url.path, params, headers, body, 0, 0)
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is None and self.fault is not None:
            fault = self.fault(req)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.close_after:
            status, answer = self._ingest(req, store=True)
            req.status = status
            with self.lock:
                self.requests.append(req)
            self._reply(h, status, answer, fault.headers)
            h.close_connection = True  # no "Connection: close": the client keeps it pooled
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.reset:
            with self.lock:
                self.requests.append(req)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        status, answer = self._ingest(req, store=fault is None or fault.accept)
        req.status = status
        with self.lock:
            self.requests.append(req)
        if fault is not None:
            req.status = fault.status
            try:
                self._reply(
                    h, fault.status, fault.body, fault.headers, fault.content_type, fault.trickle
                )
            finally:
                if fault.on_end is not None:
                    fault.on_end()
            return
        self._reply(h, status, answer, {})

    def _ingest(self, req: Request, store: bool) -> tuple[int, dict[str, Any]]:
        if req.path != "/v0/events":
            return 404, {"error": "not found"}
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return 403, {"error": "invalid authentication token"}
        ds = req.params.get("name", "")
        if not ds:
            return 400, {"error": "name is required"}
        body = req.body
        if req.headers.get("Content-Encoding") == "gzip":
            try:
                body = gzip.decompress(body)
            except OSError:
                return 400, {"error": "invalid gzip"}
        columns = self.schema(ds)
        ok: list[dict[str, Any]] = []
        bad: list[tuple[str, Any]] = []
        for line in body.split(b"\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                bad.append((f"invalid JSON: {exc}", line[:200]))
                continue
            problem = validate(columns, row)
            (bad.append((problem, row)) if problem else ok.append(row))
        req.rows = len(ok)
        if store:
            with self.lock:
                self.data[ds].extend(ok)
                self.quarantine[ds].extend(bad)
        status = 200 if req.params.get("wait") == "true" else 202
        return status, {"successful_rows": len(ok), "quarantined_rows": len(bad)}


def free_port_refusing() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class BlackHole:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.accepted = threading.Event()  # set at each connection accepted
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self._stop = True
        self.thread.join(1)
        for c in self.conns:
            c.close()
        self.sock.close()
