"""The chDB side: one embedded ClickHouse session over a persistent data directory.

The data directory is held (``tblog.local.datadir.DataDirLock``) from the ``Store``'s
opening to its ``close()``: a second store on it fails with ``DataDirInUseError``.

Owns the tables (one per datasource, plus ``<name>_quarantine``), typed batch inserts
(``INSERT ... FORMAT JSONEachRow`` of at most 1 MiB each; when ClickHouse refuses one,
halves are retried so only the offending rows go to quarantine), write-side row
filters (no row reaches a table, quarantine included, unless the filter says yes on
what that table would hold), and read-only query execution in a per-token database of
filtered views; also dropping, truncating and deleting rows by condition (the Data
Sources API), and each table's creation and last-change times.
Writes go through one chDB session and hold ``self.lock``; SQL API reads run on a
second session without that lock (with the server's ``QueryLimits``), so a slow query
never stalls ingest.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tblog._event.encode import dumps
from tblog.local.convert import RowMapper, to_text
from tblog.local.datadir import DataDirLock
from tblog.local.datafile import _QUARANTINE_OWN, Column, Datasource, quote_identifier

__all__ = ["READ_DATABASE", "IngestResult", "QueryError", "QueryLimits", "Store", "sql_string"]

_INSERT_SETTINGS = (
    "SETTINGS date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1"
)
_MAX_RAW = 64 * 1024
#: Queued rows (wait=false) beyond which a request inserts them itself, not the writer.
_MAX_PENDING_BYTES = 16 * 1024 * 1024
#: Rows per INSERT (or filter query) are cut at this many bytes of JSON.
_MAX_STATEMENT_BYTES = 1024 * 1024


#: The read session's current database: empty, so a bare table name finds nothing.
READ_DATABASE = "tblog_read"


@dataclass
class QueryLimits:
    """Limits the server sets on every SQL API query (the query text cannot change them).

    ``max_execution_time`` in seconds; ``max_memory_usage`` and ``max_result_bytes`` in
    bytes; a result over ``max_result_rows``/``max_result_bytes`` is an error
    (``result_overflow_mode = 'throw'``), never a silently cut answer.
    """

    max_execution_time: float = 10.0
    max_memory_usage: int = 2 * 1024**3
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 256 * 1024**2

    def settings_sql(self) -> str:
        return (
            f"max_execution_time = {float(self.max_execution_time)!r}, "
            f"max_memory_usage = {int(self.max_memory_usage)}, "
            f"max_result_rows = {int(self.max_result_rows)}, "
            f"max_result_bytes = {int(self.max_result_bytes)}, "
            "result_overflow_mode = 'throw', readonly = 1"
        )


class QueryError(Exception):
    """ClickHouse refused a query; the message is ClickHouse's first line."""


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _stamp(seconds: float) -> str:
    """A Unix time as Tinybird writes ``created_at``: ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _answer(session: Any, sql: str, fmt: str, reopen: Callable[[], None]) -> bytes:
    """``session``'s answer to ``sql``; when it fails, ``reopen()`` replaces the session (its
    partial output must not begin the next answer) and a ``QueryError`` is raised."""
    try:
        result = session.query(sql, fmt)
    except Exception as exc:  # noqa: BLE001 - chDB raises its own error types
        reopen()
        raise QueryError(_first_line(exc)) from None
    data = result.bytes() if hasattr(result, "bytes") else bytes(result)
    return bytes(data)


@dataclass
class IngestResult:
    successful_rows: int = 0
    quarantined_rows: int = 0
    rejected_rows: int = 0  # rows outside the token's row filter
    errors: list[str] = field(default_factory=list)


@dataclass
class _Quarantined:
    columns: list[str]
    errors: list[str]
    values: dict[str, str | None]
    raw: str | None = None


def _spans(lines: list[bytes]) -> list[tuple[int, int]]:
    """``lines`` cut into runs of at most ``_MAX_STATEMENT_BYTES`` (one line at least):
    chDB holds many times a statement's size while it runs it."""
    spans: list[tuple[int, int]] = []
    lo = size = 0
    for i, line in enumerate(lines):
        if i > lo and size + len(line) > _MAX_STATEMENT_BYTES:
            spans.append((lo, i))
            lo, size = i, 0
        size += len(line) + 1
    if lo < len(lines):
        spans.append((lo, len(lines)))
    return spans


def _quarantine_line(q: _Quarantined, import_id: str) -> bytes:
    """The quarantine table's JSONEachRow line for ``q``."""
    record: dict[str, Any] = dict(q.values)
    record.update(c__error_column=q.columns, c__error=q.errors, c__import_id=import_id,
                  c__raw=q.raw)  # fmt: skip
    return _line(record)


def _line(value: Any) -> bytes:
    """``dumps(value)`` in a bytes object of its own size: orjson's answer keeps a buffer
    of 8 KiB or more, ten times a typical row, for as long as it is held."""
    return bytes(memoryview(dumps(value)))


def _structure_column(column: Column) -> str:
    """``column`` for a ``format()`` structure: its type and how it is computed when a row
    leaves it out (so a filter sees the values the table would store)."""
    parts = [quote_identifier(column.name), column.type]
    if column.default_kind in ("DEFAULT", "MATERIALIZED", "ALIAS") and column.default_expr:
        parts += [column.default_kind, column.default_expr]
    return " ".join(parts)


def default_server_memory() -> int:
    """Half of this machine's physical memory (ClickHouse's own default is 90%), at least 1 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3
    return max(1024**3, total // 2)


class Store:
    """Tables of every datasource in one chDB session (thread-safe through ``lock``)."""

    def __init__(self, data_dir: str | Path, *, max_server_memory: int | None = None) -> None:
        """``max_server_memory``: bytes the embedded ClickHouse may use in all (its
        ``max_server_memory_usage``; None: half of this machine's memory)."""
        chdb_session: Any = importlib.import_module("chdb.session")  # the tblog[local] extra

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # One server per data dir (DataDirInUseError otherwise), taken before chDB opens it.
        self.dir_lock = DataDirLock(self.data_dir)
        try:
            self._open(chdb_session, max_server_memory)
        except BaseException:
            self.dir_lock.release()
            raise

    def _open(self, chdb_session: Any, max_server_memory: int | None) -> None:
        self.lock = threading.Lock()
        if max_server_memory is None:
            max_server_memory = default_server_memory()
        self.max_server_memory = max_server_memory
        # One engine serves every session on the path: its first session sets the ceiling.
        self._chdb_session = chdb_session
        self._session_path = f"{self.data_dir}?max_server_memory_usage={int(max_server_memory)}"
        self._session = chdb_session.Session(self._session_path)
        #: Server-side limits of every SQL API query (mutable; LocalServer sets them).
        self.limits = QueryLimits()
        # A chDB session runs one query at a time anyway; this lock also keeps a session
        # from being replaced (after a failed query) while another thread uses it.
        self._read_lock = threading.Lock()
        self._read_session, self._read_shared = self._open_read_session(chdb_session)
        self.datasources: dict[str, Datasource] = {}
        self._mappers: dict[str, RowMapper] = {}
        self._views: set[str] = set()
        # Rows accepted with wait=false, inserted by the writer thread in bigger batches
        # (an INSERT costs ~5 ms whatever its size); every read drains them first.
        self._pending: dict[str, list[bytes]] = {}
        self._pending_lock = threading.Lock()
        self._pending_bytes = 0
        self._wake = threading.Event()
        self._closing = False
        self._writer: threading.Thread | None = None

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            self._writer.join(30)
        self.drain()
        with self.lock, contextlib.suppress(Exception):  # closing twice, or at exit
            if not self._read_shared:
                self._read_session.close()
            self._session.close()
        self.dir_lock.release()

    # -- raw access -------------------------------------------------------------------

    def _run(self, sql: str, fmt: str = "CSV") -> bytes:
        """Run one statement; caller holds the lock.

        A statement that fails may leave its partial output in the session, where the
        next statement's answer would begin with it: the session is replaced by a fresh
        one on the same data (callers rely on exactly one answer per call)."""
        return _answer(self._session, sql, fmt, self._reopen_write_session)

    def _reopen_write_session(self) -> None:
        """Replace the write session (caller holds the lock); the new one opens before
        the old one closes, so the engine always has a session."""
        old = self._session
        self._session = self._chdb_session.Session(self._session_path)
        if self._read_shared:
            self._read_session = self._session
        with contextlib.suppress(Exception):
            old.close()

    # -- schema -----------------------------------------------------------------------

    def register(self, datasource: Datasource) -> None:
        """Create the datasource's table and its quarantine table (if missing)."""
        with self.lock:
            self._run(datasource.create_sql())
            self._run(datasource.quarantine_sql())
            self.datasources[datasource.name] = datasource
            self._mappers[datasource.name] = RowMapper(datasource)

    def drop(self, name: str) -> None:
        """Drop the datasource's table and its quarantine table; forget the datasource."""
        self.drain()
        with self.lock:
            self.datasources.pop(name, None)
            self._mappers.pop(name, None)
            for table in (name, f"{name}_quarantine"):
                self._run(f"DROP TABLE IF EXISTS default.{quote_identifier(table)}")

    def truncate(self, name: str) -> None:
        """Remove every row of the datasource and of its quarantine table."""
        self.drain()
        with self.lock:
            for table in (name, f"{name}_quarantine"):
                self._run(f"TRUNCATE TABLE IF EXISTS default.{quote_identifier(table)}")

    def delete_where(self, name: str, condition: str) -> int:
        """Delete the rows of ``name`` where ``condition`` (a verified SQL expression)
        holds, synchronously; the number of rows deleted."""
        self.drain()
        table = f"default.{quote_identifier(name)}"
        with self.lock:
            before = int(self._run(f"SELECT count() FROM {table} FORMAT TSV", "TSV") or 0)  # noqa: S608
            self._run(f"ALTER TABLE {table} DELETE WHERE ({condition}) "
                      "SETTINGS mutations_sync = 2")  # fmt: skip
            after = int(self._run(f"SELECT count() FROM {table} FORMAT TSV", "TSV") or 0)  # noqa: S608
        return before - after

    def engine_of(self, table: str) -> str:
        """The engine of ``table`` in the default database ("" when there is none)."""
        with self.lock:
            where = f"database = currentDatabase() AND name = {sql_string(table)}"
            out = self._run(f"SELECT engine FROM system.tables WHERE {where} FORMAT TSV", "TSV")  # noqa: S608
        return out.decode().strip()

    def table_times(self) -> dict[str, tuple[str, str]]:
        """``{table: (created, updated)}`` as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC): when
        the table's metadata file was written, and when it last changed (its newest data
        part; the creation time while it has none)."""
        self.drain()
        with self.lock:
            parts = self._run(
                "SELECT table, toUnixTimestamp(max(modification_time)) FROM system.parts "
                "WHERE active AND database = currentDatabase() GROUP BY table FORMAT TSV",
                "TSV",
            )
        updated: dict[str, float] = {}
        for line in parts.decode().splitlines():
            table, _, stamp = line.partition("\t")
            if stamp.isdigit():
                updated[table] = float(stamp)
        times: dict[str, tuple[str, str]] = {}
        for path in (self.data_dir / "metadata" / "default").glob("*.sql"):
            try:
                created = path.stat().st_mtime
            except OSError:
                continue
            name = path.stem
            times[name] = (_stamp(created), _stamp(max(created, updated.get(name, 0.0))))
        return times

    def row_counts(self) -> dict[str, tuple[int, int]]:
        """``{name: (rows, bytes)}`` of every table in the default database."""
        self.drain()
        with self.lock:
            out = self._run(
                "SELECT name, total_rows, total_bytes FROM system.tables "
                "WHERE database = currentDatabase() FORMAT TSV",
                "TSV",
            )
        counts: dict[str, tuple[int, int]] = {}
        for line in out.decode().splitlines():
            name, rows, size = line.split("\t")
            counts[name] = (int(rows) if rows.isdigit() else 0, int(size) if size.isdigit() else 0)
        return counts

    def filtered_row_count(self, table: str, row_filter: str) -> int | None:
        """Rows of ``table`` where ``row_filter`` holds (None when it cannot be evaluated)."""
        self.drain()
        with self.lock:
            try:
                out = self._run(
                    f"SELECT count() FROM default.{quote_identifier(table)} WHERE ({row_filter}) "  # noqa: S608 - the filter is the admin's
                    "SETTINGS readonly = 1 FORMAT TSV",
                    "TSV",
                )
            except QueryError:
                return None
        text = out.decode().strip()
        return int(text) if text.isdigit() else None

    # -- writes -----------------------------------------------------------------------

    def ingest(
        self,
        name: str,
        objects: Sequence[Any],
        *,
        bad_lines: Iterable[tuple[str, str]] = (),
        row_filter: str | None = None,
        wait: bool = True,
    ) -> IngestResult:
        """Insert JSON objects into ``name``; misfits (and ``bad_lines``) go to quarantine.

        ``bad_lines`` are (raw text, error) pairs the caller could not even parse.
        Rows outside ``row_filter`` (a SQL condition) are counted and not stored.
        With ``wait=False`` the typed rows are queued for the writer thread (as Tinybird
        answers 202 before ingestion); rows ClickHouse then refuses still go to quarantine.
        """
        mapper = self._mappers[name]
        result = IngestResult()
        good: list[dict[str, Any]] = []
        sources: list[dict[str, Any]] = []  # the object of each good row (filtered tokens)
        quarantine: list[_Quarantined] = [
            _Quarantined([], [error], {}, raw[:_MAX_RAW]) for raw, error in bad_lines
        ]
        for obj in objects:
            if not isinstance(obj, dict):
                quarantine.append(_Quarantined([], ["the row is not a JSON object"], {},
                                               to_text(obj)[:_MAX_RAW]))  # fmt: skip
                continue
            row, errors = mapper.map(obj)
            if errors:
                quarantine.append(_Quarantined([c for c, _ in errors], [e for _, e in errors],
                                               mapper.raw_values(obj)))  # fmt: skip
            else:
                good.append(row)
                if row_filter:
                    sources.append(obj)
        if row_filter:
            return self._ingest_filtered(name, good, sources, quarantine, row_filter)
        if not wait:
            lines = [_line(row) for row in good]
            if quarantine:
                with self.lock:
                    self._quarantine(name, quarantine)
            with self._pending_lock:
                self._pending.setdefault(name, []).extend(lines)
                self._pending_bytes += sum(len(line) for line in lines)
                backlog = self._pending_bytes > _MAX_PENDING_BYTES
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="tblog-local-writer", daemon=True
                    )
                    self._writer.start()
            self._wake.set()
            if backlog:  # the writer is behind: this request waits, memory stays bounded
                self.drain()
            result.successful_rows = len(lines)
            result.quarantined_rows = len(quarantine)
            result.errors = [e for q in quarantine[:5] for e in q.errors[:1]]
            return result
        with self.lock:
            lines = [_line(row) for row in good]
            failed = self._insert(name, lines)
            result.successful_rows = len(lines) - len(failed)
            for index, error in failed:
                quarantine.append(_Quarantined([], [error], {}, lines[index].decode()[:_MAX_RAW]))
            if quarantine:
                self._quarantine(name, quarantine)
        result.quarantined_rows = len(quarantine)
        result.errors = [e for q in quarantine[:5] for e in q.errors[:1]]
        return result

    def _ingest_filtered(
        self,
        name: str,
        good: list[dict[str, Any]],
        sources: list[dict[str, Any]],
        quarantine: list[_Quarantined],
        row_filter: str,
    ) -> IngestResult:
        """Ingest for a token with a row filter: no row is stored unless the filter holds.

        Typed rows are judged as ClickHouse types them (DEFAULTs included); a row it
        cannot type, and every row bound for quarantine, is judged on the quarantine
        record itself (raw values as strings: what the tenant's view of the quarantine
        table would show).  A row whose verdict is not a plain yes is rejected.
        """
        mapper = self._mappers[name]
        result = IngestResult()
        with self.lock:
            lines = [_line(row) for row in good]
            kept: list[bytes] = []
            kept_sources: list[dict[str, Any]] = []
            for line, obj, verdict in zip(lines, sources, self._filter(name, lines, row_filter),
                                          strict=True):  # fmt: skip
                if verdict is True:
                    kept.append(line)
                    kept_sources.append(obj)
                elif verdict is False:
                    result.rejected_rows += 1
                else:  # ClickHouse cannot type it: quarantine, if its raw values match
                    quarantine.append(_Quarantined([], [verdict], mapper.raw_values(obj),
                                                   line.decode()[:_MAX_RAW]))  # fmt: skip
            failed = self._insert(name, kept)
            result.successful_rows = len(kept) - len(failed)
            for index, error in failed:
                quarantine.append(_Quarantined([], [error], mapper.raw_values(kept_sources[index]),
                                               kept[index].decode()[:_MAX_RAW]))  # fmt: skip
            if quarantine:
                verdicts = self._filter_quarantine(name, quarantine, row_filter)
                allowed = [q for q, ok in zip(quarantine, verdicts, strict=True) if ok is True]
                result.rejected_rows += len(quarantine) - len(allowed)
                quarantine = allowed
            if quarantine:
                self._quarantine(name, quarantine)
        result.quarantined_rows = len(quarantine)
        result.errors = [e for q in quarantine[:5] for e in q.errors[:1]]
        return result

    def _write_loop(self) -> None:
        while not self._closing:
            self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(Exception):  # the writer must outlive a bad batch
                self.drain()

    def drain(self) -> None:
        """Insert every queued row now (reads call this first, so they see them)."""
        with self.lock:
            with self._pending_lock:
                batches, self._pending = self._pending, {}
                self._pending_bytes = 0
            for name, lines in batches.items():
                failed = self._insert(name, lines)
                if failed:
                    self._quarantine(name, [
                        _Quarantined([], [error], {}, lines[i].decode()[:_MAX_RAW])
                        for i, error in failed
                    ])  # fmt: skip

    def _insert(self, name: str, lines: list[bytes]) -> list[tuple[int, str]]:
        """Insert ``lines``; return (index, error) of the lines ClickHouse refused."""
        failed: list[tuple[int, str]] = []
        pending = _spans(lines)[::-1]
        head = f"INSERT INTO {quote_identifier(name)} {_INSERT_SETTINGS} FORMAT JSONEachRow\n"
        while pending:
            lo, hi = pending.pop()
            if lo >= hi:
                continue
            try:
                self._run(head + b"\n".join(lines[lo:hi]).decode("utf-8"))
            except QueryError as exc:
                if hi - lo == 1:
                    failed.append((lo, str(exc)))
                else:
                    mid = (lo + hi) // 2
                    pending += [(mid, hi), (lo, mid)]
        return failed

    def _filter(self, name: str, lines: list[bytes], row_filter: str) -> list[bool | str]:
        """``row_filter`` on each typed row, in order: its verdict, or why ClickHouse
        could not judge it (a value it cannot type)."""
        ds = self.datasources[name]
        structure = ", ".join(_structure_column(c) for c in ds.columns)
        return self._judge(structure, lines, row_filter)

    def _filter_quarantine(
        self, name: str, rows: list[_Quarantined], row_filter: str
    ) -> list[bool | str]:
        """``row_filter`` on each quarantine record, as the quarantine table would hold it."""
        ds = self.datasources[name]
        structure = ", ".join(
            ["`c__error_column` Array(String)", "`c__error` Array(String)",
             "`c__import_id` Nullable(String)"]
            + [f"{quote_identifier(c.name)} Nullable(String)" for c in ds.columns
               if c.insertable and c.name not in _QUARANTINE_OWN]
            + ["`c__raw` Nullable(String)"]
        )  # fmt: skip
        return self._judge(structure, [_quarantine_line(q, "") for q in rows], row_filter)

    def _judge(self, structure: str, lines: list[bytes], row_filter: str) -> list[bool | str]:
        """Verdicts of ``_filter_rows`` on ``lines``; a refused batch is halved until the
        rows ClickHouse cannot read stand alone (their verdict is then the error)."""
        verdicts: list[bool | str] = ["not judged"] * len(lines)
        pending: list[tuple[int, int]] = []
        for lo, hi in _spans(lines):
            first = self._filter_rows(structure, lines[lo:hi], row_filter)
            if isinstance(first, list):
                verdicts[lo:hi] = first
            else:
                pending.append((lo, hi))
        if not pending:
            return verdicts
        probe = self._filter_rows(structure, [], row_filter)
        if isinstance(probe, str):  # the filter cannot run at all: no row can pass it
            return [v if isinstance(v, bool) else probe for v in verdicts]
        pending = [(a, b) for lo, hi in pending[::-1]
                   for a, b in (((lo + hi) // 2, hi), (lo, (lo + hi) // 2))]  # fmt: skip
        while pending:
            lo, hi = pending.pop()
            if lo >= hi:
                continue
            out = self._filter_rows(structure, lines[lo:hi], row_filter)
            if isinstance(out, list):
                verdicts[lo:hi] = out
            elif hi - lo == 1:
                verdicts[lo] = out
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
        return verdicts

    def _filter_rows(
        self, structure: str, lines: list[bytes], row_filter: str
    ) -> list[bool | str] | str:
        """One verdict per line (True only where the filter gives exactly 1), or the error
        that stopped ClickHouse.  The rows travel inside the query, so ``max_query_size``
        is raised to fit them: a big row must not escape the filter."""
        data = b"\n".join(lines).decode("utf-8")
        sql = (
            f"SELECT toUInt8(({row_filter})) FROM format(JSONEachRow, {sql_string(structure)}, "  # noqa: S608 - the filter is the admin's
            f"{sql_string(data)}) SETTINGS max_threads = 1, input_format_parallel_parsing = 0, "
            "date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1"
        )
        sql += f", max_query_size = {len(sql) * 2 + 65536}"
        try:
            out = self._run(sql, "TSV").split()
        except QueryError as exc:
            return str(exc)
        if len(out) != len(lines):
            return "the row filter did not give one verdict per row"
        return [v == b"1" for v in out]

    def _quarantine(self, name: str, rows: list[_Quarantined]) -> None:
        import_id = uuid.uuid4().hex
        lines = [_quarantine_line(q, import_id) for q in rows]
        table = quote_identifier(name + "_quarantine")
        for lo, hi in _spans(lines):
            self._run(
                f"INSERT INTO {table} SETTINGS input_format_skip_unknown_fields = 1 "
                "FORMAT JSONEachRow\n" + b"\n".join(lines[lo:hi]).decode("utf-8")
            )

    # -- reads ------------------------------------------------------------------------

    @staticmethod
    def token_database_name(key: str, readable: dict[str, str | None]) -> str:
        """The name ``token_database`` gives (without creating anything)."""
        digest = hashlib.sha256(repr((key, sorted(readable.items(), key=str))).encode())
        return "tok_" + digest.hexdigest()[:16]

    def token_database(self, key: str, readable: dict[str, str | None]) -> str:
        """A database of views, one per readable table, each filtered by its row filter.

        ``readable`` maps table names to a SQL filter (or None).  Created once per key.
        """
        db = self.token_database_name(key, readable)
        with self.lock:
            if db in self._views:
                return db
            self._run(f"CREATE DATABASE IF NOT EXISTS {db}")
            for table, row_filter in readable.items():
                where = f" WHERE ({row_filter})" if row_filter else ""
                self._run(
                    f"CREATE VIEW IF NOT EXISTS {db}.{quote_identifier(table)} AS "  # noqa: S608
                    f"SELECT * FROM default.{quote_identifier(table)}{where}"
                )
            self._views.add(db)
        return db

    def _open_read_session(self, chdb_session: Any) -> tuple[Any, bool]:
        """A second chDB session on the same data for SQL API reads, or the write one.

        chDB sessions on one path run queries concurrently (chdb >= 4), so a slow read
        never holds ``self.lock``, which every insert needs.  Its current database is an
        empty one: the SQL API qualifies every table it lets a query read, so a bare name
        that slipped through would find nothing.  If chDB cannot open a second session,
        reads share the write session (and its lock) as before.
        """
        self._run(f"CREATE DATABASE IF NOT EXISTS {READ_DATABASE}")
        try:
            session = chdb_session.Session(str(self.data_dir))
            session.query(f"USE {READ_DATABASE}")
            out = session.query("SELECT currentDatabase()", "CSV")
            if READ_DATABASE.encode() not in (out.bytes() if hasattr(out, "bytes") else b""):
                raise RuntimeError("USE did not stick")
        except Exception:  # noqa: BLE001 - an older chDB: one session for everything
            return self._session, True
        return session, False

    def query(self, sql: str, fmt: str, *, quote_64bit: bool = False) -> bytes:
        """Run a verified read (see ``sqlguard.verify_sql``) with the server's limits.

        Runs on the read session without ``self.lock``: ingest never waits for a read.
        The limits and ``readonly = 1`` come last in the text, from the server only.
        ``quote_64bit``: JSON formats write 64-bit integers as strings (Tinybird's
        ``output_format_json_quote_64bit_integers=1``; numbers by default, as Tinybird).
        """
        self.drain()  # rows accepted with wait=false become visible first
        quote = f"output_format_json_quote_64bit_integers = {int(quote_64bit)}"
        text = f"{sql}\nSETTINGS {quote}, {self.limits.settings_sql()}"
        with self._read_lock:
            if self._read_shared:  # no second session (or it could not be reopened)
                with self.lock:
                    return self._run(text, fmt)
            # A failed query's partial output would start the next answer (anyone's): a
            # fresh session, opened as the first one was, serves the next read.
            return _answer(self._read_session, text, fmt, self._reopen_read_session)

    def _reopen_read_session(self) -> None:
        """Replace the read session (caller holds ``_read_lock``)."""
        old = self._read_session
        with self.lock:
            try:
                self._read_session, self._read_shared = self._open_read_session(self._chdb_session)
            except QueryError:  # reads share the (fresh) write session from now on
                self._read_session, self._read_shared = self._session, True
        if old is not self._session:
            with contextlib.suppress(Exception):
                old.close()
