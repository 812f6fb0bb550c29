"""Measurements that need a process of their own: ``python -m benchmarks.isolated MODE KEY URL``.

``KEY`` names a candidate of ``benchmarks.candidates``; each mode prints one JSON line.

* ``cost``: the caller cost against a healthy ``URL``: ``--rounds`` rounds of the
  ``NullHandler`` call (``--base-calls``) and of the candidate's (``--calls``), alternating,
  the candidate settled after each of its rounds; the rows the sink counted for it.
* ``caller``: the caller cost against ``URL`` (a 429 storm, or a port that refuses
  connections).  One pass of ``--calls`` calls timed one by one (the longest call at first
  contact with the failing endpoint; a call still running after ``--stuck`` seconds ends the
  child), then ``--rounds`` rounds of this process's own ``NullHandler`` call
  (``--base-calls``) and of ``--calls`` candidate calls, alternating.  Nothing is settled: the
  candidate keeps failing in the background, as it would in an application.
* ``e2e``: the same burst of ``--base-events`` records from ``--threads`` threads into a
  ``NullHandler`` (the baseline, process CPU per call), then ``--events`` records through the
  candidate built to hold the burst; it settles with the library's own flush and polls the
  sink until every event is counted or none arrived for ``--quiet`` seconds.  Process CPU and
  wall time stop at the last arrival.
* ``exit``: ``--events`` records, then a normal interpreter exit without ``close()``; the
  parent counts what reached the sink.

``cost``, ``caller`` and ``e2e`` leave with ``os._exit`` once they have printed, so a peer
still retrying in a non-daemon thread (logtail sleeps up to 60 s between attempts) cannot hold
them up.
A candidate that cannot be built prints ``{"error": "n/a (not installed)"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from benchmarks import core
from benchmarks.candidates import CANDIDATES, Built, not_available


def _print(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _print_rounds(
    base: list[tuple[float, float]], measured: list[tuple[float, float]], **more: Any
) -> None:
    """Print paired rounds of ``(wall, cpu)``: the baseline's and the candidate's, and ``more``."""
    _print(
        {
            "base_wall": [w for w, _ in base],
            "base_cpu": [c for _, c in base],
            "wall": [w for w, _ in measured],
            "cpu": [c for _, c in measured],
            **more,
        }
    )


def _build(key: str, url: str, burst: int) -> Built | None:
    try:
        return CANDIDATES[key].build(url, burst)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        _print({"error": not_available(exc)})
        return None


def longest_call(target: Any, api: str, n: int, stuck: float) -> float:
    """The longest wall time of a single call among ``n`` calls, each timed on its own.

    A watchdog thread ends the process, printing ``{"stuck": ...}``, when one call has not
    returned after ``stuck`` seconds (the Tinybird SDK retries 429 on the caller's thread
    without end).
    """
    started = [0.0]  # when the running call started; 0.0 between calls

    def watch() -> None:
        while True:
            time.sleep(0.05)
            since = started[0]
            if since and time.perf_counter() - since > stuck:
                _print({"stuck": stuck})
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    user, longest = 42, 0.0
    for i in range(n):
        started[0] = start = time.perf_counter()
        if api == "logging":
            target.info("user %s logged in", user, extra={"request_id": "r-1234", "attempt": i})
        else:
            target.info("user logged in", user=user, request_id="r-1234", attempt=i)
        started[0] = 0.0
        longest = max(longest, time.perf_counter() - start)
    return longest


def caller(key: str, url: str, n: int, base_calls: int, rounds: int, stuck: float) -> None:
    cand = CANDIDATES[key]
    null = core.logger_for(logging.NullHandler())
    core.calls(null, "logging", base_calls)  # warm-up
    built = _build(key, url, 0)
    if built is None:
        return
    target = core.target_of(built, cand.api)
    longest = longest_call(target, cand.api, n, stuck)
    base, measured = [], []
    for _ in range(rounds):  # paired: the machine's noise comes in bursts
        base.append(core.calls(null, "logging", base_calls))
        measured.append(core.calls(target, cand.api, n))
    _print_rounds(base, measured, longest=longest)


def cost(key: str, url: str, n: int, base_calls: int, rounds: int) -> None:
    """Rounds of the NullHandler call and of the candidate's, alternating; settled after each."""
    cand = CANDIDATES[key]
    null = core.logger_for(logging.NullHandler())
    built = _build(key, url, 0)
    if built is None:
        return
    target = core.target_of(built, cand.api)
    counter = core.SinkCounter(url) if cand.protocol else None
    before = counter.rows(cand.protocol) if counter else 0
    core.calls(null, "logging", base_calls)  # warm-up, both
    core.calls(target, cand.api, min(n, 1_000))
    built.settle()
    base, measured, logged = [], [], min(n, 1_000)
    for _ in range(rounds):
        base.append(core.calls(null, "logging", base_calls))
        measured.append(core.calls(target, cand.api, n))
        logged += n
        built.settle()
    delivered = counter.rows(cand.protocol) - before if counter else None
    _print_rounds(base, measured, logged=logged, delivered=delivered)


def e2e(key: str, url: str, events: int, base_events: int, threads: int, quiet: float) -> None:
    cand = CANDIDATES[key]
    if cand.api != "logging" or cand.protocol is None:
        _print({"error": "n/a (ships nothing through logging)"})
        return
    per_base = base_events // threads
    null = core.logger_for(logging.NullHandler())
    core.burst(null, per_base, threads)  # warm-up
    cpu0 = time.process_time()
    core.burst(null, per_base, threads)
    base = (time.process_time() - cpu0) / (per_base * threads)

    per_thread = events // threads
    sent = per_thread * threads
    built = _build(key, url, sent)
    if built is None:
        return
    counter = core.SinkCounter(url)
    before = counter.rows(cand.protocol)
    log = core.logger_for(built.target)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    core.burst(log, per_thread, threads)
    built.settle()
    arrived = counter.rows(cand.protocol) - before
    cpu, wall = time.process_time(), time.perf_counter()
    while arrived < sent and time.perf_counter() - wall < quiet:
        time.sleep(0.005)
        now = counter.rows(cand.protocol) - before
        if now > arrived:
            arrived, cpu, wall = now, time.process_time(), time.perf_counter()
    _print(
        {
            "base_cpu_per_call": base,
            "sent": sent,
            "arrived": arrived,
            "cpu_per_event": (cpu - cpu0) / arrived if arrived else None,
            "rate": arrived / (wall - wall0),
        }
    )


def exit_(key: str, url: str, events: int) -> None:
    cand = CANDIDATES[key]
    built = _build(key, url, 0)
    if built is None:
        return
    log = logging.getLogger("exit")
    log.setLevel(logging.INFO)
    log.addHandler(built.target)
    for i in range(events):
        log.info("record %d", i)
    _print({"logged": events, "protocol": cand.protocol})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.isolated")
    parser.add_argument("mode", choices=("cost", "caller", "e2e", "exit"))
    parser.add_argument("key", choices=sorted(CANDIDATES))
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--base-calls", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--base-events", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", type=float, default=2.0)
    parser.add_argument("--stuck", type=float, default=30.0)
    args = parser.parse_args(argv)
    core.quiet_root()
    if args.mode == "exit":
        exit_(args.key, args.url, args.events)
        return 0  # a normal exit: atexit hooks and non-daemon threads run as usual
    if args.mode == "cost":
        cost(args.key, args.url, args.calls, args.base_calls or args.calls, args.rounds)
    elif args.mode == "caller":
        caller(
            args.key, args.url, args.calls, args.base_calls or args.calls, args.rounds,
            args.stuck,
        )  # fmt: skip
    else:
        e2e(
            args.key, args.url, args.events, args.base_events or args.events, args.threads,
            args.quiet,
        )  # fmt: skip
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
