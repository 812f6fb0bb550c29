"""Caller cost, end-to-end CPU, exit delivery and behaviour under failure, side by side.

Every figure is a ratio over the cost of the same ``logger.info(...)`` call with a
``logging.NullHandler``, measured in the same run.  Candidates are interleaved round by round
and the median round is reported, so machine noise hits all of them alike.  HTTP goes to a
sink in its own process on 127.0.0.1 (``benchmarks.sink``), so its parsing is not charged to
the process under measurement.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

import tblog

Factory = Callable[[str], tuple[logging.Handler, Callable[[], None]]]


@dataclass
class Sink:
    proc: subprocess.Popen[str]
    url: str

    def rows(self) -> int:
        return int(requests.get(f"{self.url}/count", timeout=5).json()["rows"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@contextlib.contextmanager
def sink(status: int = 202) -> Iterator[Sink]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--status", str(status)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    s = Sink(proc, f"http://127.0.0.1:{port}")
    try:
        yield s
    finally:
        s.stop()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


TOKEN = "p.benchmark-token-0123456789abcdef"


def _null(url: str) -> tuple[logging.Handler, Callable[[], None]]:
    return logging.NullHandler(), lambda: None


def _stdlib_queue(url: str) -> tuple[logging.Handler, Callable[[], None]]:
    q: queue.Queue[Any] = queue.Queue(-1)
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()
    return logging.handlers.QueueHandler(q), listener.stop


def _tblog(url: str) -> tuple[logging.Handler, Callable[[], None]]:
    h = tblog.TinybirdLoggingHandler(url, TOKEN, "bench", max_retries=0, timeout=2.0)
    return h, h.close


def _tblog_queue(url: str) -> tuple[logging.Handler, Callable[[], None]]:
    h = tblog.TinybirdLoggingQueueHandler(queue.Queue(-1), url, TOKEN, "bench", max_retries=0)
    return h, h.close


def _tinybird_sdk(url: str) -> tuple[logging.Handler, Callable[[], None]]:
    from tb.logger import TinybirdLoggingHandler  # the SDK's code order: (token, api_url, ...)

    h = TinybirdLoggingHandler(TOKEN, url, "bench")
    return h, h.close


def _otel(url: str) -> tuple[logging.Handler, Callable[[], None]]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs"))
    )
    return LoggingHandler(logger_provider=provider), provider.shutdown


CANDIDATES: dict[str, Factory] = {
    "logging.NullHandler": _null,
    "stdlib QueueHandler + QueueListener": _stdlib_queue,
    "tblog TinybirdLoggingHandler": _tblog,
    "tblog TinybirdLoggingQueueHandler": _tblog_queue,
    "Tinybird SDK TinybirdLoggingHandler": _tinybird_sdk,
    "OpenTelemetry LoggingHandler + BatchLogRecordProcessor": _otel,
}
# One synchronous HTTP request per record: measured on fewer calls.
SLOW = {"Tinybird SDK TinybirdLoggingHandler"}


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def _calls(log: logging.Logger, n: int) -> tuple[float, float]:
    """(wall seconds, caller-thread CPU seconds) per ``logger.info`` call over ``n`` calls.

    Wall time includes time the caller waited for the GIL while a background thread
    (tblog's sender, a QueueListener, OTel's exporter) did its share: that work is charged
    in full in the end-to-end figures, so the caller's own cost is its thread's CPU time.
    """
    user = 42
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(n):
        log.info("user %s logged in", user, extra={"request_id": "r-1234", "attempt": i})
    return (time.perf_counter() - start) / n, (time.thread_time() - cpu) / n


def _settle(handler: logging.Handler) -> None:
    """Between rounds: let buffered work finish so it is not charged to the next candidate."""
    flush = getattr(handler, "flush", None)
    if isinstance(handler, (tblog.TinybirdLoggingHandler, tblog.TinybirdLoggingQueueHandler)):
        handler.flush(30)
    elif flush is not None:
        flush()


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)  # caller-thread CPU per call
    wall: list[float] = field(default_factory=list)  # wall time per call
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall) if self.wall else float("nan")


def caller_cost(url: str, names: list[str], calls: int, rounds: int) -> dict[str, Result]:
    built: dict[str, tuple[logging.Handler, Callable[[], None]]] = {}
    results = {name: Result(name) for name in names}
    for name in names:
        try:
            built[name] = CANDIDATES[name](url)
        except Exception as exc:  # noqa: BLE001 - a peer that is not installed is reported
            results[name].error = f"n/a ({type(exc).__name__}: {exc})"[:120]
    for _ in range(rounds):
        for name, (handler, _) in built.items():
            n = max(50, calls // 50) if name in SLOW else calls
            log = _logger(handler)
            wall, cpu = _calls(log, n)
            results[name].wall.append(wall)
            results[name].seconds.append(cpu)
            _settle(handler)
    for _, cleanup in built.values():
        with contextlib.suppress(Exception):
            cleanup()
    return results


def end_to_end(url: str, s: Sink, events: int, threads: int) -> tuple[float, float, bool]:
    """(process CPU seconds per delivered event, events/s delivered, all arrived?)."""
    # The whole burst is buffered at once: size the buffer for it (this row measures CPU).
    handler = tblog.TinybirdLoggingHandler(
        url, TOKEN, "bench", max_buffer_size=10 * events, max_buffer_bytes=2**31
    )
    log = _logger(handler)
    before_rows = s.rows()
    per_thread = events // threads

    def work() -> None:
        for i in range(per_thread):
            log.info("user %s logged in", 42, extra={"request_id": "r-1234", "attempt": i})

    cpu0, wall0 = time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    delivered = handler.flush(120)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    handler.close()
    n = per_thread * threads
    arrived = s.rows() - before_rows
    return cpu / n, n / wall, delivered and arrived == n


_EXIT_CHILD = textwrap.dedent(
    """
    import logging, queue, sys
    kind, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    token = "p.benchmark-token-0123456789abcdef"
    if kind == "tblog":
        import tblog
        handler = tblog.TinybirdLoggingHandler(url, token, "exit")
    elif kind == "tblog-queue":
        import tblog
        handler = tblog.TinybirdLoggingQueueHandler(queue.Queue(-1), url, token, "exit")
    else:
        from multiprocessing import Queue
        from tb.logger import TinybirdLoggingQueueHandler
        handler = TinybirdLoggingQueueHandler(Queue(-1), token, url, "exit")
    log = logging.getLogger("exit")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(n):
        log.info("record %d", i)
    """
)


def exit_share(s: Sink, kind: str, n: int) -> float | None:
    before = s.rows()
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_CHILD, kind, s.url, str(n)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr:
        return None
    deadline = time.monotonic() + 5
    while s.rows() - before < n and time.monotonic() < deadline:
        time.sleep(0.1)  # the sink may still be counting the last request
    return (s.rows() - before) / n


_OUTAGE_CHILD = textwrap.dedent(
    """
    import logging, os, sys, time
    import tblog
    def rss():  # current resident set size, in KiB
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    url, seconds, rate, cap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    handler = tblog.TinybirdLoggingHandler(url, "p.benchmark-token-0123456789abcdef", "outage",
                                           max_buffer_bytes=cap, shutdown_timeout=0.5)
    log = logging.getLogger("outage")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    payload = "x" * 1000
    base = peak = rss()
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        for _ in range(rate // 100):
            log.info("payload %s", payload)
            sent += 1
        peak = max(peak, rss())
        time.sleep(0.01)
    stats = handler.stats()
    print(sent, base, peak, stats["queue_bytes"], stats["dropped"].get("buffer_full", 0))
    """
)


def outage_memory(seconds: float, rate: int, cap: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _OUTAGE_CHILD, refused_url(), str(seconds), str(rate), str(cap)],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )  # fmt: skip
    sent, base, peak, queued, dropped = (int(x) for x in proc.stdout.split())
    return {
        "events": sent,
        "rss_growth_mib": (peak - base) / 1024,
        "buffer_mib": queued / 2**20,
        "cap_mib": cap / 2**20,
        "dropped": dropped,
    }


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
