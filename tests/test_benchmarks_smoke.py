"""The benchmark harness runs (tiny configuration), so `make bench` cannot rot unnoticed.

No figure is asserted here: performance claims come from `make bench`, as ratios.  What is
checked is that every row is printed (a peer that is not installed prints ``n/a (not
installed)`` in its row, which still counts as present) and that tblog delivers everything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PEERS = [
    "Tinybird SDK TinybirdLoggingHandler",
    "Tinybird SDK TinybirdLoggingQueueHandler",
    "OpenTelemetry LoggingHandler + BatchLogRecordProcessor",
    "logtail-python LogtailHandler",
    "logtide-sdk LogTideHandler",
]


def _section(out: str, title: str) -> str:
    """The text of the report section whose heading starts with ``title``."""
    start = out.index(f"### {title}")
    end = out.find("\n### ", start + 1)
    return out[start : end if end != -1 else len(out)]


def _row(section: str, label: str) -> str:
    rows = [line for line in section.splitlines() if line.startswith(f"| {label} |")]
    assert rows, f"no row {label!r} in:\n{section}"
    return rows[0]


@pytest.mark.slow
def test_benchmarks_quick_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout

    caller = _section(out, "Caller cost per")
    for label in [
        "logging.NullHandler",
        "tblog TinybirdLoggingHandler",
        "tblog TinybirdLoggingHandler, sampling on (INFO at 0.5)",
        "tblog TinybirdLoggingQueueHandler",
        "tblog TinybirdLoggingQueueHandler on a `queue.SimpleQueue`",
        "tblog structlog TinybirdProcessor",
        "tblog TinybirdLoggingHandler, pure Python (no C compiler; zlib)",
        *PEERS,
    ]:
        _row(caller, label)

    structlog = _section(out, "What tblog adds to structlog")
    _row(structlog, "`raise structlog.DropEvent`")
    _row(structlog, "tblog `TinybirdProcessor`")

    failure = _section(out, "Caller cost under failure")
    for label in ["tblog TinybirdLoggingHandler", *PEERS]:
        _row(failure, label)

    e2e = _section(out, "End to end")
    for label in ["tblog TinybirdLoggingHandler", *PEERS[1:]]:
        _row(e2e, label)
    _row(e2e, "tblog TinybirdLoggingHandler, zlib (the default install: without `tblog[speedups]`)")
    _row(e2e, "tblog TinybirdLoggingHandler, pure Python (no C compiler; zlib)")
    assert "| tblog TinybirdLoggingHandler | 1 |" in e2e
    assert "| tblog TinybirdLoggingHandler | 8 |" in e2e
    for line in e2e.splitlines():
        if line.startswith("| tblog "):
            assert line.endswith("| yes |"), line  # every event arrives

    gzip = _section(out, "Gzip's share of an event")
    _row(gzip, "zlib, level 1 (tblog without `tblog[speedups]`)")
    _row(gzip, "ISA-L, level 1 (tblog with `tblog[speedups]`)")  # the test extras install it

    exits = _section(out, "Share of events that arrive at a normal exit")
    assert "| tblog TinybirdLoggingHandler | 100.0% |" in exits  # every event arrives at exit
    for label in ["tblog TinybirdLoggingQueueHandler", *PEERS[1:]]:
        assert f"| {label}" in exits, label

    assert "### Memory during an outage" in out

    faults = _section(out, "Delivery under failure")
    for label in ["healthy (baseline)", "503 burst", "429 storm", "black hole"]:
        assert f"| {label}" in faults, label
