"""The chDB side: one embedded ClickHouse session over a persistent data directory.

Owns the tables (one per datasource, plus ``<name>_quarantine``), typed batch inserts
(one ``INSERT ... FORMAT JSONEachRow`` per request; when ClickHouse refuses a batch,
halves are retried so only the offending rows go to quarantine), write-side row
filters, and read-only query execution in a per-token database of filtered views.
chDB sessions are not thread-safe: every call holds ``self.lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tblog._encode import dumps
from tblog.local.convert import RowMapper, to_text
from tblog.local.datafile import Datasource, quote_identifier

__all__ = ["IngestResult", "QueryError", "Store", "sql_string"]

_INSERT_SETTINGS = (
    "SETTINGS date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1"
)
_MAX_RAW = 64 * 1024


class QueryError(Exception):
    """ClickHouse refused a query; the message is ClickHouse's first line."""


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


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


class Store:
    """Tables of every datasource in one chDB session (thread-safe through ``lock``)."""

    def __init__(self, data_dir: str | Path) -> None:
        chdb_session: Any = importlib.import_module("chdb.session")  # the tblog[local] extra

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self._session = chdb_session.Session(str(self.data_dir))
        self.datasources: dict[str, Datasource] = {}
        self._mappers: dict[str, RowMapper] = {}
        self._views: set[str] = set()
        # Rows accepted with wait=false, inserted by the writer thread in bigger batches
        # (an INSERT costs ~5 ms whatever its size); every read drains them first.
        self._pending: dict[str, list[bytes]] = {}
        self._pending_lock = threading.Lock()
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
            self._session.close()

    # -- raw access -------------------------------------------------------------------

    def _run(self, sql: str, fmt: str = "CSV") -> bytes:
        """Run one statement; caller holds the lock."""
        try:
            result = self._session.query(sql, fmt)
        except Exception as exc:  # noqa: BLE001 - chDB raises its own error types
            raise QueryError(_first_line(exc)) from None
        data = result.bytes() if hasattr(result, "bytes") else bytes(result)
        return bytes(data)

    def execute(self, sql: str, fmt: str = "CSV") -> bytes:
        self.drain()
        with self.lock:
            return self._run(sql, fmt)

    # -- schema -----------------------------------------------------------------------

    def register(self, datasource: Datasource) -> None:
        """Create the datasource's table and its quarantine table (if missing)."""
        with self.lock:
            self._run(datasource.create_sql())
            self._run(datasource.quarantine_sql())
            self.datasources[datasource.name] = datasource
            self._mappers[datasource.name] = RowMapper(datasource)

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
        if not wait and not row_filter:
            lines = [dumps(row) for row in good]
            if quarantine:
                with self.lock:
                    self._quarantine(name, quarantine)
            with self._pending_lock:
                self._pending.setdefault(name, []).extend(lines)
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="tblog-local-writer", daemon=True
                    )
                    self._writer.start()
            self._wake.set()
            result.successful_rows = len(lines)
            result.quarantined_rows = len(quarantine)
            result.errors = [e for q in quarantine[:5] for e in q.errors[:1]]
            return result
        with self.lock:
            lines = [dumps(row) for row in good]
            if row_filter and lines:
                keep = self._filter(name, lines, row_filter)
                result.rejected_rows = len(lines) - sum(keep)
                lines = [line for line, ok in zip(lines, keep, strict=True) if ok]
            failed = self._insert(name, lines)
            result.successful_rows = len(lines) - len(failed)
            for index, error in failed:
                quarantine.append(_Quarantined([], [error], {}, lines[index].decode()[:_MAX_RAW]))
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
        pending = [(0, len(lines))]
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

    def _filter(self, name: str, lines: list[bytes], row_filter: str) -> list[bool]:
        """Evaluate ``row_filter`` on each typed row, in order."""
        ds = self.datasources[name]
        structure = ", ".join(f"{quote_identifier(c.name)} {c.type}" for c in ds.columns
                              if c.insertable)  # fmt: skip
        verdicts = self._filter_rows(structure, lines, row_filter)
        if verdicts is not None:
            return verdicts
        # ClickHouse refused the batch (a value it cannot parse): judge row by row; a row
        # it cannot parse at all is kept here, so that the insert quarantines it.
        return [(self._filter_rows(structure, [line], row_filter) or [True])[0] for line in lines]

    def _filter_rows(
        self, structure: str, lines: list[bytes], row_filter: str
    ) -> list[bool] | None:
        data = b"\n".join(lines).decode("utf-8")
        sql = (
            f"SELECT toUInt8(({row_filter})) FROM format(JSONEachRow, {sql_string(structure)}, "  # noqa: S608 - the filter is the admin's
            f"{sql_string(data)}) SETTINGS max_threads = 1, input_format_parallel_parsing = 0, "
            "date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1"
        )
        try:
            out = self._run(sql, "TSV").split()
        except QueryError:
            return None
        if len(out) != len(lines):
            return None
        return [v == b"1" for v in out]

    def _quarantine(self, name: str, rows: list[_Quarantined]) -> None:
        import_id = uuid.uuid4().hex
        lines = []
        for q in rows:
            record: dict[str, Any] = dict(q.values)
            record.update(c__error_column=q.columns, c__error=q.errors, c__import_id=import_id,
                          c__raw=q.raw)  # fmt: skip
            lines.append(dumps(record))
        table = quote_identifier(name + "_quarantine")
        self._run(
            f"INSERT INTO {table} SETTINGS input_format_skip_unknown_fields = 1 "
            "FORMAT JSONEachRow\n" + b"\n".join(lines).decode("utf-8")
        )

    # -- reads ------------------------------------------------------------------------

    def token_database(self, key: str, readable: dict[str, str | None]) -> str:
        """A database of views, one per readable table, each filtered by its row filter.

        ``readable`` maps table names to a SQL filter (or None).  Created once per key.
        """
        digest = hashlib.sha256(repr((key, sorted(readable.items(), key=str))).encode())
        db = "tok_" + digest.hexdigest()[:16]
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

    def query(self, sql: str, fmt: str, database: str = "default") -> bytes:
        """Run a read-only query (``readonly = 1``) with ``database`` as the current one."""
        self.drain()
        with self.lock:
            self._run(f"USE {database}")
            try:
                return self._run(f"{sql}\nSETTINGS readonly = 1", fmt)
            finally:
                self._run("USE default")

    def explain_ast(self, sql: str) -> str:
        with self.lock:
            return self._run(f"EXPLAIN AST {sql}", "TSVRaw").decode("utf-8", "replace")
