"""The read side's subcommands: ``tblog query`` (SQL, or filters), ``tblog tail``,
``tblog stats`` and ``tblog series read``.

``query`` keeps its raw-SQL form (``tblog query 'SELECT ...'``) and, without SQL, searches logs
with ``tblog.query.QueryClient``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable

from tblog._sql import QueryFailedError
from tblog.cli.args import add_connection_args, client_from, parse_since, parse_time
from tblog.cli.output import err, log_line, print_stats, print_table
from tblog.query import QueryClient
from tblog.series import Client, WriteFailedError

__all__ = ["add_query", "add_series", "add_stats", "add_tail", "tail_query"]


def _reported(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """API failures as one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (QueryFailedError, WriteFailedError) as exc:
            err(str(exc))
            return 1

    return run


# -- query ----------------------------------------------------------------------------


def add_query(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", help="run SQL, or search logs with filters (no SQL given)")
    p.add_argument("sql", nargs="?", help="a query; end it with FORMAT X to get that format")
    p.add_argument("--json", action="store_true", help="print the JSON answer as is (SQL)")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--level", help="only this level")
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
    with QueryClient(args.token, args.host, ds_name=args.datasource) as client:
        result = client.query(
            app=args.app, level=args.level, logger=args.logger, q=args.search,
            from_time=args.from_time, to_time=args.to_time, trace_id=args.trace_id,
            limit=args.limit, offset=args.offset,
        )  # fmt: skip
    for log in result.logs:
        print(log_line(log.timestamp.isoformat(), log.level, log.app_name, log.logger,
                       log.message, log.trace_id))  # fmt: skip
    print(f"({len(result.logs)} of {result.total} logs)")
    return 0


def _run_sql(args: argparse.Namespace) -> int:
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


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def add_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tail", help="print recent log rows, then follow new ones")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--level", help="only this level or above (DEBUG, INFO, WARNING, ...)")
    p.add_argument("--since", type=parse_since, default=600.0, help="start this far back (10m)")
    p.add_argument("--datasource", default="tb_logs", help="the logs datasource (tb_logs)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (1)")
    p.add_argument("--once", action="store_true", help="print what is there and exit")
    add_connection_args(p, read=True)
    p.set_defaults(func=_run_tail)


_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


def tail_query(args: argparse.Namespace, after: str | None) -> str:
    ds = args.datasource
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ds):
        raise ValueError(f"bad datasource name {ds!r}")
    where = [
        f"timestamp > {_quote(after)}"
        if after
        else f"timestamp >= now64(6) - toIntervalMillisecond({int(args.since * 1000)})"
    ]
    if args.app:
        where.append(f"app_name = {_quote(args.app)}")
    if args.level:
        level = args.level.upper()
        if level in _LEVELS:
            where.append(f"level_no >= {_LEVELS[level]}")
        else:
            where.append(f"level = {_quote(args.level)}")
    return (
        "SELECT toString(timestamp) AS ts, level, app_name, logger, message, trace_id "  # noqa: S608
        f"FROM {ds} WHERE {' AND '.join(where)} ORDER BY timestamp LIMIT 1000"
    )


def _run_tail(args: argparse.Namespace) -> int:
    client = client_from(args, read=True)
    after: str | None = None
    try:
        while True:
            result = client.sql(tail_query(args, after))
            for row in result.get("data", []):
                print(log_line(row["ts"], row["level"], row["app_name"], row["logger"],
                               row["message"], row.get("trace_id") or ""), flush=True)  # fmt: skip
                after = row["ts"]
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


# -- stats ----------------------------------------------------------------------------


def add_stats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="log counts per interval and level, with a bar chart")
    p.add_argument("--from", dest="from_time", type=parse_time, default="1d")
    p.add_argument("--to", dest="to_time", type=parse_time, default="0s")
    p.add_argument("--interval", default="1h", help="bucket width: 5m, 1h, 1d (1h)")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--datasource", default="tb_logs")
    add_connection_args(p, read=True)
    p.set_defaults(func=_run_stats)


@_reported
def _run_stats(args: argparse.Namespace) -> int:
    with QueryClient(args.token, args.host, ds_name=args.datasource) as client:
        stats = client.get_aggregated_stats(
            args.from_time, args.to_time, interval=args.interval, app=args.app
        )
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
    for point in ds.data:
        print(f"{point.ts.isoformat()}  {point.value:g}")
    print("  ".join(f"{k}={v:g}" for k, v in ds.summary.items()))
    return 0
