"""A TempoDB-style time-series API on Tinybird: series metadata, points, rollups, deletes.

Storage is append-only (see ``tblog/datasources/tblog_series*.datasource``):

* ``tblog_series``: one row per change of a series, newest ``version`` wins (tombstones
  have ``deleted = 1``); read with ``argMax(..., version)``, so it is correct before and
  after ClickHouse merges parts.
* ``tblog_series_points``: rows of kind ``set`` (write), ``inc`` (increment) or ``del``
  (tombstone).  A point's value is its newest ``set``/``del`` row plus every ``inc``
  newer than that, so concurrent increments are summed, never read-modified-written.

Writes go synchronously to the Events API (``wait=true``) so methods can report status;
a 429 or 503 is waited out and sent again (``tblog._delivery.foreground``: the server's
``Retry-After``, else backoff, bounded); a network error is not (the write may have
been stored) and raises ``WriteFailedError``.  Reads go to the SQL API with every user
value escaped by ``tblog._sql``, and retry like any ``SqlClient`` read.
"""

# SQL is built from fixed text, checked names and tblog._sql literals only (S608); the
# public signatures follow LogTide's and TempoDB's positional arguments (PLR0917).
# ruff: noqa: S608, PLR0917

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from tblog._config import resolve_api_url, resolve_token
from tblog._delivery import foreground
from tblog._http import session_for
from tblog._sql import QueryFailedError, SqlClient, number, string, to_us

__all__ = [
    "FUNCTIONS",
    "POINTS_DS",
    "SERIES_DS",
    "Client",
    "DataPoint",
    "DataSet",
    "DeleteSummary",
    "QueryFailedError",
    "Series",
    "WriteFailedError",
    "choose_interval",
    "parse_rollup",
]

SERIES_DS = "tblog_series"
POINTS_DS = "tblog_series_points"

#: TempoDB folding functions -> ClickHouse aggregate (stddev is the population one).
FUNCTIONS = {"sum": "sum", "max": "max", "min": "min", "avg": "avg", "mean": "avg",
             "stddev": "stddevPop", "count": "count"}  # fmt: skip
_ROLLUP = re.compile(r"^\s*(\d+)\s*(min|minute|hour|day|month|year)s?\s*$", re.IGNORECASE)
_CH_UNIT = {"min": "MINUTE", "minute": "MINUTE", "hour": "HOUR", "day": "DAY",
            "month": "MONTH", "year": "YEAR"}  # fmt: skip
_NAMESPACE = uuid.UUID("6f1c7d1e-4a55-4c8e-9a7e-2b7c1e0d9f10")


class WriteFailedError(Exception):
    """The Events API refused a write (``status`` is the HTTP status, 0 for network)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DataPoint:
    """One timestamp/value pair."""

    ts: datetime
    value: float


@dataclass
class Series:
    """Series metadata: a unique ``id``, a unique user ``key``, a name, tags and attributes."""

    id: str
    key: str
    name: str = ""
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSet:
    """Points of one series over ``[start, end)`` and a ``summary`` of the raw points there
    (sum, mean, min, max, count, stddev)."""

    series: Series
    start: datetime
    end: datetime
    data: list[DataPoint]
    summary: dict[str, float]


@dataclass(frozen=True)
class DeleteSummary:
    """How many series (``delete_series``) or points (``delete_id``/``delete_key``) went."""

    deleted: int


def parse_rollup(interval: str) -> tuple[int, str]:
    """``"5min"``, ``"1hour"``, ``"1day"``, ``"1month"``, ``"1year"`` -> (n, ClickHouse unit)."""
    m = _ROLLUP.match(interval or "")
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"interval must be 'raw' or like 5min, 1hour, 1day, 1month, 1year: "
                         f"{interval!r}")  # fmt: skip
    return int(m.group(1)), _CH_UNIT[m.group(2).lower()]


def choose_interval(start: datetime, end: datetime) -> str:
    """TempoDB's automatic rollup: <= 2 days raw, <= 30 days hourly, else daily."""
    span = _aware(end) - _aware(start)
    if span <= timedelta(days=2):
        return "raw"
    if span <= timedelta(days=30):
        return "1hour"
    return "1day"


def _aware(ts: datetime) -> datetime:
    if not isinstance(ts, datetime):
        raise TypeError("timestamps must be datetimes")
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def _iso(ts: datetime) -> str:
    us = to_us(ts)
    base = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    return base.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def _from_us(us: int, tz: ZoneInfo | timezone) -> datetime:
    return (
        datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
        .replace(microsecond=us % 1_000_000)
        .astimezone(tz)
    )


def _numeric(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _zone(tz: str | None) -> ZoneInfo | timezone:
    if tz is None:
        return timezone.utc
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


class Client:
    """TempoDB's client methods over Tinybird (or ``tblog local``).

    One ``token`` for both sides, or from the environment: reads use ``$TB_READ_TOKEN``,
    ``$TB_TOKEN``, ``$TINYBIRD_TOKEN``; writes ``$TB_WRITE_TOKEN``, ``$TB_TOKEN``,
    ``$TINYBIRD_TOKEN``.  The token is sent only in the ``Authorization`` header.
    """

    def __init__(
        self, token: str | None = None, api_url: str | None = None, timeout: float = 30.0
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self._sql = SqlClient(token, self.api_url, timeout)
        self._write_token = resolve_token(token)
        self.timeout = timeout
        self._session = session_for(self.api_url)
        self._lock = threading.Lock()
        self._last_version = 0
        self._known: set[str] = set()
        self._keys: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Client(api_url={self.api_url!r})"

    def close(self) -> None:
        self._session.close()
        self._sql.close()

    # -- plumbing -------------------------------------------------------------------

    def _version(self) -> int:
        """A strictly increasing version (nanoseconds since the epoch) for this process."""
        with self._lock:
            self._last_version = max(self._last_version + 1, time.time_ns())
            return self._last_version

    def _send(self, ds: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        try:
            response = foreground.call(
                lambda: self._session.post(
                    f"{self.api_url}/v0/events",
                    params={"name": ds, "wait": "true"},
                    data=body,
                    headers={"Authorization": f"Bearer {self._write_token}"},
                    timeout=self.timeout,
                ),
                idempotent=False,
                what="a series write",
            )
        except requests.RequestException as exc:
            raise WriteFailedError(
                f"the Events API is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code not in (200, 202):
            raise WriteFailedError(
                f"the Events API answered {response.status_code}: {response.text[:300]}".replace(
                    self._write_token, "***"
                ),
                response.status_code,
            )
        try:
            quarantined = int(response.json().get("quarantined_rows", 0))
        except (ValueError, AttributeError):
            quarantined = 0
        if quarantined:
            raise WriteFailedError(f"{quarantined} row(s) were quarantined by {ds}", 422)

    def _series_rows(self, ids: Iterable[str] | None, keys: Iterable[str] | None) -> list[Series]:
        where = []
        if ids:
            where.append(f"id IN ({', '.join(string(i) for i in ids)})")
        if keys:
            where.append(f"k IN ({', '.join(string(k) for k in keys)})")
        having = " AND ".join(["d = 0", *where])
        rows = self._sql.rows(
            f"SELECT id, argMax(key, version) AS k, argMax(name, version) AS n, "
            f"argMax(tags, version) AS t, argMax(attributes, version) AS a, "
            f"argMax(deleted, version) AS d FROM {SERIES_DS} GROUP BY id HAVING {having} "
            "ORDER BY k"
        )
        out = []
        for r in rows:
            out.append(Series(r["id"], r["k"], r["n"], list(json.loads(r["t"] or "[]")),
                              dict(json.loads(r["a"] or "{}"))))  # fmt: skip
        self._known.update(s.id for s in out)
        return out

    def _put_series(self, series: Series, deleted: bool = False) -> None:
        self._send(SERIES_DS, [{
            "id": series.id, "key": series.key, "name": series.name,
            "tags": json.dumps(list(series.tags)),
            "attributes": json.dumps(dict(series.attributes)),
            "deleted": int(deleted), "version": self._version(),
        }])  # fmt: skip
        if deleted:
            self._known.discard(series.id)
            self._keys.pop(series.key, None)
        else:
            self._known.add(series.id)

    @staticmethod
    def key_id(key: str) -> str:
        """The id of the series with ``key`` (derived from it, so concurrent creators agree)."""
        return uuid.uuid5(_NAMESPACE, key).hex

    def _ensure_key(self, key: str) -> str:
        sid = self._keys.get(key)
        if sid is not None:
            return sid
        found = self._series_rows(None, [key])
        if found:
            sid = found[0].id
        else:
            sid = self.key_id(key)
            self._put_series(Series(sid, key))
        self._keys[key] = sid
        return sid

    # -- series ---------------------------------------------------------------------

    def create_series(self, key: str | None = None) -> Series:
        """A new series with ``key`` (or a random one); an existing key is a ``ValueError``."""
        if key is None:
            sid = uuid.uuid4().hex
            series = Series(sid, sid)
        else:
            if not isinstance(key, str) or not key:
                raise ValueError("key must be a non-empty str")
            if self._series_rows(None, [key]):
                raise ValueError(f"a series with key {key!r} already exists")
            series = Series(self.key_id(key), key)
        self._put_series(series)
        return series

    def get_series(
        self,
        ids: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> list[Series]:
        """Series matching every filter given (tags and attributes are and'ed)."""
        found = self._series_rows(ids, keys)
        want_tags = set(tags or ())
        want_attrs = dict(attributes or {})
        return [
            s for s in found
            if want_tags <= set(s.tags)
            and all(s.attributes.get(k) == v for k, v in want_attrs.items())
        ]  # fmt: skip

    def update_series(self, series: Series) -> Series:
        """Replace the series' name, tags and attributes (its id and key stay)."""
        current = self._series_rows([series.id], None)
        if not current:
            raise ValueError(f"no series with id {series.id!r}")
        if series.key != current[0].key:
            raise ValueError("a series' key cannot change")
        self._put_series(series)
        return series

    def delete_series(
        self,
        ids: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        attributes: Mapping[str, str] | None = None,
        allow_truncation: bool = False,
    ) -> DeleteSummary:
        """Delete the matching series and their points; no filter needs ``allow_truncation``."""
        has_filter = bool(ids or keys or tags or attributes)
        if not has_filter and not allow_truncation:
            raise ValueError("delete_series without a filter deletes every series: "
                             "pass allow_truncation=True to mean it")  # fmt: skip
        if has_filter and allow_truncation:
            raise ValueError("allow_truncation is mutually exclusive with the filters")
        victims = self.get_series(ids, keys, tags, attributes)
        for series in victims:
            self._delete_points(series.id, None, None)
            self._put_series(series, deleted=True)
        return DeleteSummary(len(victims))

    # -- writes ---------------------------------------------------------------------

    def _rows(
        self, items: Iterable[tuple[str, datetime, float]], kind: str
    ) -> list[dict[str, Any]]:
        return [
            {"series_id": sid, "ts": _iso(_aware(ts)), "value": float(v), "kind": kind,
             "version": self._version()}
            for sid, ts, v in items
        ]  # fmt: skip

    def _points(self, series_id: str, data: Sequence[DataPoint], kind: str) -> None:
        for p in data:
            if not _numeric(p.value):
                raise ValueError(f"data point values must be finite numbers: {p.value!r}")
        self._send(POINTS_DS, self._rows(((series_id, p.ts, p.value) for p in data), kind))

    def write_id(self, series_id: str, data: Sequence[DataPoint]) -> None:
        """Write points to the series ``series_id`` (a point at the same ts is replaced)."""
        self._points(series_id, data, "set")

    def write_key(self, series_key: str, data: Sequence[DataPoint]) -> None:
        """Write points to the series ``series_key``, creating it when new."""
        self._points(self._ensure_key(series_key), data, "set")

    def increment_id(self, series_id: str, data: Sequence[DataPoint]) -> None:
        """Add each point's value to the series' value at its timestamp."""
        self._points(series_id, data, "inc")

    def increment_key(self, series_key: str, data: Sequence[DataPoint]) -> None:
        """``increment_id`` by key, creating the series when new."""
        self._points(self._ensure_key(series_key), data, "inc")

    def _multi(self, items: Sequence[Mapping[str, Any]], kind: str,
               ts: datetime | None) -> list[dict[str, Any]]:  # fmt: skip
        statuses: list[dict[str, Any]] = []
        good: list[tuple[str, datetime, float]] = []
        for item in items:
            messages = []
            t = item.get("t", ts)
            if not isinstance(t, datetime):
                messages.append("Must provide a timestamp")
            if not _numeric(item.get("v")):
                messages.append("Must provide a numeric value")
            sid, key = item.get("id"), item.get("key")
            if not (isinstance(sid, str) and sid) and not (isinstance(key, str) and key):
                messages.append("Must provide a series ID or key")
            if messages:
                statuses.append({"status": "422", "messages": messages})
                continue
            assert isinstance(t, datetime)
            target = sid if isinstance(sid, str) and sid else self._ensure_key(str(key))
            good.append((target, t, float(item["v"])))
            statuses.append({"status": "200", "messages": []})
        self._send(POINTS_DS, self._rows(good, kind))
        return statuses

    def write_bulk(self, ts: datetime, data: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Write ``{'id' or 'key', 'v'}`` items at ``ts``; one status per item (207-style)."""
        return self._multi(data, "set", ts)

    def write_multi(self, data: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Write ``{'t', 'id' or 'key', 'v'}`` items; one status per item: ``"200"`` for
        written, ``"422"`` with messages for rejected (the others are still written)."""
        return self._multi(data, "set", None)

    def increment_bulk(
        self, ts: datetime, data: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """``write_bulk`` that adds instead of replacing."""
        return self._multi(data, "inc", ts)

    def increment_multi(self, data: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``write_multi`` that adds instead of replacing."""
        return self._multi(data, "inc", None)

    # -- reads ----------------------------------------------------------------------

    @staticmethod
    def _effective(ids: Sequence[str], start: datetime | None, end: datetime | None) -> str:
        """SQL of the live points (series_id, ts, v) of ``ids`` in ``[start, end)``."""
        where = [f"series_id IN ({', '.join(string(i) for i in ids)})"]
        if start is not None:
            where.append(f"ts >= fromUnixTimestamp64Micro({number(to_us(start))}, 'UTC')")
        if end is not None:
            where.append(f"ts < fromUnixTimestamp64Micro({number(to_us(end))}, 'UTC')")
        return (
            "SELECT series_id, ts, sumIf(value, kind != 'del') AS v "
            "FROM (SELECT series_id, ts, value, kind, version, "
            "max(if(kind != 'inc', version, 0)) OVER (PARTITION BY series_id, ts) AS base "
            f"FROM {POINTS_DS} WHERE {' AND '.join(where)}) "
            "WHERE version >= base GROUP BY series_id, ts HAVING countIf(kind != 'del') > 0"
        )

    def read(
        self,
        start: datetime,
        end: datetime,
        interval: str | None = None,
        function: str | None = None,
        ids: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        attributes: Mapping[str, str] | None = None,
        tz: str | None = None,
    ) -> list[DataSet]:
        """DataSets of the matching series over ``[start, end)``, rolled up by ``interval``
        with ``function`` (automatic choice when neither is given); points are in ``tz``."""
        start, end = _aware(start), _aware(end)
        if end < start:
            raise ValueError("end must not be before start")
        zone = _zone(tz)
        if function is not None and function.lower() not in FUNCTIONS:
            raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}: {function!r}")
        if interval is None:
            interval = choose_interval(start, end)
        series = self.get_series(ids, keys, tags, attributes)
        if not series:
            return []
        sids = [s.id for s in series]
        points: dict[str, list[DataPoint]] = {s: [] for s in sids}
        effective = self._effective(sids, start, end)
        if interval.lower() == "raw":
            rows = self._sql.rows(
                "SELECT series_id, toString(toUnixTimestamp64Micro(ts)) AS us, v "
                f"FROM ({effective}) ORDER BY series_id, ts"
            )
        else:
            n, unit = parse_rollup(interval)
            agg = FUNCTIONS[(function or "mean").lower()]
            zname = string(tz or "UTC")
            rows = self._sql.rows(
                "SELECT series_id, toString(toUnixTimestamp64Micro(toDateTime64(toStartOfInterval("
                f"toTimeZone(ts, {zname}), INTERVAL {n} {unit}), 6, {zname}))) AS us, "
                f"{agg}(v) AS v FROM ({effective}) GROUP BY series_id, us ORDER BY series_id, us"
            )
        for r in rows:
            points[r["series_id"]].append(DataPoint(_from_us(int(r["us"]), zone), float(r["v"])))
        summaries = {
            r["series_id"]: {
                "sum": float(r["sum"]), "mean": float(r["mean"]), "min": float(r["min"]),
                "max": float(r["max"]), "count": float(r["count"]),
                "stddev": float(r["stddev"]),
            }
            for r in self._sql.rows(
                "SELECT series_id, sum(v) AS sum, avg(v) AS mean, min(v) AS min, max(v) AS max,"
                " count() AS count, stddevPop(v) AS stddev "
                f"FROM ({effective}) GROUP BY series_id"
            )
        }  # fmt: skip
        empty = {"sum": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0, "count": 0.0, "stddev": 0.0}
        return [
            DataSet(s, start.astimezone(zone), end.astimezone(zone), points[s.id],
                    summaries.get(s.id, dict(empty)))
            for s in series
        ]  # fmt: skip

    def read_id(self, series_id: str, start: datetime, end: datetime,
                interval: str | None = None, function: str | None = None,
                tz: str | None = None) -> DataSet:  # fmt: skip
        """``read`` of one series by id (a missing series is a ``LookupError``)."""
        found = self.read(start, end, interval, function, ids=[series_id], tz=tz)
        if not found:
            raise LookupError(f"no series with id {series_id!r}")
        return found[0]

    def read_key(self, series_key: str, start: datetime, end: datetime,
                 interval: str | None = None, function: str | None = None,
                 tz: str | None = None) -> DataSet:  # fmt: skip
        """``read`` of one series by key (a missing series is a ``LookupError``)."""
        found = self.read(start, end, interval, function, keys=[series_key], tz=tz)
        if not found:
            raise LookupError(f"no series with key {series_key!r}")
        return found[0]

    # -- deletes --------------------------------------------------------------------

    def _delete_points(self, series_id: str, start: datetime | None, end: datetime | None) -> int:
        rows = self._sql.rows(
            "SELECT toString(toUnixTimestamp64Micro(ts)) AS us "
            f"FROM ({self._effective([series_id], start, end)})"
        )
        stamps = [_from_us(int(r["us"]), timezone.utc) for r in rows]
        self._send(POINTS_DS, self._rows(((series_id, t, 0.0) for t in stamps), "del"))
        return len(stamps)

    def delete_id(self, series_id: str, start: datetime, end: datetime) -> DeleteSummary:
        """Delete the points of series ``series_id`` in ``[start, end)``."""
        return DeleteSummary(self._delete_points(series_id, _aware(start), _aware(end)))

    def delete_key(self, series_key: str, start: datetime, end: datetime) -> DeleteSummary:
        """Delete the points of series ``series_key`` in ``[start, end)``."""
        found = self._series_rows(None, [series_key])
        if not found:
            return DeleteSummary(0)
        return self.delete_id(found[0].id, start, end)
