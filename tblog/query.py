"""Reading logs back: filtered queries, trace lookups, aggregated stats and a live tail.

``QueryClient`` talks to Tinybird's SQL API (or ``tblog local``'s) over the ``tb_logs``
columns.  Every user value becomes SQL only as an escaped literal (``tblog._sql``);
times go through epoch microseconds so the server's time zone never matters.  The
tail follows new rows with a ``(timestamp, event_id)`` cursor plus an optional
look-back window for rows that arrive late, de-duplicated by ``event_id``.

``recent_errors``, ``trace`` and ``level_counts`` call tblog's shipped pipes
(``tblog/pipes/*.pipe``: ``tblog local`` serves them; ``tb push`` them to Tinybird) so
that a ``PIPES:READ`` token is enough; when the pipe is missing (404) or the token may not
call it (403), or ``ds_name`` is not ``tb_logs``, they run the same query through the SQL
API instead (a miss is remembered for the client's life).
"""

# SQL is built from fixed text, checked names and tblog._sql literals only (S608); the
# public signatures follow LogTide's and TempoDB's positional arguments (PLR0917).
# ruff: noqa: S608, PLR0917

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tblog._closing import Closing
from tblog._delivery import foreground
from tblog._sql import QueryFailedError, SqlClient, identifier, number, string, to_us

__all__ = [
    "AggregatedStats",
    "LogEntry",
    "LogsResult",
    "QueryClient",
    "QueryFailedError",
    "Tail",
    "parse_interval",
]

_COLUMNS = (
    "level", "level_no", "logger", "message", "app_name", "environment", "hostname",
    "trace_id", "span_id", "exception_type", "exception_message", "exception_stacktrace",
    "extra",
)  # fmt: skip
_SELECT = (
    "toString(toUnixTimestamp64Micro(timestamp)) AS ts_us, toString(event_id) AS event_id, "
    + ", ".join(_COLUMNS)
)
_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|hour|d|day)s?\s*$", re.IGNORECASE)
_UNIT_US = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400,
            "day": 86400}  # fmt: skip
#: The look-back compares row counts per slice of this many microseconds.
_LATE_SLICE_US = 100_000
#: The look-back compares row counts per slice of this many microseconds.
_LATE_SLICE_US = 100_000
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


def parse_interval(text: str) -> int:
    """``"1h"``, ``"15m"``, ``"30s"``, ``"1d"`` (also ``min``/``hour``/``day``) in microseconds."""
    m = _INTERVAL.match(text or "")
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"interval must look like 30s, 5m, 1h or 1d, not {text!r}")
    return int(m.group(1)) * _UNIT_US[m.group(2).lower()] * 1_000_000


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(
        microsecond=us % 1_000_000
    )


@dataclass(frozen=True)
class LogEntry:
    """One row of ``tb_logs`` as read back."""

    timestamp: datetime
    event_id: str
    level: str
    level_no: int
    logger: str
    message: str
    app_name: str
    environment: str = ""
    hostname: str = ""
    trace_id: str = ""
    span_id: str = ""
    exception_type: str = ""
    exception_message: str = ""
    exception_stacktrace: str = ""
    extra: str = "{}"

    @property
    def cursor(self) -> tuple[int, str]:
        return to_us(self.timestamp), self.event_id

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LogEntry:
        values = {c: row.get(c, "") for c in _COLUMNS}
        values["level_no"] = int(values["level_no"] or 0)
        return cls(timestamp=_dt(int(row["ts_us"])), event_id=str(row["event_id"]), **values)


@dataclass(frozen=True)
class LogsResult:
    """``query()``'s answer: the page of ``logs`` and the ``total`` matching rows."""

    total: int
    logs: list[LogEntry]


@dataclass(frozen=True)
class AggregatedStats:
    """Counts per interval and level, top apps and loggers, and the error rate."""

    timeseries: list[dict[str, Any]]
    top_apps: list[tuple[str, int]]
    top_loggers: list[tuple[str, int]]
    total: int
    errors: int
    error_rate: float = field(default=0.0)


def _filters(
    app: str | None = None,
    level: str | None = None,
    logger: str | None = None,
    q: str | None = None,
    from_time: datetime | float | None = None,
    to_time: datetime | float | None = None,
    trace_id: str | None = None,
    min_level: str | None = None,
) -> list[str]:
    where: list[str] = []
    if app is not None:
        where.append(f"app_name = {string(app)}")
    if level is not None:
        where.append(f"level = {string(level.upper())}")
    if min_level is not None:
        if min_level.upper() not in _LEVELS:
            raise ValueError(f"unknown level {min_level!r}")
        where.append(f"level_no >= {_LEVELS[min_level.upper()]}")
    if logger is not None:
        where.append(f"logger = {string(logger)}")
    if q:
        where.append(f"positionCaseInsensitiveUTF8(message, {string(q)}) > 0")
    if from_time is not None:
        where.append(f"timestamp >= fromUnixTimestamp64Micro({number(to_us(from_time))})")
    if to_time is not None:
        where.append(f"timestamp < fromUnixTimestamp64Micro({number(to_us(to_time))})")
    if trace_id is not None:
        where.append(f"trace_id = {string(trace_id)}")
    return where


def _where(parts: list[str]) -> str:
    return ("WHERE " + " AND ".join(parts)) if parts else ""


def _pipe_time(ts: datetime | float) -> str:
    """A time as the shipped pipes take it: UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return _dt(to_us(ts)).strftime("%Y-%m-%d %H:%M:%S.%f")


class QueryClient(Closing):
    """Queries over a logs datasource (``tb_logs`` by default) through the SQL API.

    ``token`` falls back to ``$TB_READ_TOKEN``, ``$TB_TOKEN``, ``$TINYBIRD_TOKEN`` (a read
    token is enough); ``api_url`` to ``$TB_API_URL``, ``$TB_HOST``, Tinybird's default.
    A request the server answers 429/503, or the network fails, is sent again (bounded, as
    ``tblog send``); ``retry=False`` sends each once, for a caller that retries itself.
    """

    def __init__(
        self,
        token: str | None = None,
        api_url: str | None = None,
        ds_name: str = "tb_logs",
        timeout: float = 30.0,
        *,
        retry: bool = True,
    ) -> None:
        self.ds_name = identifier(ds_name)
        self._sql = SqlClient(
            token, api_url, timeout, retrying=foreground.DEFAULT if retry else foreground.ONCE
        )
        self._no_pipes: set[str] = set()  # shipped pipes found missing (or out of scope)

    def __repr__(self) -> str:
        return f"QueryClient(api_url={self._sql.api_url!r}, ds_name={self.ds_name!r})"

    def close(self) -> None:
        self._sql.close()

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of a raw SQL query (yours: no escaping is applied)."""
        return self._sql.rows(query)

    def query(
        self,
        app: str | None = None,
        level: str | None = None,
        logger: str | None = None,
        q: str | None = None,
        from_time: datetime | float | None = None,
        to_time: datetime | float | None = None,
        trace_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        min_level: str | None = None,
    ) -> LogsResult:
        """The newest matching logs first (``limit``/``offset`` page them) and their total.
        ``level`` keeps that level only; ``min_level`` that level and above (``WARN`` is
        ``WARNING``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be an int >= 0")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be an int >= 0")
        where = _where(_filters(app, level, logger, q, from_time, to_time, trace_id, min_level))
        total_rows = self._sql.rows(f"SELECT count() AS n FROM {self.ds_name} {where}")
        rows = self._sql.rows(
            f"SELECT {_SELECT} FROM {self.ds_name} {where} "
            f"ORDER BY timestamp DESC, event_id DESC LIMIT {limit} OFFSET {offset}"
        )
        return LogsResult(int(total_rows[0]["n"]), [LogEntry.from_row(r) for r in rows])

    def get_by_trace_id(self, trace_id: str) -> list[LogEntry]:
        """Every log of one trace, oldest first."""
        rows = self._sql.rows(
            f"SELECT {_SELECT} FROM {self.ds_name} WHERE trace_id = {string(trace_id)} "
            "ORDER BY timestamp, event_id"
        )
        return [LogEntry.from_row(r) for r in rows]

    def get_aggregated_stats(
        self,
        from_time: datetime | float,
        to_time: datetime | float,
        interval: str = "1h",
        app: str | None = None,
        top: int = 10,
    ) -> AggregatedStats:
        """Counts per (interval bucket, level) in ``[from_time, to_time)``, top apps and
        loggers, and the share of ERROR and CRITICAL logs.  Buckets are aligned on the
        UTC epoch (``interval`` of ``1d`` means UTC days)."""
        step = parse_interval(interval)
        where = _where(_filters(app=app, from_time=from_time, to_time=to_time))
        buckets = self._sql.rows(
            f"SELECT toString(intDiv(toUnixTimestamp64Micro(timestamp), {step}) * {step}) AS b,"
            f" level, count() AS n FROM {self.ds_name} {where} GROUP BY b, level ORDER BY b, level"
        )
        series: dict[int, dict[str, int]] = {}
        for row in buckets:
            series.setdefault(int(row["b"]), {})[row["level"]] = int(row["n"])
        timeseries = [
            {"bucket": _dt(b), "total": sum(levels.values()), "by_level": levels}
            for b, levels in sorted(series.items())
        ]
        tops = []
        for column in ("app_name", "logger"):
            rows = self._sql.rows(
                f"SELECT {column} AS k, count() AS n FROM {self.ds_name} {where} "
                f"GROUP BY k ORDER BY n DESC, k LIMIT {int(top)}"
            )
            tops.append([(str(r["k"]), int(r["n"])) for r in rows])
        totals = self._sql.rows(
            f"SELECT count() AS n, countIf(level_no >= 40) AS e FROM {self.ds_name} {where}"
        )
        total, errors = int(totals[0]["n"]), int(totals[0]["e"])
        return AggregatedStats(
            timeseries, tops[0], tops[1], total, errors, errors / total if total else 0.0
        )

    # -- through the shipped pipes (tblog/pipes/*.pipe), else the SQL API -----------------

    def _pipe(self, name: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
        """Rows of a shipped pipe; None when it is missing, the token may not call it
        (the caller then runs the same query as SQL) or ``ds_name`` is not ``tb_logs``."""
        if self.ds_name != "tb_logs" or name in self._no_pipes:
            return None
        rows = self._sql.pipe_rows(name, params)
        if rows is None:
            self._no_pipes.add(name)
        return rows

    def recent_errors(
        self,
        app: str | None = None,
        since: datetime | float | None = None,
        limit: int = 100,
        *,
        min_level: str = "ERROR",
    ) -> list[LogEntry]:
        """The newest logs at ``min_level`` and above, newest first (pipe ``recent_errors``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**31:
            raise ValueError("limit must be an int >= 0")
        level_no = _LEVELS.get(min_level.upper())
        if level_no is None:
            raise ValueError(f"unknown level {min_level!r}")
        params = {"min_level_no": str(level_no), "limit": str(limit)}
        if app is not None:
            params["app"] = app
        if since is not None:
            params["since"] = _pipe_time(since)
        rows = self._pipe("recent_errors", params)
        if rows is None:
            where = _where(_filters(app=app, from_time=since, min_level=min_level))
            rows = self._sql.rows(
                f"SELECT {_SELECT} FROM {self.ds_name} {where} "
                f"ORDER BY timestamp DESC, event_id DESC LIMIT {limit}"
            )
        return [LogEntry.from_row(r) for r in rows]

    def trace(self, trace_id: str, limit: int = 10_000) -> list[LogEntry]:
        """The logs of one trace, oldest first, at most ``limit`` (pipe ``trace_rows``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**31:
            raise ValueError("limit must be an int >= 0")
        rows = self._pipe("trace_rows", {"trace_id": trace_id, "limit": str(limit)})
        if rows is None:
            rows = self._sql.rows(
                f"SELECT {_SELECT} FROM {self.ds_name} WHERE trace_id = {string(trace_id)} "
                f"ORDER BY timestamp, event_id LIMIT {limit}"
            )
        return [LogEntry.from_row(r) for r in rows]

    def level_counts(
        self,
        from_time: datetime | float | None = None,
        to_time: datetime | float | None = None,
        interval: str = "1h",
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """Counts per ``interval`` bucket (aligned on the UTC epoch) and level in
        ``[from_time, to_time)``, as ``get_aggregated_stats().timeseries`` gives them:
        ``{"bucket": datetime, "total": n, "by_level": {level: n}}`` (pipe ``level_counts``)."""
        step = parse_interval(interval)
        params = {"step_seconds": str(step // 1_000_000)}
        if from_time is not None:
            params["from_time"] = _pipe_time(from_time)
        if to_time is not None:
            params["to_time"] = _pipe_time(to_time)
        if app is not None:
            params["app"] = app
        rows = self._pipe("level_counts", params)
        if rows is None:
            where = _where(_filters(app=app, from_time=from_time, to_time=to_time))
            rows = self._sql.rows(
                f"SELECT toString(intDiv(toUnixTimestamp64Micro(timestamp), {step}) * {step}) "
                f"AS bucket_us, level, count() AS n FROM {self.ds_name} {where} "
                "GROUP BY bucket_us, level ORDER BY bucket_us, level"
            )
        series: dict[int, dict[str, int]] = {}
        for row in rows:
            series.setdefault(int(row["bucket_us"]), {})[str(row["level"])] = int(row["n"])
        return [
            {"bucket": _dt(b), "total": sum(levels.values()), "by_level": levels}
            for b, levels in sorted(series.items())
        ]

    def tail(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        since: datetime | float | None = None,
        poll_interval: float = 1.0,
        lookback: float = 5.0,
        batch_size: int = 1000,
    ) -> Tail:
        """An iterator over new rows matching ``filters`` (``query()``'s keyword names, plus
        ``min_level``), oldest first; ``since`` defaults to now.  ``lookback`` (seconds)
        re-reads that far behind the cursor for rows that arrive late (buffered by their
        producers), never returning a row twice and never reaching before ``since``."""
        return Tail(self, dict(filters or {}), since, poll_interval, lookback, batch_size)

    def stream(
        self,
        on_log: Callable[[LogEntry], None],
        on_error: Callable[[Exception], None] | None = None,
        filters: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Tail:
        """Follow new rows on a daemon thread, calling ``on_log`` for each; ``on_error`` gets
        query failures (the stream keeps polling).  ``.stop()`` on the result ends it."""
        tail = self.tail(filters, **options)
        tail.on_error = on_error

        def run() -> None:
            for entry in tail:
                on_log(entry)

        tail.thread = threading.Thread(target=run, name="tblog-stream", daemon=True)
        tail.thread.start()
        return tail


class Tail:
    """Follows a logs datasource with a ``(timestamp, event_id)`` cursor.

    Each ``poll()`` reads the rows after the cursor, in cursor order, page by page (no
    pause between full pages), then the rows that landed late, up to ``lookback`` seconds
    behind the cursor: those are found by comparing per-slice row counts with what was
    returned, and read again de-duplicated by ``event_id``, so nothing is returned twice.
    """

    def __init__(
        self,
        client: QueryClient,
        filters: dict[str, Any],
        since: datetime | float | None,
        poll_interval: float,
        lookback: float,
        batch_size: int,
    ) -> None:
        self._client = client
        self._where = _filters(**filters)
        start = to_us(since) if since is not None else to_us(datetime.now(timezone.utc))
        self.cursor: tuple[int, str] = (start - 1, "ffffffff-ffff-ffff-ffff-ffffffffffff")
        self._floor = self.cursor  # the look-back never reaches before ``since``
        self.poll_interval = poll_interval
        self.lookback_us = round(lookback * 1_000_000)
        self.batch_size = batch_size
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self.on_error: Callable[[Exception], None] | None = None
        self.thread: threading.Thread | None = None

    def _page(
        self, after: tuple[int, str] | None, bounds: tuple[int, int] | None = None
    ) -> list[LogEntry]:
        """The next page of rows after ``after`` (all rows when None), within ``bounds``
        (inclusive microsecond timestamps) when given."""
        where = list(self._where)
        if after is not None:
            where += [
                f"timestamp >= fromUnixTimestamp64Micro({after[0]})",
                f"(timestamp, toString(event_id)) > (fromUnixTimestamp64Micro({after[0]}), "
                f"{string(after[1])})",
            ]
        if bounds is not None:
            where += [
                f"timestamp >= fromUnixTimestamp64Micro({bounds[0]})",
                f"timestamp <= fromUnixTimestamp64Micro({bounds[1]})",
            ]
        rows = self._client.sql(
            f"SELECT {_SELECT} FROM {self._client.ds_name} {_where(where)} "
            f"ORDER BY timestamp, toString(event_id) LIMIT {int(self.batch_size)}"
        )
        return [LogEntry.from_row(r) for r in rows]

    def _read(
        self, after: tuple[int, str] | None, bounds: tuple[int, int] | None = None
    ) -> Iterator[LogEntry]:
        """The rows not returned yet after ``after`` (within ``bounds``), page by page."""
        while True:
            page = self._page(after, bounds)
            for entry in page:
                if entry.event_id in self._seen:
                    continue
                ts = to_us(entry.timestamp)
                if self.lookback_us:
                    self._seen[entry.event_id] = ts
                self.cursor = max(self.cursor, (ts, entry.event_id))
                yield entry
            self._prune()
            if len(page) < self.batch_size:
                return
            after = page[-1].cursor

    def _prune(self) -> None:
        """Forget returned rows that fell out of the look-back window, oldest returned
        first (so a long backlog never holds more than the window in memory)."""
        horizon = self.cursor[0] - self.lookback_us
        old = []
        for event_id, ts in self._seen.items():
            if ts >= horizon:
                break
            old.append(event_id)
        for event_id in old:
            del self._seen[event_id]

    def _late(self) -> Iterator[LogEntry]:
        """Rows that landed behind the cursor, within the look-back window.

        One query counts the distinct event ids per 100 ms of the window; only the slices
        holding more rows than were returned from them are read again (de-duplicated), so
        the look-back costs one aggregate per poll, not a re-read of the whole window."""
        hi = self.cursor[0]
        lo = max(hi - self.lookback_us, self._floor[0] + 1)
        if lo > hi:
            return
        step = _LATE_SLICE_US
        where = [
            *self._where,
            f"timestamp >= fromUnixTimestamp64Micro({lo})",
            f"timestamp <= fromUnixTimestamp64Micro({hi})",
        ]
        counts = self._client.sql(
            f"SELECT toString(intDiv(toUnixTimestamp64Micro(timestamp), {step})) AS s, "
            f"uniqExact(event_id) AS n FROM {self._client.ds_name} {_where(where)} GROUP BY s"
        )
        known: dict[int, int] = {}
        for ts in self._seen.values():
            if lo <= ts <= hi:
                known[ts // step] = known.get(ts // step, 0) + 1
        behind = sorted(int(r["s"]) for r in counts if int(r["n"]) > known.get(int(r["s"]), 0))
        spans: list[list[int]] = []
        for s in behind:  # adjacent slices are read as one span
            if spans and spans[-1][1] == s - 1:
                spans[-1][1] = s
            else:
                spans.append([s, s])
        for first, last in spans:
            yield from self._read(None, (max(lo, first * step), min(hi, (last + 1) * step - 1)))

    def poll_iter(self) -> Iterator[LogEntry]:
        """``poll()``'s rows as they are read, page by page (the cursor moves with each row
        yielded, so a failure part way loses nothing: the next poll goes on from there)."""
        yield from self._read(self.cursor)
        if self.lookback_us:
            yield from self._late()

    def poll(self) -> list[LogEntry]:
        """The rows that arrived since the last poll (possibly none): the new ones after the
        cursor, then the late ones within ``lookback`` behind it."""
        return list(self.poll_iter())

    def stop(self) -> None:
        """End the iteration (and a ``stream``'s thread) at the next poll boundary."""
        self._stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(self.poll_interval + 30)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def __iter__(self) -> Iterator[LogEntry]:
        while not self._stop.is_set():
            got = False
            try:
                for entry in self.poll_iter():
                    if self._stop.is_set():
                        return
                    got = True
                    yield entry
            except QueryFailedError as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc)
            if not got:
                self._stop.wait(self.poll_interval)
