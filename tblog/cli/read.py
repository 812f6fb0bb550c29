"""The read side's subcommands: ``tblog query`` filters, ``tblog stats``, ``tblog series read``.

Registered into ``tblog.cli`` (which imports this module as an extension).  ``query``
keeps its raw-SQL form (``tblog query 'SELECT ...'``) and, without SQL, searches logs
with ``tblog.query.QueryClient``; tokens come from ``--token`` or the read variables of
``tblog._sql.READ_TOKEN_ENV``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO

from tblog import cli
from tblog._sql import QueryFailedError
from tblog.query import AggregatedStats, QueryClient
from tblog.series import Client, WriteFailedError

__all__ = ["bar_chart", "parse_time", "print_stats"]


def parse_time(text: str, now: float | None = None) -> datetime:
    """An ISO 8601 time (naive = UTC) or a duration ago (``30m``, ``2h``, ``1d``)."""
    try:
        seconds = cli.parse_since(text)
    except argparse.ArgumentTypeError:
        try:
            ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an ISO time or a duration like 2h: {text!r}"
            ) from None
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp((time.time() if now is None else now) - seconds, timezone.utc)


def _reported(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """API failures as one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (QueryFailedError, WriteFailedError) as exc:
            print(f"tblog: {exc}", file=sys.stderr)
            return 1

    return run


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="API URL (default: $TB_API_URL, $TB_HOST, else Tinybird's)")
    p.add_argument("--token", help="token (default: $TB_READ_TOKEN, $TB_TOKEN, $TINYBIRD_TOKEN)")


# -- query ------------------------------------------------------------------------------


def _add_query(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _connection(p)
    p.set_defaults(func=_run_query)


@_reported
def _run_query(args: argparse.Namespace) -> int:
    if args.sql:
        return cli._run_query(args)
    with QueryClient(args.token, args.host, ds_name=args.datasource) as client:
        result = client.query(
            app=args.app, level=args.level, logger=args.logger, q=args.search,
            from_time=args.from_time, to_time=args.to_time, trace_id=args.trace_id,
            limit=args.limit, offset=args.offset,
        )  # fmt: skip
    for log in result.logs:
        trace = f" trace={log.trace_id}" if log.trace_id else ""
        print(f"{log.timestamp.isoformat()} {log.level:<8} {log.app_name} {log.logger}: "
              f"{log.message}{trace}".replace("\n", "\\n"))  # fmt: skip
    print(f"({len(result.logs)} of {result.total} logs)")
    return 0


# -- stats ------------------------------------------------------------------------------


def bar_chart(values: list[tuple[str, int]], width: int = 40) -> list[str]:
    """One line per (label, count): a bar scaled to the largest count."""
    top = max((v for _, v in values), default=0)
    label_w = max((len(k) for k, _ in values), default=0)
    lines = []
    for label, v in values:
        n = round(v * width / top) if top else 0
        lines.append(f"{label.ljust(label_w)} {'█' * n}{'▏' if v and not n else ''} {v}")
    return lines


def print_stats(stats: AggregatedStats, out: IO[str] | None = None) -> None:
    """The stats as a table (interval x level), a bar chart, tops and the error rate."""
    out = out or sys.stdout
    levels = sorted({lv for row in stats.timeseries for lv in row["by_level"]})
    head = ["interval", *levels, "total"]
    rows = [
        [row["bucket"].strftime("%Y-%m-%d %H:%M"),
         *(str(row["by_level"].get(lv, 0)) for lv in levels), str(row["total"])]
        for row in stats.timeseries
    ]  # fmt: skip
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=out)
    print("", file=out)
    for line in bar_chart([(r[0], int(r[-1])) for r in rows]):
        print(line, file=out)
    print("", file=out)
    print("top apps:    " + ", ".join(f"{k} ({v})" for k, v in stats.top_apps), file=out)
    print("top loggers: " + ", ".join(f"{k} ({v})" for k, v in stats.top_loggers), file=out)
    print(f"total {stats.total}, errors {stats.errors}, "
          f"error rate {stats.error_rate:.2%}", file=out)  # fmt: skip


def _add_stats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="log counts per interval and level, with a bar chart")
    p.add_argument("--from", dest="from_time", type=parse_time, default="1d")
    p.add_argument("--to", dest="to_time", type=parse_time, default="0s")
    p.add_argument("--interval", default="1h", help="bucket width: 5m, 1h, 1d (1h)")
    p.add_argument("--app", help="only this app_name")
    p.add_argument("--datasource", default="tb_logs")
    _connection(p)
    p.set_defaults(func=_run_stats)


@_reported
def _run_stats(args: argparse.Namespace) -> int:
    with QueryClient(args.token, args.host, ds_name=args.datasource) as client:
        stats = client.get_aggregated_stats(
            args.from_time, args.to_time, interval=args.interval, app=args.app
        )
    print_stats(stats)
    return 0


# -- series -----------------------------------------------------------------------------


def _add_series(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("series", help="TempoDB-style time series (tblog.series)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = actions.add_parser("read", help="read one series by key, rolled up")
    r.add_argument("key")
    r.add_argument("--from", dest="from_time", type=parse_time, default="1d")
    r.add_argument("--to", dest="to_time", type=parse_time, default="0s")
    r.add_argument("--interval", help="raw, 5min, 1hour, 1day, 1month (automatic)")
    r.add_argument("--function", help="sum, max, min, mean, stddev, count (mean)")
    r.add_argument("--tz", help="time zone of the printed points (UTC)")
    _connection(r)
    r.set_defaults(func=_run_series_read)


@_reported
def _run_series_read(args: argparse.Namespace) -> int:
    client = Client(args.token, args.host)
    try:
        ds = client.read_key(
            args.key, args.from_time, args.to_time, args.interval, args.function, args.tz
        )
    except LookupError as exc:
        print(f"tblog: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        client.close()
    for point in ds.data:
        print(f"{point.ts.isoformat()}  {point.value:g}")
    print("  ".join(f"{k}={v:g}" for k, v in ds.summary.items()))
    return 0


for _name, _add in (("query", _add_query), ("stats", _add_stats), ("series", _add_series)):
    cli.register(_name, _add)
