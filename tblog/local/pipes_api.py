"""The Pipes API of ``tblog local``: pipes (``tblog.local.pipes``) and their endpoints.

* ``POST /v0/pipes`` (ADMIN): a pipe from a JSON body (``{"name", "description",
  "nodes": [{"name", "sql", "type", "description"}]}``, as ``tb push`` sends it), a
  ``.pipe`` datafile as the body (``?name=NAME``), or ``?name=NAME&sql=...`` (one
  node).  An existing pipe is replaced with ``force=true`` only (else 409).  Every
  node's SQL is checked when the pipe is made: its template, and the SQL it renders to
  (with placeholder values) through ``sqlguard.verify_sql``: a pipe that could never
  run is a 400 now, not on its first request.
* ``POST /v0/pipes/NAME/nodes/NODE/endpoint`` (ADMIN): make NODE the endpoint (``tb
  push`` of a pipe without ``TYPE endpoint`` calls it for the last node).
* ``GET /v0/pipes``, ``GET /v0/pipes/NAME``: the pipes the token can read (ADMIN, or
  ``PIPES:READ:<pipe>``), with their nodes and parameters, in Tinybird's fields.
* ``GET|POST /v0/pipes/NAME.json|.csv|.ndjson?param=value``: the endpoint's rows
  (ClickHouse's JSON with ``meta``/``data``/``rows``/``statistics``, CSV with names, or
  NDJSON).  Parameters bind as typed literals only (see ``tblog.local.pipes``); the
  query runs with the workspace's datasources visible, as on Tinybird, through the
  token's row filter when it has one, with the server's query limits.  ADMIN and
  ``PIPES:READ:<pipe>`` tokens may call it; a ``DATASOURCES:READ`` token may not (it
  has the SQL API).  POST takes the parameters as a form body.
* ``DELETE /v0/pipes/NAME`` (ADMIN): 204.

Pipes made through the API are kept in the data dir (``pipes/NAME.json``, 0600) and
loaded again on restart.  The shipped pipes (``tblog/pipes/*.pipe``: ``recent_errors``,
``trace_rows``, ``level_counts`` over ``tb_logs``) are loaded at every start, before
the kept ones (a pushed pipe of the same name wins); deleting a shipped pipe lasts
until the restart.  A file that cannot be loaded is reported in the server's
``load_errors``, like a bad ``.datasource``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tblog.local.datadir import write_private
from tblog.local.datafile import DatafileError
from tblog.local.pipes import (
    Pipe,
    TemplateError,
    load_pipe,
    make_pipe,
    parse_pipe,
    used_tables,
)
from tblog.local.sqlguard import SqlRefusedError, verify_sql
from tblog.local.store import QueryError, Store
from tblog.ui import Asset

if TYPE_CHECKING:
    from tblog.local.server import LocalServer, PatternRoute
    from tblog.local.tokens import Token

__all__ = ["DEFAULT_PIPES", "PipesApi"]

DEFAULT_PIPES = Path(__file__).resolve().parent.parent / "pipes"
_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
_FORMATS = {"json": "JSON", "csv": "CSVWithNames", "ndjson": "JSONEachRow"}
_CONTENT_TYPES = {"json": "application/json", "csv": "text/csv",
                  "ndjson": "application/x-ndjson"}  # fmt: skip
#: Largest pipe definition or form body accepted.
MAX_PIPE_BYTES = 1024 * 1024
#: Request parameters that are not template parameters.
_RESERVED = frozenset({"token"})
#: Placeholder values used to check a template when the pipe is made.
_PLACEHOLDERS = {"String": "placeholder", "Boolean": "1", "Date": "2019-01-01",
                 "DateTime": "2019-01-01 00:00:00", "DateTime64": "2019-01-01 00:00:00",
                 "Float32": "0", "Float64": "0"}  # fmt: skip


def _iso(ts: float) -> str:
    """A time as Tinybird writes ``created_at``/``updated_at`` (UTC, with microseconds)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _node_id(pipe: str, node: str) -> str:
    return "t_" + uuid.uuid5(uuid.NAMESPACE_URL, f"tblog-local/{pipe}/{node}").hex


def _placeholder(kind: str) -> str:
    if kind.startswith("Array("):
        return _placeholder(kind[6:-1])
    return _PLACEHOLDERS.get(kind, "0")


def _error(status: int, message: str) -> Exception:
    """The server's JSON error (imported late: the server imports this module)."""
    from tblog.local.server import _HTTPError  # noqa: PLC0415

    return _HTTPError(status, message)


def _length(h: BaseHTTPRequestHandler) -> int | None:
    from tblog.local.server import _content_length  # noqa: PLC0415

    return _content_length(h)


def _clean(message: str) -> str:
    from tblog.local.server import _client_error  # noqa: PLC0415

    return _client_error(message)


class PipesApi:
    """The pipes of one ``LocalServer`` and the routes that serve them."""

    def __init__(self, server: LocalServer, shipped: str | Path | None = None) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._pipes: dict[str, tuple[Pipe, float, float]] = {}  # name: pipe, created, updated
        self.dir = server.store.data_dir / "pipes"
        for path in sorted(Path(shipped or DEFAULT_PIPES).glob("*.pipe")):
            self._load(path.name, lambda p=path: load_pipe(p), shipped=True)
        if self.dir.is_dir():
            for path in sorted(self.dir.glob("*.json")):
                self._load(path.name, lambda p=path: self._read_kept(p))

    def _load(self, label: str, read: Any, *, shipped: bool = False) -> None:
        try:
            pipe = read()
            if shipped and not self._tables_known(pipe):
                return  # a server without tb_logs (its own datasources): nothing to serve
            self._check(pipe)
        except (DatafileError, TemplateError, SqlRefusedError, OSError, ValueError,
                KeyError, TypeError) as exc:  # fmt: skip
            self.server.load_errors.append((label, str(exc)))
            return
        now = time.time()
        self._pipes[pipe.name] = (pipe, now, now)

    @staticmethod
    def _read_kept(path: Path) -> Pipe:
        data = json.loads(path.read_text(encoding="utf-8"))
        pipe = make_pipe(data["name"], data["nodes"], data.get("description", ""), "api")
        if pipe.name != path.stem:
            raise DatafileError(f"{path.name} holds pipe '{pipe.name}'")
        return pipe

    def _keep(self, pipe: Pipe) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        data = {"name": pipe.name, "description": pipe.description,
                "nodes": [{"name": n.name, "sql": n.sql, "description": n.description,
                           "type": n.type} for n in pipe.nodes]}  # fmt: skip
        write_private(self.dir / f"{pipe.name}.json", json.dumps(data, indent=1).encode())

    # -- checks -----------------------------------------------------------------------

    def _readable(self, token: Token | None) -> tuple[dict[str, str | None], set[str], str]:
        """(readable tables with their row filter, known tables, database) for a pipe
        query by ``token`` (None: the server checking a pipe as its admin)."""
        row_filter = token.row_filter if token is not None else None
        readable: dict[str, str | None] = {}
        for name in self.server.store.datasources:
            readable[name] = readable[f"{name}_quarantine"] = row_filter
        database = "default"
        if token is not None and not token.admin:
            database = Store.token_database_name(token.value, readable)
        return readable, set(readable), database

    def _tables_known(self, pipe: Pipe) -> bool:
        """Whether every ``FROM``/``JOIN`` name of the pipe's SQL is a node or a datasource."""
        names = {n.name for n in pipe.nodes} | set(self.server.store.datasources)
        text = " ".join(n.sql for n in pipe.nodes)
        return all(t in names for t in re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)",
                                                  text, re.IGNORECASE))  # fmt: skip

    def _check(self, pipe: Pipe) -> None:
        """Every node renders (with placeholders) to SQL the guard accepts."""
        values = {p["name"]: _placeholder(str(p["type"])) for n in pipe.nodes
                  for p in Pipe(pipe.name, (n,)).params() if "default" not in p}  # fmt: skip
        readable, known, database = self._readable(None)
        for node in pipe.nodes:
            try:
                sql = pipe.with_endpoint(node.name).query(values)
                verify_sql(sql, readable, database, known=known)
            except (TemplateError, SqlRefusedError) as exc:
                raise type(exc)(f"node '{node.name}': {exc}") from None

    # -- routes -----------------------------------------------------------------------

    def routes(self) -> list[PatternRoute]:
        return [
            ("GET", re.compile(r"/v0/pipes"), self.list_pipes),
            ("POST", re.compile(r"/v0/pipes"), self.create),
            ("GET", re.compile(rf"/v0/pipes/{_NAME}\.(json|csv|ndjson)"), self.data),
            ("POST", re.compile(rf"/v0/pipes/{_NAME}\.(json|csv|ndjson)"), self.data),
            ("GET", re.compile(rf"/v0/pipes/{_NAME}"), self.get),
            ("DELETE", re.compile(rf"/v0/pipes/{_NAME}"), self.delete),
            ("POST", re.compile(rf"/v0/pipes/{_NAME}/nodes/([A-Za-z0-9_]+)/endpoint"),
             self.set_endpoint),
            ("POST", re.compile(r"/v0/sql_tables"), self.sql_tables),
            ("GET", re.compile(r"/v0/sql_tables"), self.sql_tables),
        ]  # fmt: skip

    def _admin(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> Token:
        token = self.server.authenticate(h, params)
        if not token.admin:
            raise _error(403, "managing pipes needs an ADMIN token")
        return token

    def _find(self, name: str) -> tuple[Pipe, float, float]:
        with self._lock:
            found = self._pipes.get(name)
        if found is None:
            raise _error(404, f"Pipe '{name}' not found")
        return found

    def _describe(self, name: str, entry: tuple[Pipe, float, float]) -> dict[str, Any]:
        pipe, created, updated = entry
        end = pipe.endpoint
        nodes: list[dict[str, Any]] = []
        for node in pipe.nodes:
            nodes.append({
                "id": _node_id(name, node.name), "name": node.name, "sql": node.sql,
                "description": node.description or None,
                "node_type": "endpoint" if node is end else "standard",
                "params": Pipe(name, (node,)).params(), "dependencies": [],
                "materialized": None, "cluster": None, "tags": {},
                "created_at": _iso(created), "updated_at": _iso(updated),
            })  # fmt: skip
        return {
            "id": _node_id(name, ""), "name": name, "description": pipe.description or None,
            "type": "endpoint" if end is not None else "default",
            "endpoint": _node_id(name, end.name) if end is not None else None,
            "created_at": _iso(created), "updated_at": _iso(updated),
            "parent": None, "nodes": nodes, "url": f"{self.server.url}/v0/pipes/{name}.json",
            "params": pipe.params() if end is not None else [],
        }  # fmt: skip

    def list_pipes(
        self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]
    ) -> tuple[int, Any]:
        token = self.server.authenticate(h, params)
        with self._lock:
            entries = sorted(self._pipes.items())
        return 200, {"pipes": [self._describe(n, e) for n, e in entries
                               if token.can_read_pipe(n)]}  # fmt: skip

    def get(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]],
            name: str) -> tuple[int, Any]:  # fmt: skip
        token = self.server.authenticate(h, params)
        entry = self._find(name)
        if not token.can_read_pipe(name):
            raise _error(403, f"the token has no PIPES:READ scope on '{name}'")
        return 200, self._describe(name, entry)

    def delete(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]],
               name: str) -> tuple[int, Any]:  # fmt: skip
        self._admin(h, params)
        self._find(name)
        with self._lock:
            self._pipes.pop(name, None)
            (self.dir / f"{name}.json").unlink(missing_ok=True)
        return 204, b""

    def _body(self, h: BaseHTTPRequestHandler) -> bytes:
        length = _length(h) or 0
        if length > MAX_PIPE_BYTES:
            raise _error(413, f"the body is over {MAX_PIPE_BYTES} bytes")
        raw = h.rfile.read(length) if length else b""
        if len(raw) < length:
            h.close_connection = True
            raise _error(400, "the body is shorter than its Content-Length")
        return raw

    def create(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> tuple[int, Any]:
        self._admin(h, params)
        raw = self._body(h)
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        name = (params.get("name") or [""])[0]
        try:
            if ctype == "application/json":
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise _error(400, "the body is not valid JSON") from None
                if not isinstance(body, dict) or not isinstance(body.get("nodes"), list):
                    raise _error(400, 'send {"name": ..., "nodes": [...]}')
                nodes = [n for n in body["nodes"] if isinstance(n, dict)]
                if len(nodes) != len(body["nodes"]):
                    raise _error(400, "each node is an object")
                pipe = make_pipe(str(body.get("name") or name), nodes,
                                 str(body.get("description") or ""), "api")  # fmt: skip
            elif params.get("sql"):  # ?name=X&sql=... (tb's pipe_create): one endpoint node
                pipe = make_pipe(name, [{"name": f"{name}_0", "sql": params["sql"][0],
                                         "type": "endpoint"}], "", "api")  # fmt: skip
            else:  # the body is a .pipe datafile
                pipe = parse_pipe(raw.decode("utf-8", "replace"), name)
                pipe = Pipe(pipe.name, pipe.nodes, pipe.description, "api")
            self._check(pipe)
        except (DatafileError, TemplateError) as exc:
            raise _error(400, str(exc)) from None
        except SqlRefusedError as exc:
            raise _error(400, f"the pipe's SQL is refused: {exc}") from None
        force = (params.get("force") or ["false"])[0].lower() in ("true", "1")
        with self._lock:
            old = self._pipes.get(pipe.name)
            if old is not None and not force:
                raise _error(409, f"Pipe '{pipe.name}' already exists: send force=true "
                                      "to replace it")  # fmt: skip
            try:
                self._keep(pipe)
            except OSError as exc:
                raise _error(500, f"cannot save the pipe ({exc.strerror or exc})") from None
            now = time.time()
            self._pipes[pipe.name] = (pipe, old[1] if old else now, now)
            entry = self._pipes[pipe.name]
        return 200, self._describe(pipe.name, entry)

    def set_endpoint(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]],
                     name: str, node: str) -> tuple[int, Any]:  # fmt: skip
        self._admin(h, params)
        pipe, created, _ = self._find(name)
        target = next((n.name for n in pipe.nodes if node in (n.name, _node_id(name, n.name))),
                      None)  # fmt: skip
        if target is None:
            raise _error(404, f"Node '{node}' not found in pipe '{name}'")
        changed = pipe.with_endpoint(target)
        with self._lock:
            try:
                self._keep(changed)
            except OSError as exc:
                raise _error(500, f"cannot save the pipe ({exc.strerror or exc})") from None
            self._pipes[name] = (changed, created, time.time())
            entry = self._pipes[name]
        return 200, self._describe(name, entry)

    def sql_tables(
        self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]
    ) -> tuple[int, Any]:
        """``/v0/sql_tables``: the tables a query reads, ``{"tables": [[db, name], ...]}``
        (``tb push`` asks it for a pipe's dependencies).  The query is only parsed."""
        self.server.authenticate(h, params)
        if h.command == "POST":
            for key, values in parse_qs(self._body(h).decode("utf-8", "replace")).items():
                params.setdefault(key, []).extend(values)
        query = (params.get("q") or [""])[0]
        raising = (params.get("raising") or ["false"])[0].lower() == "true"
        functions = (params.get("table_functions") or ["false"])[0].lower() == "true"
        try:
            tables = used_tables(query, table_functions=functions)
        except SqlRefusedError as exc:
            if raising:
                raise _error(400, str(exc)) from None
            tables = []
        return 200, {"tables": [list(t) for t in tables]}

    def data(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]],
             name: str, ext: str) -> tuple[int, Any]:  # fmt: skip
        token = self.server.authenticate(h, params)
        values = {k: v[0] for k, v in params.items() if k not in _RESERVED and v}
        if h.command == "POST":  # the parameters as a form body (read even when unused)
            form = parse_qs(self._body(h).decode("utf-8", "replace"))
            values.update({k: v[0] for k, v in form.items() if k not in _RESERVED and v})
        pipe = self._find(name)[0]
        if not token.can_read_pipe(name):
            raise _error(403, f"the token has no PIPES:READ scope on '{name}'")
        if "q" in values and "q" not in {p["name"] for p in pipe.params()}:
            raise _error(400, "the q parameter (SQL over the endpoint's result) is not "
                                  "supported by tblog local")  # fmt: skip
        try:
            sql = pipe.query(values)
        except TemplateError as exc:
            raise _error(400, f"[Error] {exc}") from None
        readable, known, database = self._readable(token)
        try:
            verified = verify_sql(sql, readable, database, known=known)
            if not token.admin:  # views of the tables it reads only, each through the filter
                readable = {t: readable[t] for t in verified.tables}
                database = Store.token_database_name(token.value, readable)
                verified = verify_sql(sql, readable, database, known=known)
        except SqlRefusedError as exc:
            raise _error(exc.status, str(exc)) from None
        if not token.admin:
            self.server.store.token_database(token.value, readable)
        try:
            body = self.server.store.query(verified.sql, _FORMATS[ext])
        except QueryError as exc:
            raise _error(400, f"[Error] {_clean(str(exc))}") from None
        return 200, Asset(body, {"Content-Type": _CONTENT_TYPES[ext]})
