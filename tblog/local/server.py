"""The HTTP API of ``tblog local``: the parts of Tinybird's API that tblog uses.

* ``POST /v0/events?name=DS[&wait=true]``: NDJSON (optionally gzip) -> typed rows;
  misfits go to ``DS_quarantine``.  202 (200 with ``wait=true``) with
  ``successful_rows``/``quarantined_rows``; 422 when some lines were not JSON objects
  or were too long (the valid rows are kept), 400 when no row could be kept; rows
  outside the token's row filter are counted in ``rejected_rows`` (403 when no row was
  kept, else 422).
* ``GET|POST /v0/sql?q=...``: read-only SQL (SELECT, WITH, DESCRIBE).
* ``GET /v0/datasources``: the datasources the token can see, with row counts (of the
  token's own rows when it has a row filter).
* ``POST /v0/tokens`` (admin): create tokens (Tinybird's scopes, see ``tokens``) from a
  form/query string or a JSON body (``tokens.json_request``), optionally with a row
  filter and an ``expiration_time``.
* ``GET /v0/workspace``, ``GET /v0/tokens[/NAME]``: see ``workspace_api``; the rest of
  the Data Sources API (``/v0/datasources/NAME``, create, append, truncate, delete,
  ``/v1/datasources/NAME/append``): see ``datasources_api``; ``GET /v0/jobs[/ID]`` (the
  jobs those hand out): see ``jobs_api``.
  Tokens are kept in the data dir (``tokens.json``, 0600): a restart accepts them, and
  the same admin token unless ``admin_token`` is given.  One server per data dir: a
  second one fails with ``tblog.local.datadir.DataDirInUseError``.
* ``GET /`` (and ``/ui/app.js``, ``/ui/app.css``): the web view of ``tblog.ui``, static
  files needing no token; the page reads through ``/v0/sql`` with the token it is given.

Errors are JSON bodies ``{"error": "..."}`` as Tinybird sends them.  Tokens come from
``Authorization: Bearer`` or ``?token=`` and are never logged or echoed; nor are row filters.

Hostile clients are expected (the options are ``LocalServer`` arguments and CLI flags):

* Bodies need one plain ``Content-Length`` (400 when negative, not a number, or several
  that differ; 411 for chunked bodies) of at most ``max_request_bytes`` (10 MiB, 413).
  A gzip body is checked (valid, at most ``max_decoded_bytes`` = 128 MiB once decoded,
  else 413) in a first pass before any row is stored.
* Memory per request is bounded, whatever the body: it holds the body as sent (<= 10
  MiB), one 1 MiB decoded chunk, one line (<= ``max_line_bytes``, 10 MiB; a longer one
  keeps its first KiB, for quarantine) and one batch of rows (<= 5000 rows and <= 16 MiB
  as parsed, estimated by ``_parse_cost``; a line that would take more than 64 MiB once
  parsed is quarantined), each INSERT cut at 1 MiB of JSON.  Measured: ~20 MiB for a
  flood of tiny rows (64 KiB of ``{}`` lines, or a gzip bomb of millions of them), and
  ~16x ``max_line_bytes`` (~160 MiB) for one maximal row, its copies on the way to chDB
  included.  At most 4 requests parse at once (the others wait for a slot) and at most
  ``max_connections`` (32) are served at once (one more gets a quick 503 with
  ``Retry-After: 1``).  chDB's own memory (merging the parts that batches write, up to
  ~300 MiB after a million rows) comes on top.
* A client has ``timeout`` seconds (30) to send a whole request, whatever its pace (a
  slowloris is dropped), and to start the next one on a kept-alive connection.
* Tokens with a row filter: every row is judged before it is stored, in the main table
  or in quarantine (where it is judged on the quarantine record, as the tenant's view of
  that table would show it); a row the filter does not pass, or cannot judge, is rejected
  and counted in ``rejected_rows``.  ``/v0/datasources`` shows such tokens the counts of
  their rows only (and no byte size).
* Against DNS rebinding, the Host header must name the server (a loopback name or
  address, the bind address, any address when bound to 0.0.0.0, or ``allowed_hosts``):
  421 otherwise.  A request with an ``Origin`` header is refused (403) unless the origin
  is in ``allowed_origins`` (then CORS headers allow it); none is, by default.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import json
import math
import queue
import re
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tblog._closing import Serving
from tblog.local import compat_api, datasources_api, jobs_api, pipes_api, workspace_api
from tblog.local.datafile import DatafileError, Datasource, load_datasource
from tblog.local.sqlguard import SqlRefusedError, verify_sql
from tblog.local.store import QueryError, QueryLimits, Store
from tblog.local.tokens import TOKENS_FILE, Token, TokenError, Tokens, json_request
from tblog.ui import ASSETS, Asset, asset

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a core dependency on CPython
    _orjson = None  # type: ignore[assignment,unused-ignore]

__all__ = ["DEFAULT_DATASOURCES", "LocalServer"]

DEFAULT_DATASOURCES = Path(__file__).resolve().parent.parent / "datasources"
#: Tinybird rejects Events API requests over 10 MB (the body as sent, maybe gzipped).
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: Decompressed bytes one request may carry: above Tinybird's largest documented request
#: (100 MB on paid plans), far below what would hurt the machine.
MAX_DECODED_BYTES = 128 * 1024 * 1024
#: One NDJSON line longer than this is quarantined (its first KiB is kept).
MAX_LINE_BYTES = 10 * 1024 * 1024
#: A line whose parsed form would take more (see ``_parse_cost``) is quarantined.
MAX_LINE_COST = 64 * 1024 * 1024
#: Rows parsed and stored together: at most this many rows, or this many bytes as parsed.
BATCH_ROWS = 5000
BATCH_COST = 16 * 1024 * 1024
#: Requests parsing and storing rows at once (the others wait for a slot).
INGEST_SLOTS = 4
#: Seconds a client has to send a whole request (or to start the next one on a kept-alive
#: connection), and to take an answer; then the connection is closed.
TIMEOUT = 30.0
#: Connections served at once; one more gets a quick 503 with Retry-After.
MAX_CONNECTIONS = 32
_CHUNK = 1024 * 1024
_VALUE_COST = 96
_DIGITS = re.compile(r"[0-9]{1,19}")
_ACCEPTED_TYPES = ("", "application/x-ndjson", "application/json", "application/jsonl",
                   "text/plain", "application/octet-stream",
                   "application/x-www-form-urlencoded")  # fmt: skip
_FORMATS = frozenset({"JSON", "JSONCompact", "JSONEachRow", "CSV", "CSVWithNames", "TSV",
                      "TSVWithNames", "TabSeparated", "TabSeparatedWithNames", "Pretty",
                      "PrettyCompact", "JSONStrings", "Parquet"})  # fmt: skip
_FORMAT_TAIL = re.compile(r"\bFORMAT\s+([A-Za-z]+)\s*;?\s*$", re.IGNORECASE)
#: Where ClickHouse starts repeating the query (its per-token database, the server's
#: SETTINGS, the token's row filter): cut from there in errors sent to clients.
_ERROR_TAILS = (" In scope ", ": while executing", "(in query:")
_ERROR_CODE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
_TOKEN_DB = re.compile(r"\btok_[0-9a-f]{16}\.?")


PatternRoute = tuple[str, "re.Pattern[str]", Callable[..., tuple[int, Any]]]
"""A route whose path holds names: (method, compiled pattern of the whole path, handler)."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message, **extra}


_loads: Callable[[bytes], Any] = getattr(_orjson, "loads", None) or json.loads


def _content_length(h: BaseHTTPRequestHandler) -> int | None:
    """The request's Content-Length (None when absent); 400 when it is not one plain
    non-negative decimal number (several differing headers included)."""
    values = {v.strip() for v in h.headers.get_all("Content-Length") or []}
    if not values:
        return None
    value = values.pop()
    if values or not _DIGITS.fullmatch(value):
        h.close_connection = True
        raise _HTTPError(400, "invalid Content-Length: send one non-negative decimal number")
    return int(value)


def _client_error(message: str) -> str:
    """ClickHouse's error without the query it repeats (see ``_ERROR_TAILS``); its error
    code name, when it ends with one, is kept."""
    cut = min((i for t in _ERROR_TAILS if (i := message.find(t)) >= 0), default=-1)
    if cut < 0:
        return _TOKEN_DB.sub("", message)
    code = _ERROR_CODE.search(message[cut:])
    text = message[:cut].rstrip(" .:;,")
    return _TOKEN_DB.sub("", text + (f". ({code.group(1)})" if code else ""))


#: CORS, for an allowed origin: the methods a page may use (a preflight names one) and the
#: answer headers it may read (rate limits, as Tinybird's Events API sends them).
_CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
_CORS_EXPOSED = "Retry-After, X-Ratelimit-Limit, X-Ratelimit-Remaining, X-Ratelimit-Reset"
_FORM_BODY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _sql_form(content_type: str | None, body: str) -> dict[str, list[str]]:
    """The parameters of a ``/v0/sql`` POST body: a form for a form Content-Type (and, with
    none, for a body that reads as one with a ``q``); any other type's body is the query
    (a ``text/plain`` query holding ``&q=`` stays a query)."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype not in ("application/x-www-form-urlencoded", "") or not _FORM_BODY.match(body):
        return {}
    form = parse_qs(body)
    return form if "q" in form else {}


def _parse_cost(line: bytes) -> int:
    """About how many bytes ``line`` takes once parsed into Python objects: its size plus
    ``_VALUE_COST`` per JSON value (a ``[{},{},...]`` line grows ~30x when parsed)."""
    values = line.count(b",") + line.count(b":") + line.count(b"[") + line.count(b"{")
    return len(line) + _VALUE_COST * (values + 1)


def _lines(chunks: Iterator[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line, full size) of the body; over-long lines keep 1 KiB only."""
    buf = bytearray()
    lineno = 0
    overflow = 0  # bytes of the current line beyond what was kept
    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if overflow or len(buf) + len(piece) > max_line_bytes:
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


class LocalServer(Serving):
    """A Tinybird-compatible API on ``host:port`` over a ``Store``.

    ``port=0`` picks a free port; ``url`` tells which.  ``start()`` serves from a
    daemon thread, ``serve_forever()`` from the caller's; ``close()`` stops both.
    """

    _thread_name = "tblog-local"

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
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
        timeout: float | None = TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        query_timeout: float = QueryLimits.max_execution_time,
        query_max_memory: int = QueryLimits.max_memory_usage,
        query_max_rows: int = QueryLimits.max_result_rows,
        query_max_bytes: int = QueryLimits.max_result_bytes,
        max_server_memory: int | None = None,
    ) -> None:
        self.store = Store(data_dir, max_server_memory=max_server_memory)
        # Set by the server on every /v0/sql query (the query text cannot change them).
        self.store.limits = QueryLimits(query_timeout, query_max_memory, query_max_rows,
                                        query_max_bytes)  # fmt: skip
        try:  # the tokens are kept in the data dir: a restart accepts the same ones
            self.tokens = Tokens(self.store.data_dir / TOKENS_FILE)
            self.admin = self.tokens.admin(admin_token)
        except BaseException:
            self.store.close()  # and with it the data dir's lock
            raise
        # Routes with names in their paths (``/v0/datasources/NAME``): (method, pattern,
        # handler); the handler is called as ``handler(request, params, *groups)``.
        self.pattern_routes: list[PatternRoute] = []
        self.pattern_routes += compat_api.routes(self)  # GET /tokens for `tb --local`
        self.pattern_routes += workspace_api.routes(self)  # /v0/workspace, /v0/tokens
        self.max_line_bytes = max_line_bytes
        self.max_line_cost = MAX_LINE_COST
        self.max_request_bytes = max_request_bytes
        self.max_decoded_bytes = max_decoded_bytes
        self.batch_rows = BATCH_ROWS
        self.batch_cost = BATCH_COST
        self._ingest_slots = threading.BoundedSemaphore(INGEST_SLOTS)
        #: Seconds a client has to send a request (None: no limit); read on each request.
        self.timeout = timeout
        #: Connections served at once; more get a 503 (read on each connection).
        self.max_connections = max_connections
        #: Host header names served besides loopback names and the bind address ("*": any).
        self.allowed_hosts: set[str] = {h.strip().lower() for h in allowed_hosts}
        #: Origin header values served (none by default: browsers' cross-site requests fail).
        self.allowed_origins: set[str] = {o.strip() for o in allowed_origins}
        self.rate_limiter = _RateLimiter(rate_limit) if rate_limit else None
        #: ``.datasource`` files that could not be loaded: (file name, error).
        self.load_errors: list[tuple[str, str]] = []
        for path in sorted(Path(datasources or DEFAULT_DATASOURCES).glob("*.datasource")):
            try:
                self.store.register(load_datasource(path))
            except (DatafileError, QueryError) as exc:  # one bad file must not stop the rest
                self.load_errors.append((path.name, str(exc)))
        self.pattern_routes += datasources_api.routes(self)  # + those made through the API
        self.pipes = pipes_api.PipesApi(self)  # /v0/pipes; loads tblog/pipes/*.pipe
        self.pattern_routes += self.pipes.routes()
        self.pattern_routes += jobs_api.routes(self)  # /v0/jobs[/ID]: the API's jobs
        try:
            self._httpd = _Server((host, port), _make_handler(self), self)
        except BaseException:
            self.store.close()
            raise

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

    def close(self) -> None:
        super().close()
        self.store.close()

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
        if name not in self.store.datasources:  # no schema inference: see datasources_api
            raise _HTTPError(404, f"datasource '{name}' not found: tblog local does not infer "
                                  "a schema from events; create it first (a .datasource file, "
                                  "or POST /v0/datasources?name=...&schema=...)")  # fmt: skip
        if not token.can_append(name):
            raise _HTTPError(403, f"the token has no DATASOURCES:APPEND scope on '{name}'")
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype not in _ACCEPTED_TYPES:
            raise _HTTPError(415, f"unsupported Content-Type '{ctype}': send NDJSON "
                                  "(application/x-ndjson)")  # fmt: skip
        raw, gzipped = self._body(h)
        wait = (params.get("wait") or ["false"])[0].lower() in ("true", "1")
        with self._ingest_slots:
            return self._ingest(name, token, raw, gzipped, wait)

    def _ingest(self, name: str, token: Token, raw: bytes, gzipped: bool,
                wait: bool) -> tuple[int, Any]:  # fmt: skip
        """Parse and store ``raw`` in batches of ``batch_rows`` rows or ``batch_cost`` bytes
        (estimated as parsed), so that memory stays bounded whatever the body holds."""
        if gzipped:  # a first pass, before any row is stored: valid gzip, decoded size
            for _ in self._decoded(raw):
                pass
        elif len(raw) > self.max_decoded_bytes:
            raise _HTTPError(413, f"the body is over the {self.max_decoded_bytes}-byte limit")
        totals = [0, 0, 0]  # successful, quarantined, rejected
        errors: list[str] = []
        bad_count = 0
        objects: list[Any] = []
        bad: list[tuple[str, str]] = []
        cost = 0

        def store() -> None:
            if not (objects or bad):
                return
            result = self.store.ingest(
                name, objects, bad_lines=bad, row_filter=token.row_filter, wait=wait
            )
            totals[0] += result.successful_rows
            totals[1] += result.quarantined_rows
            totals[2] += result.rejected_rows
            objects.clear()
            bad.clear()

        chunks = self._decoded(raw) if gzipped else iter((raw,))
        for lineno, line, size in _lines(chunks, self.max_line_bytes):
            line_cost = _parse_cost(line)
            error = None
            shown = line  # what quarantine keeps of a bad line
            if size > self.max_line_bytes:
                error = (f"line {lineno}: row of {size} bytes exceeds the "
                         f"{self.max_line_bytes}-byte limit")  # fmt: skip
            elif line_cost > self.max_line_cost:
                error = f"line {lineno}: the row holds too many JSON values to parse"
                shown = line[:1024]
            else:
                if cost + line_cost > self.batch_cost and (objects or bad):
                    store()
                    cost = 0
                try:
                    objects.append(_loads(line))
                except ValueError as exc:
                    error = f"line {lineno}: invalid JSON ({exc})"
            if error is not None:
                bad_count += 1
                if len(errors) < 3:
                    errors.append(error)
                bad.append((shown.decode("utf-8", "replace"), error))
            cost += line_cost
            if len(objects) + len(bad) >= self.batch_rows or cost >= self.batch_cost:
                store()
                cost = 0
        store()
        successful, quarantined, rejected = totals
        body: dict[str, Any] = {"successful_rows": successful, "quarantined_rows": quarantined}
        if rejected:
            body["rejected_rows"] = rejected
            body["error"] = f"{rejected} rows are outside the token's row filter and were rejected"
            return (403 if not successful else 422), body
        if bad_count:
            body["error"] = "; ".join(errors) + (
                f" (and {bad_count - 3} more)" if bad_count > 3 else ""
            )
            return (400 if not successful else 422), body
        return (200 if wait else 202), body

    def _body(self, h: BaseHTTPRequestHandler) -> tuple[bytes, bool]:
        """The request body as sent (at most ``max_request_bytes``) and whether it is gzip."""
        length = _content_length(h)
        if length is None:
            raise _HTTPError(411, "Content-Length is required")
        if length > self.max_request_bytes:
            h.close_connection = True
            limit = self.max_request_bytes
            raise _HTTPError(
                413, f"request body of {length} bytes exceeds the {limit}-byte limit; send less"
            )
        encoding = h.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            raise _HTTPError(415, f"unsupported Content-Encoding '{encoding}' (use gzip)")
        raw = h.rfile.read(length)
        if len(raw) < length:
            h.close_connection = True
            raise _HTTPError(400, "the body is shorter than its Content-Length")
        return raw, encoding == "gzip"

    def _decoded(self, raw: bytes) -> Iterator[bytes]:
        """``raw`` gunzipped in chunks of at most 1 MiB (every member of a multi-member
        body); 413 past ``max_decoded_bytes``, 400 when it is not complete, valid gzip."""
        limit = self.max_decoded_bytes
        total = 0
        data = raw
        try:
            while True:
                decomp = zlib.decompressobj(31)
                while not decomp.eof:
                    out = decomp.decompress(data, _CHUNK)
                    data = decomp.unconsumed_tail
                    total += len(out)
                    if total > limit:
                        raise _HTTPError(413, f"the body decompresses to more than {limit} "
                                              "bytes; send less per request")  # fmt: skip
                    if out:
                        yield out
                    elif not data and not decomp.eof:
                        raise _HTTPError(400, "the gzip body is truncated")
                data = decomp.unused_data
                if not data.strip(b"\0"):  # trailing zero padding is allowed
                    return
        except zlib.error as exc:
            raise _HTTPError(400, f"the body is not valid gzip ({exc})") from None

    def sql(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, bytes]:
        token = self.authenticate(h, params)
        query = (params.get("q") or [""])[0]
        if h.command == "POST":  # read even when unused: left unread it is a next request
            length = _content_length(h) or 0
            if length > MAX_REQUEST_BYTES:
                raise _HTTPError(413, "the query is too long")
            body = h.rfile.read(length).decode("utf-8", "replace")
            form = _sql_form(h.headers.get("Content-Type"), body)
            for key, values in form.items():  # the URL's parameters win
                params.setdefault(key, values)
            if not query:
                query = (form.get("q") or [body])[0]
        quote = (params.get("output_format_json_quote_64bit_integers") or ["0"])[0].strip()
        if quote not in ("0", "1"):
            raise _HTTPError(400, "output_format_json_quote_64bit_integers must be 0 or 1")
        if not query.strip():
            raise _HTTPError(400, "the q parameter is required: /v0/sql?q=SELECT ...")
        fmt = "JSON"
        m = _FORMAT_TAIL.search(query)
        if m:
            fmt = next((f for f in _FORMATS if f.lower() == m.group(1).lower()), "")
            if not fmt:
                raise _HTTPError(400, f"unsupported FORMAT {m.group(1)}")
            query = query[: m.start()]
        known = {t for n in self.store.datasources for t in (n, f"{n}_quarantine")}
        readable: dict[str, str | None] = {}
        for name in self.store.datasources:
            if token.can_read(name):
                readable[name] = readable[f"{name}_quarantine"] = token.row_filter
        database = "default" if token.admin else Store.token_database_name(token.value, readable)
        try:  # nothing reaches chDB before sqlglot has proved it a harmless SELECT
            verified = verify_sql(query, readable, database, known=known)
        except SqlRefusedError as exc:
            raise _HTTPError(exc.status, str(exc)) from None
        if not token.admin:
            self.store.token_database(token.value, readable)
        try:
            return 200, self.store.query(verified.sql, fmt, quote_64bit=quote == "1")
        except QueryError as exc:
            raise _HTTPError(400, f"[Error] {_client_error(str(exc))}") from None

    def list_datasources(
        self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]
    ) -> tuple[int, Any]:
        token = self.authenticate(h, params)
        counts = self.store.row_counts()
        times = self.store.table_times()  # Tinybird's created_at/updated_at
        out = []
        for name, ds in sorted(self.store.datasources.items()):
            if not (token.can_read(name) or token.can_append(name)):
                continue
            rows: int | None = counts.get(name, (0, 0))[0]
            size: int | None = counts.get(name, (0, 0))[1]
            quarantined: int | None = counts.get(f"{name}_quarantine", (0, 0))[0]
            if token.row_filter:  # the token's rows only (None when the filter cannot count)
                rows = self.store.filtered_row_count(name, token.row_filter)
                quarantined = self.store.filtered_row_count(f"{name}_quarantine", token.row_filter)
                size = None
            described = datasources_api.describe(self, name, ds, rows=rows, size=size,
                                                 quarantined=quarantined, times=times)  # fmt: skip
            out.append(described)
        return 200, {"datasources": out}

    def new_token(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        token = self.authenticate(h, params)
        if not token.admin:
            raise _HTTPError(403, "creating tokens needs an ADMIN token")
        length = _content_length(h) or 0
        if length > 65536:
            raise _HTTPError(413, "the token request is over 64 KiB")
        raw = h.rfile.read(length) if length else b""
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        try:
            if ctype == "application/json":  # tinybird-sdk's JSON body (see tokens.json_request)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise TokenError("the token request is not valid JSON") from None
                name, scopes, row_filter, description = json_request(body)
            else:  # a form body and the query string (Tinybird's classic form)
                for key, values in parse_qs(raw.decode("utf-8", "replace")).items():
                    params.setdefault(key, []).extend(values)
                name, scopes = (params.get("name") or ["token"])[0], params.get("scope") or []
                row_filter = (params.get("filter") or [""])[0]
                description = (params.get("description") or [""])[0]
            expires = (params.get("expiration_time") or [""])[0].strip()
            if expires and not re.fullmatch(r"[0-9]{1,12}", expires):  # not str.isdigit: "²"
                raise TokenError("expiration_time must be a Unix time in seconds")
            made = self.tokens.add(name, scopes, row_filter=row_filter, description=description,
                                   expires=int(expires) if expires else None)  # fmt: skip
        except TokenError as exc:
            raise _HTTPError(400, str(exc)) from None
        except OSError as exc:  # the data dir refused the tokens file: the token is not made
            raise _HTTPError(500, f"cannot save the token ({exc.strerror or exc})") from None
        return 200, {"id": made.id, "name": made.name, "token": made.value,
                     "scopes": made.scopes(), "filter": made.row_filter,
                     "description": made.description}  # fmt: skip


class _DeadlineReader(io.RawIOBase):
    """A connection's reads, each cut short at ``deadline`` (a ``time.monotonic()`` value):
    a client that trickles its request a byte at a time is dropped all the same."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client took too long to send its request")
            self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


_BUSY_BODY = b'{"error": "too many connections to the server; retry soon"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
         % (len(_BUSY_BODY), _BUSY_BODY))  # fmt: skip


class _Server(ThreadingHTTPServer):
    """A thread per connection, up to ``owner.max_connections``; past it, one refusing
    thread answers 503 (a bounded queue of them; beyond, they are closed at once)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 owner: LocalServer) -> None:  # fmt: skip
        self._owner = owner
        self._active = 0
        self._active_lock = threading.Lock()
        self._refused: queue.Queue[socket.socket | None] = queue.Queue(maxsize=64)
        self._refuser: threading.Thread | None = None
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            busy = self._active >= self._owner.max_connections
            if not busy:
                self._active += 1
        if busy:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self._active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left mid-answer is no error of the server's: nothing is printed.
        Anything else is one line on stderr, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"tblog local: request from {client_address[0]} failed: {exc!r}", file=sys.stderr)

    def _refuse(self, request: socket.socket) -> None:
        try:
            self._refused.put_nowait(request)
        except queue.Full:
            self.shutdown_request(request)
            return
        if self._refuser is None:
            self._refuser = threading.Thread(target=self._refuse_loop, daemon=True,
                                             name="tblog-local-busy")  # fmt: skip
            self._refuser.start()

    def _refuse_loop(self) -> None:
        while (sock := self._refused.get()) is not None:
            try:
                sock.settimeout(0.2)  # read the request head, so closing does not reset
                head = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        head += chunk
                sock.sendall(_BUSY)
            except OSError:
                pass
            finally:
                self.shutdown_request(sock)

    def server_close(self) -> None:
        super().server_close()
        if self._refuser is not None:
            self._refused.put(None)
            self._refuser.join(5)
            self._refuser = None


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _host_allowed(server: LocalServer, header: str | None) -> bool:
    """Whether a request's Host names this server: a loopback name or address, the bind
    address, any address when bound to all of them, or one of ``allowed_hosts``.  A
    DNS-rebinding page reaches the server under its own domain name: refused."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".")
    allowed = server.allowed_hosts
    if "*" in allowed or host in allowed or host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    bind = str(server.bind_host).lower().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bool(host) and host == bind
    if address.is_loopback or host == bind:
        return True
    return bind in ("", "0.0.0.0", "::")  # noqa: S104 - bound to every address: any of them


def _target_error(h: BaseHTTPRequestHandler) -> str | None:
    """Why the request's Host or target is ambiguous (None when it is not): Host given
    more than once (a proxy and this server could each pick another), or an absolute-form
    target (``GET http://name/...``) whose authority is not the Host header."""
    hosts = h.headers.get_all("Host") or []
    if len(hosts) > 1:
        return "the Host header is given more than once"
    if h.path.startswith("/") or h.path == "*":
        return None
    target = urlsplit(h.path)
    host = hosts[0].strip().lower() if hosts else ""
    if target.scheme.lower() != "http" or target.netloc.lower() != host or not host:
        return "an absolute request target must name the Host header's host"
    return None


def _ui_asset(h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Asset]:
    """A file of the web view (no token needed: the page asks for one and sends it in
    the Authorization header of its /v0/sql calls)."""
    found = asset(urlsplit(h.path).path.rstrip("/") or "/")
    if found is None:
        raise _HTTPError(404, "no such page")
    return 200, found


_BODY_METHODS = ("POST", "PUT")  # the methods whose routes read a request body


def _with_groups(
    handler: Callable[..., tuple[int, Any]], groups: tuple[str, ...],
    h: BaseHTTPRequestHandler, params: dict[str, list[str]],
) -> tuple[int, Any]:  # fmt: skip
    return handler(h, params, *groups)


def _make_handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    routes = {
        ("POST", "/v0/events"): server.events,
        ("GET", "/v0/sql"): server.sql,
        ("POST", "/v0/sql"): server.sql,
        ("GET", "/v0/datasources"): server.list_datasources,
        ("POST", "/v0/tokens"): server.new_token,
        # the web view (tblog.ui): its page at / and the page's script and stylesheet
        **{("GET", path.rstrip("/")): _ui_asset for path in ASSETS},
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave in two writes
        server_version = "tblog-local"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines carry ?token=...; never log them

        def setup(self) -> None:
            super().setup()
            self.rfile.close()
            self._reader = _DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self._reader, 65536)

        def handle_one_request(self) -> None:
            timeout = server.timeout
            self._reader.deadline = None if timeout is None else time.monotonic() + timeout
            super().handle_one_request()

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_PUT(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def _unread_body(self) -> None:
            """Only POST routes read a body: any other body must not be taken for the next
            request on the connection (request smuggling), so the connection ends."""
            lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
            if self.command not in _BODY_METHODS and (
                lengths - {"0"} or "Transfer-Encoding" in self.headers
            ):
                self.close_connection = True

        def do_OPTIONS(self) -> None:  # a CORS preflight, for an allowed origin only
            self._unread_body()
            origin = self.headers.get("Origin")
            if (error := _target_error(self)) is not None:
                self.close_connection = True
                self._answer(400, json.dumps({"error": error}).encode(), {})
            elif not _host_allowed(server, self.headers.get("Host")):
                self.close_connection = True
                self._answer(421, b'{"error": "this server does not answer to that Host name"}', {})
            elif origin is not None and origin in server.allowed_origins:
                self._answer(204, b"", {  # a preflight without Allow-Origin fails anyway
                    "Access-Control-Allow-Origin": origin,
                    "Vary": "Origin",
                    "Access-Control-Allow-Methods": _CORS_METHODS,
                    "Access-Control-Allow-Headers": "Authorization, Content-Type, "
                                                    "Content-Encoding",
                    "Access-Control-Max-Age": "600",
                })  # fmt: skip
            else:
                self.close_connection = True
                self._answer(403, b'{"error": "cross-origin requests are refused"}', {})

        def _check(self) -> None:
            """Host, Origin and body framing, before any route sees the request."""
            if (error := _target_error(self)) is not None:
                raise _HTTPError(400, error)
            if not _host_allowed(server, self.headers.get("Host")):
                raise _HTTPError(421, "this server does not answer to that Host name; "
                                      "add it with --allowed-host")  # fmt: skip
            origin = self.headers.get("Origin")
            if origin is not None and origin not in server.allowed_origins:
                raise _HTTPError(403, "cross-origin requests are refused; allow an origin "
                                      "with --allowed-origin")  # fmt: skip
            if self.headers.get("Transfer-Encoding") is not None:
                raise _HTTPError(411, "chunked transfer encoding is not supported: "
                                      "send a Content-Length")  # fmt: skip
            length, limit = _content_length(self), server.max_request_bytes
            if length is not None and length > limit:
                raise _HTTPError(413, f"request body of {length} bytes exceeds the "
                                      f"{limit}-byte limit; send less")  # fmt: skip

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            path = parts.path.rstrip("/")
            route = routes.get((self.command, path))
            if route is None:
                for method, pattern, handler in server.pattern_routes:
                    if method == self.command and (match := pattern.fullmatch(path)):
                        route = functools.partial(_with_groups, handler, match.groups())
                        break
            headers: dict[str, str] = {}
            self._unread_body()
            try:
                self._check()
                if route is None:
                    raise _HTTPError(404, f"no such endpoint: {self.command} {parts.path}")
                if route == server.events and server.rate_limiter is not None:
                    allowed, headers = server.rate_limiter.take()
                    if not allowed:
                        self.close_connection = True
                        raise _HTTPError(429, "too many requests: rate limit exceeded")
                status, body = route(self, params)
                if isinstance(body, Asset):  # a file of the web view, with its own headers
                    headers.update(body.headers)
                    body = body.body
            except _HTTPError as exc:
                status, body = exc.status, exc.body
                if status >= 400 and (self.command in _BODY_METHODS or status in (400, 411, 413)):
                    self.close_connection = True  # the body may be unread
            except TimeoutError:
                status, body = 408, {"error": "the request took too long to arrive"}
                self.close_connection = True
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the server
                status, body = 500, {"error": f"internal error: {type(exc).__name__}"}
            origin = self.headers.get("Origin")
            if origin is not None and origin in server.allowed_origins:
                headers["Access-Control-Allow-Origin"] = origin
                headers["Vary"] = "Origin"
                headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self._answer(status, payload, headers)

        def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.connection.settimeout(server.timeout)  # the read deadline is not the write's
            self.send_response(status)
            ctype = headers.pop("Content-Type", "") or (
                "application/json" if payload[:1] in (b"{", b"[") else "text/plain"
            )
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

    return Handler
