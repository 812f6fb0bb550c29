"""Per-fault figures: what each failure of the Events API does to delivery, in one table.

For every fault (and a healthy baseline) a fresh ``TinybirdLoggingHandler`` on its own
datasource logs events, paced evenly over a bounded fault window, against
``benchmarks.faultsink`` (a fault-injecting Events API in its own process).  Then the fault
clears (a size limit and a refusal stay), ``flush()`` drives delivery, and the row reports:
events logged and arrived (distinct ``event_id``s at the server), duplicates, drops counted
by reason (``handler.stats()["dropped"]``), losses nobody counted (must be 0), the wall time
of each ``logger.info`` call on the caller's thread, the requests the server saw, and the
exit time of a child process that logs into the same fault and ends without ``close()``.

``python -m benchmarks.faults [--quick]`` prints the Markdown section; ``report()`` returns it.
Only tblog's public API is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

import tblog
from benchmarks.core import machine
from benchmarks.faultsink import Fault, FaultSink

TOKEN = "p.faults-token-0123456789abcdef"
#: Seconds tblog's exit hook may add after ``shutdown_timeout``: it joins the sender thread
#: for up to 0.5 s so a request in flight can finish.  The rest of the margin is the end of
#: the interpreter.
EXIT_JOIN = 0.5


@dataclass(frozen=True)
class Config:
    """How big and how long each row is, and the handler options every row shares."""

    events: int = 3_000  # logged per row, during the fault window
    fault_seconds: float = 3.0  # how long a bounded fault lasts
    exit_events: int = 500  # logged by the exit child before it ends
    batch_size: int = 500
    timeout: float = 0.5
    shutdown_timeout: float = 2.0
    retry_base_delay: float = 0.05
    retry_max_delay: float = 1.0
    max_body_bytes: int = 64 * 1024  # the 413 fault's limit (uncompressed request body)
    recovery_timeout: float = 15.0  # the flush() bound once the fault has cleared

    @classmethod
    def quick(cls) -> Config:
        """A smoke configuration: a few seconds per row, exit children included."""
        return cls(
            events=300, fault_seconds=0.4, exit_events=100, batch_size=50,
            shutdown_timeout=1.0, max_body_bytes=16 * 1024,
        )  # fmt: skip

    def options(self) -> dict[str, Any]:
        """The handler options of every row (all others keep their defaults)."""
        return {
            "batch_size": self.batch_size,
            "timeout": self.timeout,
            "shutdown_timeout": self.shutdown_timeout,
            "retry_base_delay": self.retry_base_delay,
            "retry_max_delay": self.retry_max_delay,
        }


@dataclass(frozen=True)
class Scenario:
    key: str  # names the datasources of the row
    label: str
    fault: Fault
    clears: bool = True  # False: the fault is still on while flush() delivers
    oversized: int = 0  # bytes of one more event, logged after the window (413: never fits)


def scenarios(config: Config) -> list[Scenario]:
    """The rows of the table, in order."""
    s = f"{config.fault_seconds:g} s"
    limit = {
        "Retry-After": "1", "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1",
    }  # fmt: skip
    slow = 2 * config.timeout
    too_large = Fault("too_large", max_bytes=config.max_body_bytes)
    kib = config.max_body_bytes // 1024
    big = config.max_body_bytes + 4096  # one event no split can make fit
    return [
        Scenario("healthy", "healthy (baseline)", Fault()),
        Scenario("503", f"503 burst, {s}", Fault("status", 503)),
        Scenario("429", f"429 storm with headers, {s}", Fault("status", 429, headers=limit)),
        Scenario("reset", f"connection resets, {s}", Fault("reset")),
        Scenario("slow", f"answers {slow:g} s late (> `timeout`), {s}", Fault("slow", delay=slow)),
        Scenario("413", f"413 above {kib} KiB (stays)", too_large, clears=False, oversized=big),
        Scenario("403", "403 refused (stays)", Fault("status", 403), clears=False),
        Scenario("black_hole", f"black hole (accepts, never answers), {s}", Fault("black_hole")),
    ]


@dataclass
class Row:
    """One fault's figures."""

    key: str
    label: str
    logged: int
    arrived: int  # distinct event ids stored by the server
    duplicates: int  # rows stored beyond the distinct ids
    dropped: dict[str, int]  # handler.stats()["dropped"]
    answers: dict[str, int]  # requests the server saw, by the answer they got
    latencies: list[float] = field(repr=False)  # wall seconds of each logger.info call
    flushed: bool = False  # what flush(recovery_timeout) returned once the fault cleared
    flush_seconds: float = 0.0  # how long that flush() took
    exit_seconds: float = 0.0  # last logging call -> child process ended
    exit_logged: int = 0
    exit_arrived: int = 0
    exit_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def lost_uncounted(self) -> int:
        return self.logged - self.arrived - sum(self.dropped.values())

    @property
    def exit_lost_uncounted(self) -> int:
        return self.exit_logged - self.exit_arrived - sum(self.exit_dropped.values())

    def latency(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the per-call wall times; 1 is the worst call."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"benchmarks.faults.{name}")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def _log_during(log: logging.Logger, n: int, seconds: float) -> list[float]:
    """Log ``n`` events spread evenly over ``seconds``; the wall time of each call.

    The pauses pace the producer (a steady stream during the fault); they wait for nothing.
    """
    latencies: list[float] = []
    chunk = max(1, n // 100)
    start = time.perf_counter()
    for i in range(n):
        before = time.perf_counter()
        log.info("fault event %d for user %s", i, "u-42", extra={"request_id": f"r-{i}"})
        latencies.append(time.perf_counter() - before)
        if (i + 1) % chunk == 0:
            pause = start + seconds * (i + 1) / n - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    return latencies


def _measure(sink: FaultSink, scenario: Scenario, config: Config) -> Row:
    ds = f"faults_{scenario.key}"
    handler = tblog.TinybirdLoggingHandler(sink.url, TOKEN, "faults", ds, **config.options())
    log = _logger(scenario.key, handler)
    sink.set_fault(ds, scenario.fault)
    try:
        latencies = _log_during(log, config.events, config.fault_seconds)
        logged = config.events
        if scenario.oversized:
            log.info("oversized %s", "x" * scenario.oversized)
            logged += 1
        if scenario.clears:
            sink.set_fault(ds, None)
        started = time.perf_counter()
        flushed = handler.flush(config.recovery_timeout)
        flush_seconds = time.perf_counter() - started
    finally:
        log.removeHandler(handler)
        handler.close()
        sink.set_fault(ds, None)
    dropped = dict(handler.stats()["dropped"])
    seen = sink.stats(ds)
    row = Row(
        key=scenario.key, label=scenario.label, logged=logged, arrived=seen["unique"],
        duplicates=seen["rows"] - seen["unique"], dropped=dropped, answers=seen["answers"],
        latencies=latencies, flushed=flushed, flush_seconds=flush_seconds,
    )  # fmt: skip
    _measure_exit(sink, scenario, config, row)
    return row


# The exit child: logs N events and ends its script without close().  Its atexit hook is
# registered before tblog is imported, so it runs after tblog's own (hooks run last-in,
# first-out) and reports what tblog's exit delivered and counted.
_EXIT_CHILD = textwrap.dedent(
    """
    import atexit, json, logging, sys, time
    url, token, ds, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    options = json.loads(sys.argv[5])
    handler = None

    def report() -> None:
        if handler is not None:
            stats = handler.stats()
            print(json.dumps({"sent": stats["sent"], "dropped": stats["dropped"]}), flush=True)

    atexit.register(report)
    import tblog

    handler = tblog.TinybirdLoggingHandler(url, token, "faults-exit", ds, **options)
    log = logging.getLogger("faults.exit")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(n):
        log.info("exit event %d for user %s", i, "u-42", extra={"request_id": f"r-{i}"})
    print(json.dumps({"last_log": time.clock_gettime(time.CLOCK_MONOTONIC)}), flush=True)
    """
)


def _measure_exit(sink: FaultSink, scenario: Scenario, config: Config, row: Row) -> None:
    """Exit time with the endpoint held in the fault (CLOCK_MONOTONIC is system-wide)."""
    ds = f"faults_exit_{scenario.key}"
    sink.set_fault(ds, scenario.fault)
    try:
        argv = [sys.executable, "-c", _EXIT_CHILD, sink.url, TOKEN, ds, str(config.exit_events),
                json.dumps(config.options())]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        ended = time.clock_gettime(time.CLOCK_MONOTONIC)  # read after the child was reaped
    finally:
        sink.set_fault(ds, None)
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    last_log = next((r["last_log"] for r in reports if "last_log" in r), None)
    at_exit = next((r for r in reports if "dropped" in r), None)
    if proc.returncode != 0 or last_log is None or at_exit is None:
        raise RuntimeError(f"exit child for {scenario.key} failed: {proc.stderr[-2000:]}")
    row.exit_seconds = ended - last_log
    row.exit_logged = config.exit_events
    row.exit_arrived = sink.stats(ds)["unique"]
    row.exit_dropped = dict(at_exit["dropped"])


def run(config: Config | None = None) -> list[Row]:
    """Measure every scenario against one fault server; the rows in table order."""
    config = config or Config()
    with FaultSink() as sink:
        return [_measure(sink, scenario, config) for scenario in scenarios(config)]


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{how}: {n:,}" for how, n in ordered)


def _answers(answers: dict[str, int]) -> str:
    ordered = sorted(answers.items(), key=lambda kv: (kv[0] != "202", kv[0]))
    return ", ".join(f"{n:,}x {how}" for how, n in ordered) or "none"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def render(rows: list[Row], config: Config) -> str:
    """The Markdown section: heading, one table row per fault, then the conditions."""
    st = config.shutdown_timeout
    lines = [
        f"### Delivery under failure: {config.events:,} events per fault, logged during "
        f"{config.fault_seconds:g} s of it",
        "",
        "| fault | logged | arrived | duplicates | dropped, counted by reason | lost uncounted "
        "| `logger.info` wall us: p50 / p99 / worst | requests the server saw (answer) "
        "| `flush()` once the fault cleared "
        f"| exit time, endpoint still faulty (`shutdown_timeout` {st:g} s) "
        "| at exit: arrived / counted |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        exit_counted = _counts(r.exit_dropped)
        lines.append(
            f"| {r.label} | {r.logged:,} | {r.arrived:,} | {r.duplicates:,} "
            f"| {_counts(r.dropped)} | {r.lost_uncounted:,} "
            f"| {_us(r.latency(0.5))} / {_us(r.latency(0.99))} / {_us(r.latency(1.0))} "
            f"| {_answers(r.answers)} | {r.flush_seconds:.2f} s{'' if r.flushed else ', False'} "
            f"| {r.exit_seconds:.2f} s "
            f"| {r.exit_arrived:,} of {r.exit_logged:,} / {exit_counted} |"
        )
    options = ", ".join(f"`{k}={v!r}`" for k, v in config.options().items())
    clearing = {sc.key for sc in scenarios(config) if sc.clears}
    stuck = [r.label for r in rows if r.key in clearing and not r.flushed]
    if stuck:  # facts only: what flush() returned and what close() then delivered
        lines += [
            "",
            f"`flush({config.recovery_timeout:g})` returned False after the fault had cleared on: "
            + "; ".join(stuck)
            + ". Arrived and dropped are read after the `close()` that followed, which flushes "
            "again within `shutdown_timeout`.",
        ]
    lines += [
        "",
        f"- Each row: a new `TinybirdLoggingHandler` on its own datasource logs "
        f"{config.events:,} events evenly over {config.fault_seconds:g} s while the fault is on; "
        "each call's wall time is taken on the caller's thread. Then the fault clears (the 413 "
        f"limit and the 403 refusal stay), `handler.flush({config.recovery_timeout:g})` and "
        "`close()` run (the table gives that flush's time, and False where it returned False: "
        "it does when an event it waited for was dropped, such as the 413 row's oversized one), "
        "and the server's distinct `event_id`s are counted as arrived. "
        "Duplicates are rows stored beyond the distinct ids; lost uncounted is logged - arrived "
        '- `stats()["dropped"]`.',
        f"- Handler options: {options}; all others at their defaults "
        "(`flush_interval=1.0`, `max_retries=10`, `circuit_breaker_threshold=5`, "
        "`circuit_breaker_reset=30.0`, `gzip=True`, no spool).",
        "- Faults: a status fault answers every request with it; the 429s carry "
        "`Retry-After: 1`, `X-RateLimit-Limit: 10`, `X-RateLimit-Remaining: 0`, "
        "`X-RateLimit-Reset: 1`. Resets read the request, then close with `SO_LINGER` 0 (RST). "
        f"Slow answers come {2 * config.timeout:g} s late (503, after the client gave up). "
        "The black hole reads the request and never answers. None of these store rows; "
        f"the 413 fault refuses uncompressed bodies above {config.max_body_bytes:,} bytes and "
        "stores the rest.",
        f"- Exit: a child process logs {config.exit_events:,} events to a datasource held in "
        "the fault and ends its script without `close()`; the time runs from its last logging "
        "call to the end of the process (CLOCK_MONOTONIC, read by the parent after reaping "
        f"it). Expected bound: `shutdown_timeout` + {EXIT_JOIN:g} s (the exit hook's join of "
        "the sender thread) + the interpreter's teardown.",
        "- Worst calls include waiting for the GIL while the sender thread encodes a batch "
        f"(switch interval {sys.getswitchinterval() * 1e3:g} ms): compare with the baseline row.",
        "- The fault server (`benchmarks/faultsink.py`) runs in its own process, so its parsing "
        f"never competes with the caller for the GIL. {machine()}.",
    ]
    return "\n".join(lines) + "\n"


def report(config: Config | None = None) -> str:
    """Run every fault and return the Markdown section."""
    config = config or Config()
    return render(run(config), config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults")
    parser.add_argument("--quick", action="store_true", help="the tiny smoke configuration")
    parser.add_argument("--events", type=int, help="events logged per row")
    parser.add_argument("--fault-seconds", type=float, help="how long a bounded fault lasts")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    if args.events is not None:
        config = dataclasses.replace(config, events=args.events)
    if args.fault_seconds is not None:
        config = dataclasses.replace(config, fault_seconds=args.fault_seconds)
    sys.stdout.write(report(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
