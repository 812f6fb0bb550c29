"""Everything the ``tblog`` command line prints: tables, log lines, charts, progress, errors.

Results go to stdout; errors and progress to stderr, each error one line prefixed ``tblog:``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from tblog.query import AggregatedStats

__all__ = ["bar_chart", "err", "log_line", "print_stats", "print_table", "progress"]


def err(message: str) -> None:
    """One error line on stderr."""
    print(f"tblog: {message}", file=sys.stderr)


def _cell(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_rows(head: list[str], rows: list[list[str]], out: IO[str]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def print_table(result: dict[str, Any], out: IO[str] | None = None, width: int = 60) -> None:
    """A Tinybird JSON result as an aligned text table."""
    out = out or sys.stdout
    names = [m["name"] for m in result.get("meta", [])]
    rows = [[_cell(row.get(n), width) for n in names] for row in result.get("data", [])]
    _print_rows(names, rows, out)
    print(f"({result.get('rows', len(rows))} rows)", file=out)


def log_line(  # noqa: PLR0917 - the fields of one printed log row
    timestamp: str, level: str, app: str, logger: str, message: str, trace_id: str
) -> str:
    """One log row as ``tail`` and ``query`` print it (newlines in the message escaped)."""
    trace = f" trace={trace_id}" if trace_id else ""
    return f"{timestamp} {level:<8} {app} {logger}: {message}{trace}".replace("\n", "\\n")


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
    rows = [
        [row["bucket"].strftime("%Y-%m-%d %H:%M"),
         *(str(row["by_level"].get(lv, 0)) for lv in levels), str(row["total"])]
        for row in stats.timeseries
    ]  # fmt: skip
    _print_rows(["interval", *levels, "total"], rows, out)
    print("", file=out)
    for line in bar_chart([(r[0], int(r[-1])) for r in rows]):
        print(line, file=out)
    print("", file=out)
    print("top apps:    " + ", ".join(f"{k} ({v})" for k, v in stats.top_apps), file=out)
    print("top loggers: " + ", ".join(f"{k} ({v})" for k, v in stats.top_loggers), file=out)
    print(f"total {stats.total}, errors {stats.errors}, "
          f"error rate {stats.error_rate:.2%}", file=out)  # fmt: skip


def progress(counts: tuple[int, int, int, int], started: float, total: int) -> None:
    """``tblog send``'s progress line on stderr: rows sent, ok, quarantined, rate."""
    sent, ok, bad, nbytes = counts
    rate = sent / max(time.monotonic() - started, 1e-6)
    if total:
        done = min(1.0, nbytes / total)
        bar = "#" * int(done * 30)
        head = f"[{bar:<30}] {done:4.0%} "
    else:
        head = ""
    sys.stderr.write(f"\r{head}{sent} rows sent, {ok} ok, {bad} quarantined ({rate:,.0f}/s)")
    sys.stderr.flush()
