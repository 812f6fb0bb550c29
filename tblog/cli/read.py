"""The read side's subcommands: ``tblog query`` (SQL, or filters), ``tblog tail``,
``tblog stats`` and ``tblog series read``.

``query`` keeps its raw-SQL form (``tblog query 'SELECT ...'``) and, without SQL, searches logs
with ``tblog.query.QueryClient``.  ``tail`` follows with ``tblog.query.Tail`` (a cursor with a
look-back for rows that land late, de-duplicated), pages through a backlog without pausing,
and waits out an unreachable or overloaded server with backoff.  All of them take
``--json`` (NDJSON: one object per line); ``--level`` means "this level and above" in
``query`` and ``tail`` alike.  Failures are one line naming the host, exit status 1 (2 for
a bad option value).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from tblog._config import resolve_api_url
from tblog._delivery.retry import backoff
from tblog._sql import QueryFailedError, to_us
from tblog.cli.args import add_connection_args, client_from, parse_level, parse_since, parse_time
from tblog.cli.http import ApiError
from tblog.cli.output import (
    colour_wanted,
    entry_json,
    err,
    json_line,
    log_line,
    print_stats,
    print_stats_json,
    print_table,
)
from tblog.query import AggregatedStats, LogEntry, QueryClient, Tail, parse_interval
from tblog.series import Client, WriteFailedError

__all__ = ["add_query", "add_series", "add_stats", "add_tail"]

#: The sleep between polls and retries of ``tail`` (tests replace it).
sleep: Callable[[float], None] = time.sleep


class _UsageError(Exception):
    """An option value that cannot be used: one line, exit status 2."""


def _host(args: argparse.Namespace) -> str:
    try:
        return resolve_api_url(getattr(args, "host", None))
    except ValueError:
        return str(getattr(args, "host", None) or "the API")


def _explain(exc: Exception, host: str) -> str:
    """A read failure in one line that names the host (never the token)."""
    text = str(exc)
    status = getattr(exc, "status", 0)
    if host in text:
        return text
    if not status:
        return f"cannot reach {host}: {text}"
    return f"{host}: {text}"


def _reported(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """API failures as one line naming the host on stderr and exit code 1; a bad option
    value as one line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (QueryFailedError, WriteFailedError, ApiError) as exc:
            err(_explain(exc, _host(args)))
            return 1
        except _UsageError as exc:
            err(str(exc))
            return 2

    return run


def _min_level(args: argparse.Namespace) -> str | None:
    if not args.level:
        return None
    try:
        return parse_level(args.level)
    except ValueError as exc:
        raise _UsageError(f"--level: {exc}") from None


def _print_entry(entry: LogEntry, args: argparse.Namespace, colour: bool) -> str:
    if args.json:
        return entry_json(entry)
    return log_line(entry.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"), entry.level, entry.app_name,
                    entry.logger, entry.message, entry.trace_id, colour=colour)  # fmt: skip


# -- query ----------------------------------------------------------------------------


def add_query(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", help="run SQL, or search logs with filters (no SQL given)")
    p.add_argument("sql", nargs="?", help="a query; end it with FORMAT X to get that format")
    p.add_argument(
        "--json", action="store_true",
        help="SQL: print the JSON answer as is; filters: one JSON object per log (NDJSON)",
    )  # fmt: skip
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--level", help="this level and above (DEBUG, INFO, WARNING/WARN, ...)")
    p.add_argument("--logger", help="only this logger")
    p.add_argument("-q", "--search", help="text the message contains (case-insensitive)")
    p.add_argument("--from", dest="from_time", type=parse_time, help="ISO time or 2h (ago)")
    p.add_argument("--to", dest="to_time", type=parse_time, help="ISO time or 10m (ago)")
    p.add_argument("--trace-id", help="only this trace")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--datasource", default="tb_logs", help="the logs datasource (tb_logs)")
    add_connection_args(p, read=True)
    p.set_defaults(func=_run_query)


@_reported
def _run_query(args: argparse.Namespace) -> int:
    if args.sql:
        return _run_sql(args)
    level = _min_level(args)
    with QueryClient(args.token, args.host, ds_name=args.datasource) as client:
        result = client.query(
            app=args.app, min_level=level, logger=args.logger, q=args.search,
            from_time=args.from_time, to_time=args.to_time, trace_id=args.trace_id,
            limit=args.limit, offset=args.offset,
        )  # fmt: skip
    colour = colour_wanted()
    for log in result.logs:
        print(_print_entry(log, args, colour))
    if not args.json:
        print(f"({len(result.logs)} of {result.total} logs)")
    return 0


def _run_sql(args: argparse.Namespace) -> int:  # failures: see _reported
    client = client_from(args, read=True)
    try:
        if re.search(r"\bFORMAT\s+\w+\s*;?\s*$", args.sql, re.IGNORECASE):
            sys.stdout.write(client.sql_text(args.sql))
            return 0
        result = client.sql(args.sql)
    finally:
        client.close()
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    return 0


# -- tail -----------------------------------------------------------------------------


def add_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tail", help="print recent log rows, then follow new ones")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--level", help="this level and above (DEBUG, INFO, WARNING/WARN, ...)")
    p.add_argument("--since", type=parse_since, default=600.0, help="start this far back (10m)")
    p.add_argument("--datasource", default="tb_logs", help="the logs datasource (tb_logs)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (1)")
    p.add_argument(
        "--lookback", type=parse_since, default=30.0,
        help="also print rows that land up to this late (30s; 0 turns it off)",
    )  # fmt: skip
    p.add_argument("--page-size", type=int, default=10_000, help="rows per request (10000)")
    p.add_argument("--once", action="store_true", help="print what is there and exit")
    p.add_argument("--json", action="store_true", help="one JSON object per row (NDJSON)")
    add_connection_args(p, read=True)
    p.set_defaults(func=_run_tail)


#: ``tail`` waits out these answers (and network errors); others end it.
_TRANSIENT = frozenset({0, 408, 425, 429, 500, 502, 503, 504})
#: The first and the longest wait before ``tail`` tries an unreachable server again.
RETRY_BASE = 1.0
RETRY_CAP = 30.0


def _drain(tail: Tail, args: argparse.Namespace, colour: bool) -> None:
    """Print what one poll finds, flushing every few thousand rows, and the rows read
    before a failure part way (the cursor has moved past them: they are not read again)."""
    out = sys.stdout
    lines: list[str] = []
    try:
        for entry in tail.poll_iter():
            lines.append(_print_entry(entry, args, colour))
            if len(lines) >= 2000:
                out.write("\n".join(lines) + "\n")
                out.flush()
                lines.clear()
    finally:
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()


@_reported
def _run_tail(args: argparse.Namespace) -> int:
    if args.page_size < 1 or args.interval < 0:
        raise _UsageError("--page-size must be >= 1 and --interval >= 0")
    filters: dict[str, Any] = {"min_level": _min_level(args)}
    if args.app:
        filters["app"] = args.app
    host = _host(args)
    since = datetime.now(timezone.utc) - timedelta(seconds=args.since)
    colour = colour_wanted()
    failures = 0
    # retry=False: this loop waits out a busy or unreachable server, and says so each time
    with QueryClient(args.token, args.host, ds_name=args.datasource, retry=False) as client:
        tail = client.tail(filters, since=since, poll_interval=args.interval,
                           lookback=args.lookback, batch_size=args.page_size)  # fmt: skip
        while True:
            try:
                _drain(tail, args, colour)
            except QueryFailedError as exc:
                if args.once or exc.status not in _TRANSIENT:
                    raise
                failures += 1
                delay = backoff(failures, base=RETRY_BASE, cap=RETRY_CAP)
                err(f"{_explain(exc, host)} (retrying in {math.ceil(delay)}s)")
                sleep(delay)
                continue
            if failures:
                err(f"reconnected to {host}")
                failures = 0
            if args.once:
                return 0
            sleep(args.interval)


# -- stats ----------------------------------------------------------------------------


def add_stats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="log counts per interval and level, with a bar chart")
    p.add_argument("--from", dest="from_time", type=parse_time, default="1d")
    p.add_argument("--to", dest="to_time", type=parse_time, default="0s")
    p.add_argument("--interval", default="1h", help="bucket width: 5m, 1h, 1d (1h)")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--datasource", default="tb_logs")
    p.add_argument("--json", action="store_true", help="one JSON object per interval (NDJSON)")
    add_connection_args(p, read=True)
    p.set_defaults(func=_run_stats)


#: ``stats`` fills empty intervals over the asked range up to this many rows (beyond, it
#: fills between the first and the last interval holding rows).
MAX_FILLED_BUCKETS = 10_000


def fill_gaps(
    stats: AggregatedStats, from_time: datetime, to_time: datetime, interval: str
) -> AggregatedStats:
    """``stats`` with a zero row for each interval of ``[from_time, to_time)`` that holds
    no rows (buckets aligned on the UTC epoch, as the query makes them): an outage shows."""
    step = parse_interval(interval)
    have = {row["bucket"]: row for row in stats.timeseries}
    first = to_us(from_time) // step
    last = (to_us(to_time) - 1) // step
    if last - first >= MAX_FILLED_BUCKETS:
        if not have:
            return stats
        first, last = to_us(min(have)) // step, to_us(max(have)) // step
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    buckets = {epoch + timedelta(microseconds=b * step) for b in range(first, last + 1)}
    timeseries = [
        have.get(b) or {"bucket": b, "total": 0, "by_level": {}}
        for b in sorted(buckets | set(have))
    ]
    return AggregatedStats(timeseries, stats.top_apps, stats.top_loggers, stats.total,
                           stats.errors, stats.error_rate)  # fmt: skip


@_reported
def _run_stats(args: argparse.Namespace) -> int:
    try:
        parse_interval(args.interval)
    except ValueError as exc:
        raise _UsageError(f"--interval: {exc}") from None
    with QueryClient(args.token, args.host, ds_name=args.datasource) as client:
        stats = client.get_aggregated_stats(
            args.from_time, args.to_time, interval=args.interval, app=args.app
        )
    stats = fill_gaps(stats, args.from_time, args.to_time, args.interval)
    if args.json:
        print_stats_json(stats)
    else:
        print_stats(stats)
    return 0


# -- series ---------------------------------------------------------------------------


def add_series(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("series", help="TempoDB-style time series (tblog.series)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = actions.add_parser("read", help="read one series by key, rolled up")
    r.add_argument("key")
    r.add_argument("--from", dest="from_time", type=parse_time, default="1d")
    r.add_argument("--to", dest="to_time", type=parse_time, default="0s")
    r.add_argument("--interval", help="raw, 5min, 1hour, 1day, 1month (automatic)")
    r.add_argument("--function", help="sum, max, min, mean, stddev, count (mean)")
    r.add_argument("--tz", help="time zone of the printed points (UTC)")
    r.add_argument("--json", action="store_true", help="one JSON object per point (NDJSON)")
    add_connection_args(r, read=True)
    r.set_defaults(func=_run_series_read)


@_reported
def _run_series_read(args: argparse.Namespace) -> int:
    client = Client(args.token, args.host)
    try:
        ds = client.read_key(
            args.key, args.from_time, args.to_time, args.interval, args.function, args.tz
        )
    except LookupError as exc:
        err(exc.args[0])
        return 1
    finally:
        client.close()
    if args.json:
        for point in ds.data:
            print(json_line({"ts": point.ts.isoformat(), "value": point.value}))
        print(json_line({"summary": dict(ds.summary)}))
        return 0
    for point in ds.data:
        print(f"{point.ts.isoformat()}  {point.value:g}")
    print("  ".join(f"{k}={v:g}" for k, v in ds.summary.items()))
    return 0
