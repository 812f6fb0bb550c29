"""Caller cost, end-to-end CPU, exit delivery and behaviour under failure, side by side.

Every figure is a ratio over the cost of the same ``logger.info(...)`` call with a
``logging.NullHandler``.  Candidates (``benchmarks.candidates``) are interleaved round by round
and the median round is reported, so machine noise hits all of them alike.  HTTP goes to a
sink in its own process on 127.0.0.1 (``benchmarks.sink``), so its parsing is not charged to
the process under measurement.

The healthy caller-cost table runs in this process.  Everything that leaves background work
behind (a shipper retrying against a failing endpoint, a burst being delivered, a process
exiting) runs in a child process of its own (``benchmarks.isolated``), one per candidate and
measurement, with the same method for tblog and for every peer; the child measures its own
``NullHandler`` baseline, so its ratios do not depend on the state of this process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from benchmarks.candidates import CANDIDATES, Built


@dataclass
class Sink:
    proc: subprocess.Popen[str]
    url: str

    def counts(self) -> dict[str, Any]:
        return SinkCounter(self.url).counts()

    def rows(self, protocol: str | None = None) -> int:
        return SinkCounter(self.url).rows(protocol)

    def requests(self, protocol: str) -> int:
        return int(self.counts()["requests"][protocol])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class SinkCounter:
    """Reads the sink's counters over one keep-alive connection (cheap enough to poll)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, 5)

    def counts(self) -> dict[str, Any]:
        try:
            self.conn.request("GET", "/count")
            return dict(json.loads(self.conn.getresponse().read()))
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnect once
            self.conn.request("GET", "/count")
            return dict(json.loads(self.conn.getresponse().read()))

    def rows(self, protocol: str | None = None) -> int:
        counts = self.counts()
        return int(counts["rows"] if protocol is None else counts["protocols"][protocol])


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


def quiet_root() -> None:
    """Give the root logger a handler, as an application that configured logging has.

    The Tinybird SDK calls ``logging.info(...)`` on every flush; with no handler on the root
    logger that call runs ``logging.basicConfig()``, which would start printing every later
    propagated record (the peers' own diagnostics included) to stderr for the rest of the run.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def logger_for(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def target_of(built: Built, api: str) -> Any:
    """What the measured call is made on: a logger around a handler, or a structlog logger."""
    return logger_for(built.target) if api == "logging" else built.target


def calls(target: Any, api: str, n: int) -> tuple[float, float]:
    """(wall seconds, caller-thread CPU seconds) per call over ``n`` calls.

    Wall time includes time the caller waited for the GIL while a background thread
    (tblog's sender, a QueueListener, OTel's exporter) did its share: that work is charged
    in full in the end-to-end figures, so the caller's own cost is its thread's CPU time.
    """
    user = 42
    start, cpu = time.perf_counter(), time.thread_time()
    if api == "logging":
        for i in range(n):
            target.info("user %s logged in", user, extra={"request_id": "r-1234", "attempt": i})
    else:
        for i in range(n):
            target.info("user logged in", user=user, request_id="r-1234", attempt=i)
    return (time.perf_counter() - start) / n, (time.thread_time() - cpu) / n


def slow_calls(calls: int) -> int:
    """Calls per round for a candidate that does one synchronous request per record."""
    return max(50, calls // 50)


def synchronous_failing_calls(calls: int) -> int:
    """Calls per round for a handler that makes its request on the caller's thread, against a
    failing endpoint (each call waits for its own failed attempts)."""
    return max(12, calls // 200)


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)  # caller-thread CPU per call
    wall: list[float] = field(default_factory=list)  # wall time per call
    error: str = ""
    logged: int = 0  # calls made, over all rounds
    delivered: int | None = None  # of those, rows the sink counted (None: ships nothing)
    base: list[float] = field(default_factory=list)  # its child's NullHandler CPU per call
    base_wall: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return _median(self.seconds)

    @property
    def median_wall(self) -> float:
        return _median(self.wall)

    @property
    def ratio(self) -> float:
        """Over the NullHandler call measured in the same child: the median of the ratios of
        each round to the baseline round just before it (machine noise comes in bursts)."""
        return _paired(self.seconds, self.base)

    @property
    def wall_ratio(self) -> float:
        return _paired(self.wall, self.base_wall)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _paired(measured: list[float], base: list[float]) -> float:
    if not measured or len(measured) != len(base):
        return float("nan")
    return statistics.median(m / b for m, b in zip(measured, base, strict=True))


def caller_cost(url: str, keys: list[str], calls_per_round: int, rounds: int) -> dict[str, Result]:
    """Caller cost of each candidate against a healthy sink, each in a child process of its own.

    The child alternates rounds of the ``NullHandler`` call and of the candidate's call (the
    candidate settled after each of its rounds, so its background work is delivered before
    the next baseline round), and the rows the sink counted for it are added up: a handler
    that drops under this load shows it.  One library per process, as in an application:
    no peer's background threads or heap weigh on another's figures.  A candidate's ratio is
    the median over rounds of each round over its child's baseline round just before it.
    """
    results = {key: Result(CANDIDATES[key].name) for key in keys}
    for key in keys:
        cand, res = CANDIDATES[key], results[key]
        n = slow_calls(calls_per_round) if cand.slow else calls_per_round
        out = isolated(
            ["cost", key, url, "--calls", str(n), "--base-calls", str(calls_per_round),
             "--rounds", str(rounds)],
            timeout=600,
        )  # fmt: skip
        if out.get("timeout"):
            res.error = "n/a (did not finish within 600 s)"
        elif "error" in out:
            res.error = str(out["error"])
        else:
            res.base, res.base_wall = out["base_cpu"], out["base_wall"]
            res.seconds, res.wall = out["cpu"], out["wall"]
            res.logged, res.delivered = out["logged"], out["delivered"]
    return results


# -- measurements in a child process (benchmarks.isolated) ----------------------------------


def isolated(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.isolated ARGS`` and return the JSON it prints.

    A child that does not finish within ``timeout`` is killed: ``{"timeout": True}``.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.isolated", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"n/a (child failed: {tail})"[:160]}
    return dict(json.loads(lines[-1]))


@dataclass
class FailureResult:
    name: str
    ratio: float = float("nan")  # caller-thread CPU, over the child's NullHandler call
    wall_ratio: float = float("nan")
    longest: float = float("nan")  # seconds, the longest single call at first contact
    requests: int | None = None  # requests the sink saw from the candidate (429 storm only)
    error: str = ""


def caller_cost_failing(
    key: str,
    url: str,
    calls_per_round: int,
    rounds: int,
    stuck: float,
    storm: Sink | None = None,
) -> FailureResult:
    """Caller cost of one candidate against a failing endpoint, in a child process.

    A single call that has not returned after ``stuck`` seconds ends the child (and the row).
    """
    cand = CANDIDATES[key]
    res = FailureResult(cand.name)
    before = storm.requests(cand.protocol) if storm and cand.protocol else 0
    n = synchronous_failing_calls(calls_per_round) if cand.synchronous else calls_per_round
    out = isolated(
        ["caller", key, url, "--calls", str(n), "--base-calls", str(calls_per_round),
         "--rounds", str(rounds), "--stuck", str(stuck)],
        timeout=60 + 10 * stuck,
    )  # fmt: skip
    if storm and cand.protocol:
        res.requests = storm.requests(cand.protocol) - before
    if out.get("timeout"):
        res.error = f"n/a (did not finish within {60 + 10 * stuck:g} s)"
    elif "stuck" in out:
        res.error = f"a call had not returned after {stuck:g} s"
    elif "error" in out:
        res.error = str(out["error"])
    else:
        res.ratio = _paired(out["cpu"], out["base_cpu"])
        res.wall_ratio = _paired(out["wall"], out["base_wall"])
        res.longest = float(out["longest"])
    return res


@dataclass
class EndToEnd:
    name: str
    threads: int
    ratios: list[float] = field(default_factory=list)  # process CPU per delivered event / null
    rates: list[float] = field(default_factory=list)  # events/s delivered
    sent: int = 0
    arrived: list[int] = field(default_factory=list)
    error: str = ""

    @property
    def ratio(self) -> float:
        return _median(self.ratios)

    @property
    def rate(self) -> float:
        return _median(self.rates)

    @property
    def complete(self) -> bool:
        return bool(self.arrived) and all(a == self.sent for a in self.arrived)


def end_to_end(
    keys: list[str], s: Sink, events: int, threads: int, rounds: int, quiet: float
) -> dict[str, EndToEnd]:
    """Process CPU per delivered event and events/s delivered, each candidate in a child.

    The child logs ``events`` records from ``threads`` threads, settles with the library's own
    flush, then polls the sink until every event is counted or none arrived for ``quiet``
    seconds; CPU and wall stop at the last arrival.  Rounds interleave the candidates.
    """
    results = {key: EndToEnd(CANDIDATES[key].name, threads) for key in keys}
    for _ in range(rounds):
        for key in keys:
            res = results[key]
            if res.error:
                continue
            n = slow_calls(events) if CANDIDATES[key].slow else events
            out = isolated(
                ["e2e", key, s.url, "--events", str(n), "--base-events", str(events),
                 "--threads", str(threads), "--quiet", str(quiet)],
                timeout=600,
            )  # fmt: skip
            if out.get("timeout"):
                res.error = "n/a (did not finish within 600 s)"
            elif "error" in out:
                res.error = str(out["error"])
            else:
                res.sent = int(out["sent"])
                res.arrived.append(int(out["arrived"]))
                if out["arrived"]:
                    res.ratios.append(out["cpu_per_event"] / out["base_cpu_per_call"])
                    res.rates.append(out["rate"])
    return results


def exit_share(s: Sink, key: str, n: int) -> float | str:
    """Share of ``n`` events, logged just before a normal exit without close(), that arrive."""
    protocol = CANDIDATES[key].protocol
    before = s.rows(protocol)
    out = isolated(["exit", key, s.url, "--events", str(n)], timeout=300)
    if out.get("timeout"):
        return "n/a (the process did not exit within 300 s)"
    if "error" in out:
        return str(out["error"])
    deadline = time.monotonic() + 5
    while s.rows(protocol) - before < n and time.monotonic() < deadline:
        time.sleep(0.1)  # the sink may still be counting the last request
    return (s.rows(protocol) - before) / n


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


def burst(log: logging.Logger, per_thread: int, threads: int) -> None:
    """``per_thread`` logging calls from each of ``threads`` threads, started together."""

    def work() -> None:
        for i in range(per_thread):
            log.info("user %s logged in", 42, extra={"request_id": "r-1234", "attempt": i})

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


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
