"""The HTTP API of ``tblog local``: the parts of Tinybird's API that tblog uses.

* ``POST /v0/events?name=DS[&wait=true]``: NDJSON (optionally gzip) -> typed rows;
  misfits go to ``DS_quarantine``.  202 (200 with ``wait=true``) with
  ``successful_rows``/``quarantined_rows``; 422 when some lines were not JSON objects
  or were too long (the valid rows are kept), 400 when no row could be kept.
* ``GET|POST /v0/sql?q=...``: read-only SQL (SELECT, WITH, DESCRIBE).
* ``GET /v0/datasources``: the datasources the token can see, with row counts.
* ``POST /v0/tokens`` (admin): create append/read tokens, optionally with a row filter.

Errors are JSON bodies ``{"error": "..."}`` as Tinybird sends them.  Tokens come from
``Authorization: Bearer`` or ``?token=`` and are never logged or echoed.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tblog.local.datafile import DatafileError, Datasource, load_datasource
from tblog.local.sqlguard import SqlRefusedError, check_sql
from tblog.local.store import QueryError, Store
from tblog.local.tokens import Token, TokenError, Tokens

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a core dependency on CPython
    _orjson = None  # type: ignore[assignment,unused-ignore]

__all__ = ["DEFAULT_DATASOURCES", "LocalServer"]

DEFAULT_DATASOURCES = Path(__file__).resolve().parent.parent / "datasources"
#: Tinybird rejects Events API requests over 10 MB (the body as sent, maybe gzipped).
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: Decompressed bytes one request may carry.
MAX_DECODED_BYTES = 512 * 1024 * 1024
#: One NDJSON line longer than this is quarantined (its first KiB is kept).
MAX_LINE_BYTES = 10 * 1024 * 1024
_CHUNK = 1024 * 1024
_ACCEPTED_TYPES = ("", "application/x-ndjson", "application/json", "application/jsonl",
                   "text/plain", "application/octet-stream",
                   "application/x-www-form-urlencoded")  # fmt: skip
_FORMATS = frozenset({"JSON", "JSONCompact", "JSONEachRow", "CSV", "CSVWithNames", "TSV",
                      "TSVWithNames", "TabSeparated", "TabSeparatedWithNames", "Pretty",
                      "PrettyCompact", "JSONStrings", "Parquet"})  # fmt: skip
_FORMAT_TAIL = re.compile(r"\bFORMAT\s+([A-Za-z]+)\s*;?\s*$", re.IGNORECASE)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message, **extra}


_loads: Callable[[bytes], Any] = getattr(_orjson, "loads", None) or json.loads


class _RateLimiter:
    """At most ``limit`` requests per one-second window (for the whole server)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._window = 0
        self._count = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        now = self.clock()
        window = int(now)
        with self._lock:
            if window != self._window:
                self._window, self._count = window, 0
            allowed = self._count < self.limit
            if allowed:
                self._count += 1
            remaining = self.limit - self._count
        reset = max(1, math.ceil(window + 1 - now))
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            headers["Retry-After"] = str(reset)
        return allowed, headers


class LocalServer:
    """A Tinybird-compatible API on ``host:port`` over a ``Store``.

    ``port=0`` picks a free port; ``url`` tells which.  ``start()`` serves from a
    daemon thread, ``serve_forever()`` from the caller's; ``close()`` stops both.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 7181,
        datasources: str | Path | None = None,
        admin_token: str | None = None,
        rate_limit: int | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.store = Store(data_dir)
        self.tokens = Tokens()
        self.admin = self.tokens.add("admin token", ["ADMIN"], value=admin_token)
        self.max_line_bytes = max_line_bytes
        self.rate_limiter = _RateLimiter(rate_limit) if rate_limit else None
        #: ``.datasource`` files that could not be loaded: (file name, error).
        self.load_errors: list[tuple[str, str]] = []
        for path in sorted(Path(datasources or DEFAULT_DATASOURCES).glob("*.datasource")):
            try:
                self.store.register(load_datasource(path))
            except (DatafileError, QueryError) as exc:  # one bad file must not stop the rest
                self.load_errors.append((path.name, str(exc)))
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}"

    @property
    def admin_token(self) -> str:
        return self.admin.value

    def set_rate_limit(self, limit: int | None, clock: Callable[[], float] = time.time) -> None:
        """Answer 429 above ``limit`` event requests per second (None: no limit)."""
        self.rate_limiter = _RateLimiter(limit, clock) if limit else None

    def add_datasource(self, datasource: Datasource) -> None:
        self.store.register(datasource)

    def create_token(self, name: str, scopes: list[str], row_filter: str | None = None) -> str:
        """A new token's value (scopes as in Tinybird: ``DATASOURCES:APPEND:tb_logs``)."""
        return self.tokens.add(name, scopes, row_filter=row_filter).value

    def start(self) -> LocalServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="tblog-local", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()
        self.store.close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------

    def authenticate(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> Token:
        header = h.headers.get("Authorization", "")
        value = header[7:].strip() if header.lower().startswith("bearer ") else ""
        value = value or (params.get("token") or [""])[0]
        if not value:
            raise _HTTPError(403, "a token is required: send Authorization: Bearer <token>")
        token = self.tokens.find(value)
        if token is None:
            raise _HTTPError(403, "invalid token")
        return token

    def events(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        token = self.authenticate(h, params)
        name = (params.get("name") or [""])[0]
        if not name:
            raise _HTTPError(400, "the name parameter is required: /v0/events?name=<datasource>")
        if name not in self.store.datasources:
            raise _HTTPError(404, f"datasource '{name}' not found")
        if not token.can_append(name):
            raise _HTTPError(403, f"the token has no DATASOURCES:APPEND scope on '{name}'")
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype not in _ACCEPTED_TYPES:
            raise _HTTPError(415, f"unsupported Content-Type '{ctype}': send NDJSON "
                                  "(application/x-ndjson)")  # fmt: skip
        objects: list[Any] = []
        bad: list[tuple[str, str]] = []
        for lineno, line, size in self._lines(h):
            if size > self.max_line_bytes:
                bad.append((line.decode("utf-8", "replace"),
                            f"line {lineno}: row of {size} bytes exceeds the "
                            f"{self.max_line_bytes}-byte limit"))  # fmt: skip
                continue
            try:
                objects.append(_loads(line))
            except ValueError as exc:
                bad.append((line.decode("utf-8", "replace"),
                            f"line {lineno}: invalid JSON ({exc})"))  # fmt: skip
        wait = (params.get("wait") or ["false"])[0].lower() in ("true", "1")
        result = self.store.ingest(
            name, objects, bad_lines=bad, row_filter=token.row_filter, wait=wait
        )
        body: dict[str, Any] = {
            "successful_rows": result.successful_rows,
            "quarantined_rows": result.quarantined_rows,
        }
        if result.rejected_rows:
            body["rejected_rows"] = result.rejected_rows
            body["error"] = (f"{result.rejected_rows} rows are outside the token's row filter "
                             f"({token.row_filter}) and were rejected")  # fmt: skip
            return (403 if not result.successful_rows else 422), body
        if bad:
            body["error"] = "; ".join(e for _, e in bad[:3]) + (
                f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            )
            return (400 if not result.successful_rows else 422), body
        return (200 if wait else 202), body

    def _lines(self, h: BaseHTTPRequestHandler) -> Iterator[tuple[int, bytes, int]]:
        """(line number, line, full size) of the body; over-long lines keep 1 KiB only."""
        length_header = h.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            raise _HTTPError(411, "Content-Length is required")
        length = int(length_header)
        if length > MAX_REQUEST_BYTES:
            h.close_connection = True
            limit = MAX_REQUEST_BYTES
            raise _HTTPError(
                413, f"request body of {length} bytes exceeds the {limit}-byte limit; send less"
            )
        encoding = h.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            raise _HTTPError(415, f"unsupported Content-Encoding '{encoding}' (use gzip)")
        raw = h.rfile.read(length)
        chunks = self._decoded(raw) if encoding == "gzip" else iter((raw,))
        buf = bytearray()
        lineno = 0
        overflow = 0  # bytes of the current line beyond what was kept
        for chunk in chunks:
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                piece = chunk[start:] if nl < 0 else chunk[start:nl]
                if overflow or len(buf) + len(piece) > self.max_line_bytes:
                    if len(buf) > 1024:  # keep only the head of an over-long line
                        overflow += len(buf) - 1024
                        del buf[1024:]
                    room = max(0, 1024 - len(buf))
                    buf += piece[:room]
                    overflow += len(piece) - min(room, len(piece))
                else:
                    buf += piece
                if nl < 0:
                    break
                lineno += 1
                if buf.strip():
                    yield lineno, bytes(buf), len(buf) + overflow
                buf.clear()
                overflow = 0
                start = nl + 1
        if buf.strip():
            yield lineno + 1, bytes(buf), len(buf) + overflow

    @staticmethod
    def _decoded(raw: bytes) -> Iterator[bytes]:
        decomp = zlib.decompressobj(31)
        total = 0
        data = raw
        try:
            while data:
                out = decomp.decompress(data, _CHUNK)
                data = decomp.unconsumed_tail
                total += len(out)
                if total > MAX_DECODED_BYTES:
                    raise _HTTPError(413, f"the body decompresses to more than "
                                          f"{MAX_DECODED_BYTES} bytes")  # fmt: skip
                yield out
            tail = decomp.flush()
            if not decomp.eof:
                raise _HTTPError(400, "the gzip body is truncated")
            yield tail
        except zlib.error as exc:
            raise _HTTPError(400, f"the body is not valid gzip ({exc})") from None

    def sql(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, bytes]:
        token = self.authenticate(h, params)
        query = (params.get("q") or [""])[0]
        if not query and h.command == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                raise _HTTPError(413, "the query is too long")
            body = h.rfile.read(length).decode("utf-8", "replace")
            form = parse_qs(body) if "=" in body.split("\n", 1)[0] else {}
            query = (form.get("q") or [body])[0]
        if not query.strip():
            raise _HTTPError(400, "the q parameter is required: /v0/sql?q=SELECT ...")
        fmt = "JSON"
        m = _FORMAT_TAIL.search(query)
        if m:
            fmt = next((f for f in _FORMATS if f.lower() == m.group(1).lower()), "")
            if not fmt:
                raise _HTTPError(400, f"unsupported FORMAT {m.group(1)}")
            query = query[: m.start()]
        try:
            tables = check_sql(query, self.store.explain_ast)
        except SqlRefusedError as exc:
            raise _HTTPError(exc.status, str(exc)) from None
        known = {t for n in self.store.datasources for t in (n, f"{n}_quarantine")}
        for table in tables:
            if table in known and not token.can_read(table.removesuffix("_quarantine")):
                raise _HTTPError(403, f"the token has no DATASOURCES:READ scope on '{table}'")
        if token.admin:
            database = "default"
        else:
            readable: dict[str, str | None] = {}
            for name in self.store.datasources:
                if token.can_read(name):
                    readable[name] = token.row_filter
                    readable[f"{name}_quarantine"] = token.row_filter
            database = self.store.token_database(token.value, readable)
        try:
            return 200, self.store.query(query.rstrip().rstrip(";"), fmt, database)
        except QueryError as exc:
            raise _HTTPError(400, f"[Error] {exc}") from None

    def list_datasources(
        self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]
    ) -> tuple[int, Any]:
        token = self.authenticate(h, params)
        counts = self.store.row_counts()
        out = []
        for name, ds in sorted(self.store.datasources.items()):
            if not (token.can_read(name) or token.can_append(name)):
                continue
            rows, size = counts.get(name, (0, 0))
            out.append({
                "name": name,
                "description": ds.description,
                "engine": {"engine": ds.engine, **ds.engine_args},
                "columns": [{"name": c.name, "type": c.type, "jsonpath": c.jsonpath,
                             "default_value": c.default_expr} for c in ds.columns],
                "statistics": {"row_count": rows, "bytes": size},
                "quarantine_rows": counts.get(f"{name}_quarantine", (0, 0))[0],
            })  # fmt: skip
        return 200, {"datasources": out}

    def new_token(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        token = self.authenticate(h, params)
        if not token.admin:
            raise _HTTPError(403, "creating tokens needs an ADMIN token")
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            for key, values in parse_qs(h.rfile.read(min(length, 65536)).decode()).items():
                params.setdefault(key, []).extend(values)
        try:
            made = self.tokens.add(
                (params.get("name") or ["token"])[0],
                params.get("scope") or [],
                row_filter=(params.get("filter") or [""])[0],
            )
        except TokenError as exc:
            raise _HTTPError(400, str(exc)) from None
        return 200, {"name": made.name, "token": made.value, "scopes": made.scopes(),
                     "filter": made.row_filter}  # fmt: skip


def _make_handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    routes = {
        ("POST", "/v0/events"): server.events,
        ("GET", "/v0/sql"): server.sql,
        ("POST", "/v0/sql"): server.sql,
        ("GET", "/v0/datasources"): server.list_datasources,
        ("POST", "/v0/tokens"): server.new_token,
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave in two writes
        server_version = "tblog-local"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines carry ?token=...; never log them

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            route = routes.get((self.command, parts.path.rstrip("/")))
            headers: dict[str, str] = {}
            try:
                if route is None:
                    raise _HTTPError(404, f"no such endpoint: {self.command} {parts.path}")
                if route == server.events and server.rate_limiter is not None:
                    allowed, headers = server.rate_limiter.take()
                    if not allowed:
                        self.close_connection = True
                        raise _HTTPError(429, "too many requests: rate limit exceeded")
                status, body = route(self, params)
            except _HTTPError as exc:
                status, body = exc.status, exc.body
                if status >= 400 and self.command == "POST":
                    self.close_connection = True  # the body may be unread
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the server
                status, body = 500, {"error": f"internal error: {type(exc).__name__}"}
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            ctype = "application/json" if payload[:1] in (b"{", b"[") else "text/plain"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

    return Handler
