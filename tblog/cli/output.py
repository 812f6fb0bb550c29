"""Everything the ``tblog`` command line prints: tables, log lines, charts, progress, errors.

Results go to stdout; errors and progress to stderr, each error one line prefixed ``tblog:``
(once: a message that already starts with it is not prefixed again).  Terminal niceties
only on a terminal: colour when stdout is a TTY and ``NO_COLOR`` is unset, ``\\r``
progress lines when stdout and stderr are both TTYs (else a plain line now and then).
``--json`` output is one JSON object per line (NDJSON).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import IO, Any

from tblog.query import AggregatedStats, LogEntry

__all__ = [
    "bar_chart",
    "colour_wanted",
    "entry_json",
    "err",
    "json_line",
    "log_line",
    "print_stats",
    "print_stats_json",
    "print_table",
    "progress",
]

_PREFIX = "tblog: "
_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
#: Seconds between progress lines when stderr is not a terminal.
PLAIN_PROGRESS_EVERY = 5.0
_last_plain_progress = [0.0]


def err(message: str) -> None:
    """One error line on stderr, prefixed ``tblog: `` once."""
    while message.startswith(_PREFIX):
        message = message[len(_PREFIX) :]
    print(f"{_PREFIX}{message}", file=sys.stderr)


def _tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def colour_wanted(stream: IO[str] | None = None) -> bool:
    """ANSI colour: only on a terminal, and never with ``NO_COLOR`` set (no-color.org)."""
    return _tty(stream or sys.stdout) and not os.environ.get("NO_COLOR")


def json_line(obj: Any) -> str:
    """One NDJSON line (no newline at the end)."""
    return json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":"))


def entry_json(entry: LogEntry) -> str:
    """A log row as one NDJSON line: its columns, ``timestamp`` in ISO 8601 and ``extra``
    as the object it holds."""
    row = dataclasses.asdict(entry)
    row["timestamp"] = entry.timestamp.isoformat()
    with contextlib.suppress(ValueError):
        row["extra"] = json.loads(entry.extra)
    return json_line(row)


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
    timestamp: str,
    level: str,
    app: str,
    logger: str,
    message: str,
    trace_id: str,
    *,
    colour: bool = False,
) -> str:
    """One log row as ``tail`` and ``query`` print it (newlines in the message escaped);
    ``colour``: the level in its ANSI colour."""
    trace = f" trace={trace_id}" if trace_id else ""
    text = f"{level:<8}"
    code = _COLOURS.get(level.upper()) if colour else None
    if code:
        text = f"\x1b[{code}m{text}\x1b[0m"
    return f"{timestamp} {text} {app} {logger}: {message}{trace}".replace("\n", "\\n")


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


def print_stats_json(stats: AggregatedStats, out: IO[str] | None = None) -> None:
    """The stats as NDJSON: one ``{"bucket", "total", "by_level"}`` line per interval,
    then one ``{"summary": {...}}`` line (totals, error rate, top apps and loggers)."""
    out = out or sys.stdout
    for row in stats.timeseries:
        print(json_line({"bucket": row["bucket"].isoformat(), "total": row["total"],
                         "by_level": row["by_level"]}), file=out)  # fmt: skip
    summary = {
        "total": stats.total, "errors": stats.errors, "error_rate": stats.error_rate,
        "top_apps": dict(stats.top_apps), "top_loggers": dict(stats.top_loggers),
    }  # fmt: skip
    print(json_line({"summary": summary}), file=out)


def progress(counts: tuple[int, int, int, int], started: float, total: int) -> bool:
    """``tblog send``'s progress on stderr: rows sent, ok, quarantined, rate.  A line
    redrawn with ``\\r`` on a terminal (stdout and stderr TTYs); else a plain line at most
    every ``PLAIN_PROGRESS_EVERY`` seconds (and the first time).  True when it left a
    ``\\r`` line open (the caller ends it with a newline before printing more)."""
    sent, ok, bad, nbytes = counts
    tty = _tty(sys.stdout) and _tty(sys.stderr)
    now = time.monotonic()
    last = _last_plain_progress[0]
    if not tty and last and now - last < PLAIN_PROGRESS_EVERY:
        return False
    rate = sent / max(time.monotonic() - started, 1e-6)
    if total:
        done = min(1.0, nbytes / total)
        bar = "#" * int(done * 30)
        head = f"[{bar:<30}] {done:4.0%} "
    else:
        head = ""
    line = f"{head}{sent} rows sent, {ok} ok, {bad} quarantined ({rate:,.0f}/s)"
    if tty:
        sys.stderr.write(f"\r{line}")
    else:
        sys.stderr.write(f"{line}\n")
        _last_plain_progress[0] = now
    sys.stderr.flush()
    return tty
