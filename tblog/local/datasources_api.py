"""Tinybird's Data Sources API on ``tblog local`` (besides ``GET /v0/datasources``, which
``LocalServer.list_datasources`` serves with the fields of ``describe``).

* ``GET /v0/datasources/NAME``: one datasource, with Tinybird's fields (``id``,
  ``created_at``/``updated_at`` as ``YYYY-MM-DD HH:MM:SS.ffffff``, ``columns``,
  ``engine``, ``statistics``, ``schema.sql_schema``, ``quarantine_rows``...); 404 when
  the token can neither read nor append to it.
* ``POST /v0/datasources?name=NAME&schema=...`` (``mode=create``, the default): create
  from a schema in Tinybird's parameters (``schema``, ``engine``, ``engine_*``,
  ``description``), as ``tb push`` sends a ``.datasource``; ADMIN or
  ``DATASOURCES:CREATE``.  The datasource is kept in the data dir
  (``datasources/NAME.datasource``) and served again after a restart.  Expressions in
  it (column defaults, keys, TTL) must pass the SQL API's guard; engines are the
  MergeTree family only; engine settings are plain ``name = value`` pairs that name no
  disk, path or storage policy.  At most ``MAX_COLUMNS`` columns, and ``MAX_DATASOURCES``
  datasources on the server.
* ``POST /v0/datasources?name=NAME&mode=append|replace&format=csv|ndjson``: rows in a
  multipart file (``csv``/``ndjson`` field, as ``tb datasource append`` and
  tinybird-sdk send), a form or a raw body; ``url=`` imports are refused (no network).
  ``POST /v1/datasources/NAME/append|replace?format=...``: the raw body.  Rows go
  through the Events API's path (typing, quarantine, the token's row filter, the same
  limits); CSV columns are the insertable columns in schema order (a first row of
  column names is skipped; a CSV row is at most ``MAX_CSV_ROW_CHARS``, a field 128 KiB:
  400 past them).  ``replace`` (ADMIN or ``DATASOURCES:CREATE``) truncates
  first: not atomic, unlike Tinybird.
* ``POST /v0/datasources/NAME/truncate`` (ADMIN or ``DATASOURCES:CREATE``): the table
  and its quarantine emptied.  ``DELETE /v0/datasources/NAME`` (ADMIN; ``dry_run=true``
  only reports): both tables dropped, the kept file removed.
  ``POST /v0/datasources/NAME/delete`` (``delete_condition``, ADMIN or
  ``DATASOURCES:CREATE``): the rows matching a condition the SQL guard accepts are
  deleted before the answer (Tinybird queues a job; here the job is done at once).

Imports and deletes answer with a ``job_id``; the job is recorded, already finished, for
``GET /v0/jobs/ID`` and ``GET /v0/jobs`` (see ``jobs_api``).  ``/v1/datasources`` answers
carry no ``error`` key on success (the Forward CLI reads any ``error`` key as a failure).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from tblog.local import jobs_api
from tblog.local.datafile import (
    DATASOURCE_NAME,
    DatafileError,
    Datasource,
    datasource_from_params,
    load_datasource,
    quote_identifier,
)
from tblog.local.sqlguard import SqlRefusedError, verify_sql
from tblog.local.store import QueryError

if TYPE_CHECKING:
    from tblog.local.server import LocalServer, PatternRoute
    from tblog.local.tokens import Token

__all__ = [
    "KEPT_DIR",
    "MAX_COLUMNS",
    "MAX_CSV_ROW_CHARS",
    "MAX_DATASOURCES",
    "MAX_DECODED",
    "describe",
    "routes",
]

#: Where datasources created through the API are kept, in the data dir.
KEPT_DIR = "datasources"
_ENGINE = re.compile(r"(Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing)?MergeTree")
_SETTING = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([0-9.]+|'[A-Za-z0-9_ .-]*'|true|false)\s*", re.IGNORECASE
)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
_TYPE_CHARS = re.compile(r"[A-Za-z0-9_(), .=+'-]*")
_RISKY_SETTING = re.compile(r"disk|storage|path|policy|zookeeper|keeper", re.IGNORECASE)
#: Bytes a gzip body of the Data Sources API may decode to (it is held whole, as CSV is
#: turned into rows in memory; the Events API streams and allows more).
MAX_DECODED = 32 * 1024 * 1024
_FORMATS = {"csv": "csv", "ndjson": "ndjson", "jsonl": "ndjson", "json": "ndjson"}
#: Columns a datasource made through the API may have (Tinybird's limit).
MAX_COLUMNS = 500
#: Datasources the server holds at most; past it, creating one is refused (each is two
#: tables and a kept file: a DATASOURCES:CREATE token must not fill the disk with them).
MAX_DATASOURCES = 1000
#: Characters one CSV row may span (its lines together); a longer row is a 400 before
#: the csv module splits it: a row of tiny fields (``a,a,a,...``) costs ~20x its size
#: as Python strings.  A CSV field is at most 128 KiB anyway (the csv module's limit).
MAX_CSV_ROW_CHARS = 2 * 1024 * 1024
#: Characters of a delete condition a job record keeps (the jobs are held in memory).
JOB_CONDITION_CHARS = 4096


def describe(server: LocalServer, name: str, ds: Datasource, *, rows: int | None,
             size: int | None, quarantined: int | None,
             times: dict[str, tuple[str, str]]) -> dict[str, Any]:  # fmt: skip
    """A datasource as Tinybird's Data Sources API shows it."""
    created, updated = times.get(name, ("1970-01-01 00:00:00.000000",) * 2)
    return {
        "id": "t_" + uuid.uuid5(uuid.NAMESPACE_URL, f"tblog-local/{name}").hex,
        "name": name,
        "description": ds.description,
        "created_at": created,
        "updated_at": updated,
        "last_commit": {"content_sha": "", "status": "ok", "path": ""},
        "replicated": False,
        "version": 0,
        "project": None,
        "headers": {},
        "shared_with": [],
        "tags": {},
        "cluster": None,
        "type": "ndjson",
        "used_by": [],
        "engine": {"engine": ds.engine, **ds.engine_args},
        "columns": [
            {
                "name": c.name,
                "normalized_name": c.name,
                "type": c.type,
                "nullable": c.nullable,
                "codec": c.codec,
                "jsonpath": c.jsonpath,
                "default_value": c.default_expr,
            }
            for c in ds.columns
        ],
        "schema": {
            "sql_schema": ", ".join(
                f"{quote_identifier(c.name)} {c.type}"
                + (f" `json:{c.jsonpath}`" if c.jsonpath else "")
                for c in ds.columns
            )
        },
        "indexes": [],
        "new_columns_detected": {},
        "statistics": {"row_count": rows, "bytes": size},
        "quarantine_rows": quarantined,
    }


def _multipart(body: bytes, ctype: str) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        return {}
    out: dict[str, bytes] = {}
    for part in body.split(b"--" + m.group(1).encode()):
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        found = re.search(rb'name="([^"]*)"', head)
        if found:
            out[found.group(1).decode("utf-8", "replace")] = data.removesuffix(b"\r\n")
    return out


def _csv_to_ndjson(ds: Datasource, data: bytes) -> bytes:
    """CSV rows as NDJSON objects shaped so the datasource's JSONPaths find each value;
    a row with the wrong number of fields becomes a JSON string (quarantined as such)."""
    columns = [c for c in ds.columns if c.insertable]
    names = [c.name for c in columns]
    out = io.BytesIO()
    fed = [0]  # characters read for the current row

    def lines() -> Iterator[str]:
        for line in io.StringIO(data.decode("utf-8", "replace")):
            fed[0] += len(line)
            if fed[0] > MAX_CSV_ROW_CHARS:
                raise csv.Error(f"a row is longer than {MAX_CSV_ROW_CHARS} characters")
            yield line

    reader = csv.reader(lines())
    for lineno, record in enumerate(reader):
        fed[0] = 0
        if not record or (lineno == 0 and [f.strip() for f in record] == names):
            continue
        if len(record) != len(columns):
            raw = ",".join(record)
            out.write(json.dumps(f"CSV row {lineno + 1} has {len(record)} fields, the "
                                 f"datasource {len(columns)}: {raw}").encode() + b"\n")  # fmt: skip
            continue
        obj: dict[str, Any] = {}
        for column, value in zip(columns, record, strict=True):
            if value == "":
                continue  # missing: NULL or the column's default
            cell: Any = value
            if value[:1] in "[{" and not column.type.startswith(("String", "Nullable(String")):
                with contextlib.suppress(ValueError):
                    cell = json.loads(value)
            path = [p for p in column.path if p != "[:]"] or [column.name]
            target = obj
            for key in path[:-1]:
                nxt = target.setdefault(key, {})
                target = nxt if isinstance(nxt, dict) else {}
            target[path[-1]] = cell
        out.write(json.dumps(obj).encode() + b"\n")
    return out.getvalue()


def _check_safe(ds: Datasource) -> None:
    """Refuse what an API-made datasource must not hold: a non-MergeTree engine (File,
    URL... would reach files or the network), expressions the SQL guard refuses (a
    DEFAULT of ``file(...)``), settings that name disks or paths, indexes."""
    if not _ENGINE.fullmatch(ds.engine):
        raise DatafileError(f"engine {ds.engine!r} is not supported: use a MergeTree engine")
    if len(ds.columns) > MAX_COLUMNS:
        raise DatafileError(f"{len(ds.columns)} columns: at most {MAX_COLUMNS} are supported")
    for column in ds.columns:  # a type or codec must not end the column list early
        for text in (column.type, column.codec or ""):
            bare = _QUOTED.sub("''", text)
            depth = 0
            for char in bare:
                depth += (char == "(") - (char == ")")
                if depth < 0:
                    break
            if depth != 0 or not _TYPE_CHARS.fullmatch(bare):
                raise DatafileError(f"column {column.name!r}: {text!r} is not a type")
    if ds.indexes.strip():
        raise DatafileError("INDEXES are not supported through the API: use a .datasource "
                            "file in the server's datasources directory")  # fmt: skip
    exprs = [c.default_expr for c in ds.columns if c.default_expr]
    exprs += [c.ttl for c in ds.columns if c.ttl]
    exprs += [v for k, v in ds.engine_args.items() if k != "settings" and v.strip()]
    for expr in exprs:
        try:
            verify_sql(f"SELECT ({expr}) FROM {ds.name}", [ds.name], "default",  # noqa: S608 - verified
                       known=[ds.name])  # fmt: skip
        except SqlRefusedError as exc:
            raise DatafileError(f"expression {expr!r} refused: {exc}") from None
    settings = ds.engine_args.get("settings", "").strip()
    if settings:
        for item in settings.split(","):
            m = _SETTING.fullmatch(item)
            if not m or _RISKY_SETTING.search(m.group(1)):
                raise DatafileError(f"engine setting {item.strip()!r} is not supported")


def _kept(server: LocalServer) -> Path:
    return server.store.data_dir / KEPT_DIR


def _load_kept(server: LocalServer) -> None:
    """Serve again the datasources created through the API before a restart."""
    for path in sorted(_kept(server).glob("*.datasource")):
        try:
            ds = load_datasource(path)
            _check_safe(ds)
            server.store.register(ds)
        except (DatafileError, QueryError, OSError) as exc:
            server.load_errors.append((path.name, str(exc)))


def routes(server: LocalServer) -> list[PatternRoute]:
    """The routes of this module, for ``LocalServer.pattern_routes``; also registers the
    datasources kept in the data dir (see ``KEPT_DIR``)."""
    from tblog.local.server import _content_length, _HTTPError  # noqa: PLC0415 - a cycle

    _load_kept(server)

    def body(h: BaseHTTPRequestHandler) -> bytes:
        length = _content_length(h) or 0
        if length > server.max_request_bytes:
            h.close_connection = True
            raise _HTTPError(413, f"request body of {length} bytes exceeds the "
                                  f"{server.max_request_bytes}-byte limit; send less")  # fmt: skip
        data = h.rfile.read(length) if length else b""
        if len(data) < length:
            h.close_connection = True
            raise _HTTPError(400, "the body is shorter than its Content-Length")
        return data

    def inflated(h: BaseHTTPRequestHandler, data: bytes) -> bytes:
        """``data`` gunzipped when it is gzip (at most ``MAX_DECODED`` bytes: 413 past it);
        the caller holds an ingest slot, so few requests hold decoded bodies at once."""
        if h.headers.get("Content-Encoding", "").strip().lower() != "gzip":
            return data
        out = bytearray()
        for chunk in server._decoded(data):
            out += chunk
            if len(out) > MAX_DECODED:
                raise _HTTPError(413, f"the body decompresses to more than {MAX_DECODED} "
                                      "bytes; send less per request")  # fmt: skip
        return bytes(out)

    def manager(token: Token) -> None:
        if not (token.admin or token.create):
            raise _HTTPError(403, "this needs an ADMIN or DATASOURCES:CREATE token")

    def found(token: Token, name: str) -> Datasource:
        ds = server.store.datasources.get(name)
        if ds is None or not (token.can_read(name) or token.can_append(name)):
            raise _HTTPError(404, f"Data Source '{name}' not found")
        return ds

    def one(server_name: str) -> dict[str, Any]:
        ds = server.store.datasources[server_name]
        counts = server.store.row_counts()
        return describe(server, server_name, ds, rows=counts.get(server_name, (0, 0))[0],
                        size=counts.get(server_name, (0, 0))[1],
                        quarantined=counts.get(f"{server_name}_quarantine", (0, 0))[0],
                        times=server.store.table_times())  # fmt: skip

    def get_one(h: BaseHTTPRequestHandler, params: dict[str, list[str]],
                name: str) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        name = unquote(name)
        found(token, name)
        if token.row_filter:  # the token's rows only, as /v0/datasources shows them
            ds = server.store.datasources[name]
            return 200, describe(
                server, name, ds, size=None, times=server.store.table_times(),
                rows=server.store.filtered_row_count(name, token.row_filter),
                quarantined=server.store.filtered_row_count(f"{name}_quarantine",
                                                            token.row_filter))  # fmt: skip
        return 200, one(name)

    def append(token: Token, name: str, data: bytes, fmt: str,
               mode: str = "append") -> dict[str, Any]:  # fmt: skip
        ds = found(token, name)
        if not token.can_append(name):
            raise _HTTPError(403, f"the token has no DATASOURCES:APPEND scope on '{name}'")
        fmt = _FORMATS.get(fmt.lower(), "")
        if not fmt:
            raise _HTTPError(400, "format must be csv or ndjson (parquet is not supported)")
        try:
            raw = _csv_to_ndjson(ds, data) if fmt == "csv" else data
        except csv.Error as exc:  # a field over csv's limit (128 KiB), a bad quote...
            raise _HTTPError(400, f"the CSV cannot be read: {exc}; send NDJSON for "
                                  "values this long") from None  # fmt: skip
        started = jobs_api.now()
        status, result = server._ingest(name, token, raw, False, True)  # caller holds a slot
        import_id = str(uuid.uuid4())
        described = one(name)
        lines, quarantined = (result.get("successful_rows", 0),
                              result.get("quarantined_rows", 0))  # fmt: skip
        out = {"id": import_id, "import_id": import_id, "job_id": import_id,
               "job_url": f"{server.url}/v0/jobs/{import_id}",
               "status": "done", "datasource": described,
               "successful_rows": lines, "quarantine_rows": quarantined,
               "invalid_lines": 0, "error": False, "blocks": []}  # fmt: skip
        failed = status >= 400 and "error" in result
        jobs_api.registry(server).add(  # for GET /v0/jobs/ID
            kind="import", datasource=(described["id"], name), creator=token.id,
            job_id=import_id, status="error" if failed else "done", created_at=started,
            mode=mode, import_id=import_id, statistics=described["statistics"],
            quarantine_rows=quarantined, invalid_lines=0,
            blocks=[{"process_return": [{"lines": lines, "quarantine": quarantined,
                                         "bytes": len(data)}]}],
            **({"error": str(result["error"])} if failed else {}))  # fmt: skip
        if failed:
            error = _HTTPError(status, str(result["error"]))
            error.body.update({k: v for k, v in out.items() if k != "error"})
            error.body.update(rejected_rows=result.get("rejected_rows", 0), status="error")
            raise error
        return out

    def create(token: Token, name: str, fields: dict[str, str]) -> dict[str, Any]:
        manager(token)
        if name in server.store.datasources:
            raise _HTTPError(409, f"Data Source '{name}' already exists")
        if len(server.store.datasources) >= MAX_DATASOURCES:
            raise _HTTPError(400, f"the limit of {MAX_DATASOURCES} datasources is reached: "
                                  "delete one first")  # fmt: skip
        try:
            ds = datasource_from_params(name, fields)
            _check_safe(ds)
            server.store.register(ds)
        except (DatafileError, QueryError) as exc:
            raise _HTTPError(400, str(exc)) from None
        if server.store.engine_of(name) != ds.engine:  # the DDL made something else: undo
            server.store.drop(name)
            raise _HTTPError(400, f"the definition of '{name}' does not make a {ds.engine} table")
        try:
            _kept(server).mkdir(exist_ok=True)
            (_kept(server) / f"{name}.datasource").write_text(ds.source, encoding="utf-8")
        except OSError as exc:
            server.store.drop(name)
            raise _HTTPError(500, f"cannot keep the datasource ({exc.strerror or exc})") from None
        return {"datasource": one(name)}

    def post_datasources(h: BaseHTTPRequestHandler,
                         params: dict[str, list[str]]) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        data = body(h)
        with server._ingest_slots:
            return post_body(h, token, params, data)

    def post_body(h: BaseHTTPRequestHandler, token: Token, params: dict[str, list[str]],
                  data: bytes) -> tuple[int, Any]:  # fmt: skip
        data = inflated(h, data)
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        fields = {k: v[0] for k, v in params.items() if v}
        payload: bytes | None = None
        if ctype == "multipart/form-data":
            parts = _multipart(data, h.headers.get("Content-Type", ""))
            for key in ("csv", "ndjson", "file", "data"):
                if key in parts:
                    payload = parts.pop(key)
                    fields.setdefault("format", "ndjson" if key == "ndjson" else "csv")
                    break
            fields.update({k: v.decode("utf-8", "replace") for k, v in parts.items()
                           if k not in fields})  # fmt: skip
        elif ctype == "application/x-www-form-urlencoded":
            for key, values in parse_qs(data.decode("utf-8", "replace")).items():
                fields.setdefault(key, values[0])
        elif data:
            payload = data
        if fields.get("url"):
            raise _HTTPError(400, "imports from a URL are not supported by tblog local: "
                                  "send the file")  # fmt: skip
        name = fields.get("name", "")
        if not DATASOURCE_NAME.fullmatch(name):
            raise _HTTPError(400, "the name parameter is required: /v0/datasources?name=<name>")
        mode = fields.get("mode", "create").lower()
        fmt = fields.get("format", "csv")
        if mode == "create":
            out = create(token, name, fields)
            if payload:
                out = append(token, name, payload, fmt)
            return 200, out
        if mode in ("append", "replace"):
            if fields.get("replace_condition"):
                raise _HTTPError(400, "replace_condition is not supported by tblog local")
            if mode == "replace":
                manager(token)
                found(token, name)
                server.store.truncate(name)
            return 200, append(token, name, payload or b"", fmt, mode)
        raise _HTTPError(400, f"mode must be create, append or replace, not {mode!r}")

    def v1_append(h: BaseHTTPRequestHandler, params: dict[str, list[str]], name: str,
                  mode: str) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        data = body(h)
        name = unquote(name)
        ctype = h.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        fmt = (params.get("format") or ["ndjson" if "json" in ctype else "csv"])[0]
        if mode == "replace":
            manager(token)
            found(token, name)
            server.store.truncate(name)
        with server._ingest_slots:
            out = append(token, name, inflated(h, data), fmt, mode)
        out.pop("error")  # the Forward CLI reads any "error" key as a failure
        return 200, out

    def truncate(h: BaseHTTPRequestHandler, params: dict[str, list[str]],
                 name: str) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        body(h)
        manager(token)
        found(token, unquote(name))
        server.store.truncate(unquote(name))
        return 200, {}

    def delete_rows(h: BaseHTTPRequestHandler, params: dict[str, list[str]],
                    name: str) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        fields = {k: v[0] for k, v in params.items() if v}
        for key, values in parse_qs(body(h).decode("utf-8", "replace")).items():
            fields.setdefault(key, values[0])
        manager(token)
        name = unquote(name)
        found(token, name)
        condition = fields.get("delete_condition", "").strip()
        if not condition:
            raise _HTTPError(400, "delete_condition is required")
        try:
            verified = verify_sql(f"SELECT count() FROM {name} WHERE ({condition})", [name],  # noqa: S608
                                  "default", known=[name])  # fmt: skip
        except SqlRefusedError as exc:
            raise _HTTPError(400, f"delete_condition refused: {exc}") from None
        where = verified.sql.split(" WHERE ", 1)[1]
        job = str(uuid.uuid4())
        if fields.get("dry_run", "").lower() == "true":
            counted = server.store.query(verified.sql, "TSV").decode().strip()
            return 200, {"rows_to_be_deleted": int(counted or 0)}
        started = jobs_api.now()
        try:
            deleted = server.store.delete_where(name, where)
        except QueryError as exc:
            raise _HTTPError(400, f"[Error] {exc}") from None
        jobs_api.registry(server).add(  # for GET /v0/jobs/ID
            kind="delete_data", datasource=(one(name)["id"], name), creator=token.id,
            job_id=job, created_at=started, rows_affected=deleted,
            delete_condition=_clipped(condition, JOB_CONDITION_CHARS))  # fmt: skip
        return 200, {"id": job, "job_id": job, "delete_id": job, "status": "done",
                     "job_url": f"{server.url}/v0/jobs/{job}", "rows_affected": deleted,
                     "job": {"id": job, "kind": "delete_data", "status": "done",
                             "datasource": {"name": name}}}  # fmt: skip

    def drop(h: BaseHTTPRequestHandler, params: dict[str, list[str]],
             name: str) -> tuple[int, Any]:  # fmt: skip
        token = server.authenticate(h, params)
        name = unquote(name)
        found(token, name)
        if not token.admin:
            raise _HTTPError(403, "deleting a datasource needs an ADMIN token")
        if (params.get("dry_run") or [""])[0].lower() == "true":
            return 200, {"dependent_pipes": [], "dependent_materializations": []}
        server.store.drop(name)
        kept = _kept(server) / f"{name}.datasource"
        kept.unlink(missing_ok=True)
        return 204, b""

    n = r"([A-Za-z0-9_%.-]+)"
    return [
        ("GET", re.compile(rf"/v0/datasources/{n}"), get_one),
        ("POST", re.compile(r"/v0/datasources"), post_datasources),
        ("POST", re.compile(rf"/v1/datasources/{n}/(append|replace)"), v1_append),
        ("POST", re.compile(rf"/v0/datasources/{n}/truncate"), truncate),
        ("POST", re.compile(rf"/v0/datasources/{n}/delete"), delete_rows),
        ("DELETE", re.compile(rf"/v0/datasources/{n}"), drop),
    ]


def _clipped(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
