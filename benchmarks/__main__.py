"""``python -m benchmarks``: run every measurement side by side and print one Markdown report.

tblog and its peers (``benchmarks.candidates``) are measured in the same run, row by row:
caller cost, what tblog adds to structlog, caller cost under failure, end to end, gzip's share
of an event, delivery at exit, and tblog's memory during an outage (then, in a full run, the
fleet and ``tblog local``).

Options: ``--calls`` per round, ``--rounds``, ``--events`` for the end-to-end runs,
``--e2e-rounds``, ``--exit-events``, ``--outage-seconds`` (60 by default, as the issue asks),
``--stuck-after`` (how long one call against a failing endpoint may take before its row says
so and moves on), ``--quick`` (a smoke configuration), ``--out`` (where the Markdown report is
written, default ``benchmarks/results.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

from benchmarks import core, gzip_cost
from benchmarks.candidates import CANDIDATES

# The rows of each table, by candidate key (benchmarks.candidates).
CALLER = [k for k in CANDIDATES if k not in ("structlog-drop", "tblog-zlib")]
FAILING = ["tblog", "tblog-queue", "sdk", "sdk-queue", "otel", "logtail", "logtide"]
END_TO_END = ["tblog", "tblog-zlib", "tblog-pure", "otel", "logtail", "logtide", "sdk-queue"]
EXIT = ["tblog", "tblog-queue", "sdk-queue", "otel", "logtail", "logtide"]
EXIT_NOTE = {"otel": " (no `shutdown()`)", "logtide": " (no `client.close()`)"}


def _x(value: float) -> str:
    return f"{value:.2f}x" if value == value else "n/a"


def _caller_table(results: dict[str, core.Result]) -> list[str]:
    lines = [
        '### Caller cost per `logger.info("user %s logged in", x, extra={...})`',
        "",
        "Each handler in a child process of its own (one library per process, as in an "
        "application), in rounds that alternate with the same call on a `NullHandler` in that "
        "process; the ratio is the median over rounds of each round's CPU over the baseline "
        "round just before it (the machine's noise comes in bursts).  The structlog row makes "
        "the same call the structlog way, "
        '`log.info("user logged in", user=42, request_id="r-1234", attempt=i)`, and is still '
        "over the `logging` call with a `NullHandler`.  *Delivered*: the share of "
        "the calls that reached the sink once the handler was flushed after each round (its "
        "library's defaults: a full buffer drops).  The *sampling on* row samples the "
        'measured call (`sample={"": {"INFO": 0.5}}`): half the calls are kept, each with its '
        "`sample_rate`, half counted and dropped on the caller's thread; its *delivered* is "
        "about 50% by design.",
        "",
        "| handler | caller-thread CPU per call | its process's NullHandler call | ratio "
        "| wall ratio | delivered |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in CALLER:
        res = results[key]
        if res.error:
            lines.append(f"| {res.name} | {res.error} | | n/a | | |")
            continue
        delivered = "-" if res.delivered is None else f"{res.delivered / res.logged:.1%}"
        base = statistics.median(res.base)
        lines.append(
            f"| {res.name} | {res.median * 1e6:.2f} us | {base * 1e6:.2f} us | {_x(res.ratio)} "
            f"| {_x(res.wall_ratio)} | {delivered} |"
        )
    return lines


def _structlog_table(results: dict[str, core.Result]) -> list[str]:
    alone, tb = results["structlog-drop"], results["tblog-structlog"]
    lines = [
        "",
        "### What tblog adds to structlog",
        "",
        'The same chain (`merge_contextvars`, `add_log_level`, `TimeStamper(fmt="iso", '
        "utc=True)`) ending in a processor that raises `DropEvent` (structlog's own cost) or "
        "in tblog's `TinybirdProcessor`; ratios over the `logging` call with a `NullHandler`.",
        "",
        "| chain ends in | caller-thread CPU per call | ratio |",
        "|---|---:|---:|",
    ]
    for label, res in (("`raise structlog.DropEvent`", alone), ("tblog `TinybirdProcessor`", tb)):
        if res.error:
            lines.append(f"| {label} | {res.error} | n/a |")
        else:
            lines.append(f"| {label} | {res.median * 1e6:.2f} us | {_x(res.ratio)} |")
    if not alone.error and not tb.error:
        lines.append(
            f"| what tblog adds | {tb.ratio - alone.ratio:+.2f} NullHandler calls "
            f"| {_x(tb.ratio / alone.ratio)} of structlog alone |"
        )
    return lines


def _failure_table(args: argparse.Namespace, storm: core.Sink) -> list[str]:
    lines = [
        "",
        "### Caller cost under failure",
        "",
        "Each handler in a child process of its own, with its library's default retry policy; "
        "ratios are medians over rounds paired with that process's `NullHandler` call, as "
        "above (the handler keeps failing in the background meanwhile).  *Longest call* "
        "is the slowest single call of the first pass, at first contact with the failing "
        f"endpoint.  A handler that sends on the caller's thread is measured on "
        f"{core.synchronous_failing_calls(args.calls):,} calls a round.",
        "",
        "| handler | 429 storm (Retry-After: 1): CPU | wall | longest call "
        "| outage (connection refused): CPU | wall | longest call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    refused = core.refused_url()
    for key in FAILING:
        cells = [CANDIDATES[key].name]
        for url, s in ((storm.url, storm), (refused, None)):
            res = core.caller_cost_failing(key, url, args.calls, args.rounds, args.stuck_after, s)
            if res.error:
                note = res.error
                if res.requests:
                    note += f"; the sink answered {res.requests:,} requests with 429 meanwhile"
                cells += [note, "", ""]
            else:
                cells += [_x(res.ratio), _x(res.wall_ratio), f"{res.longest * 1e3:,.1f} ms"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _end_to_end_table(args: argparse.Namespace, ok: core.Sink) -> list[str]:
    lines = [
        "",
        "### End to end",
        "",
        f"{args.events:,} events from 1 or 8 producer threads (the Tinybird SDK queue handler, "
        f"which sends one request per record: {core.slow_calls(args.events):,}), each handler in "
        "a child process with its buffer sized for the burst where it has such an option "
        "(tblog `max_buffer_size`/`max_buffer_bytes`, OpenTelemetry `max_queue_size`, logtide "
        "`max_buffer_size`; logtail `drop_extra_events=False`, which blocks the caller instead "
        "of dropping); "
        "process CPU per delivered event, over a `NullHandler` call measured in the same child "
        f"with the same threads. Medians of {args.e2e_rounds} interleaved rounds.",
        "",
        "| handler | producer threads | process CPU per delivered event, over a NullHandler "
        "call | events/s delivered | all arrived |",
        "|---|---:|---:|---:|---|",
    ]
    for threads in (1, 8):
        results = core.end_to_end(END_TO_END, ok, args.events, threads, args.e2e_rounds, args.quiet)
        for res in results.values():
            if res.error:
                lines.append(f"| {res.name} | {threads} | {res.error} | | |")
                continue
            if res.complete:
                arrived = "yes"
            else:
                least = min(res.arrived)
                arrived = (
                    f"no: {least:,} of {res.sent:,} ({least / res.sent:.1%}) in the worst round"
                )
            lines.append(
                f"| {res.name} | {threads} | {_x(res.ratio)} | {res.rate:,.0f} | {arrived} |"
            )
    return lines


def _exit_table(args: argparse.Namespace, ok: core.Sink) -> list[str]:
    lines = [
        "",
        f"### Share of events that arrive at a normal exit (no close()), {args.exit_events:,} "
        "events logged just before it",
        "",
        "| handler | arrived |",
        "|---|---:|",
    ]
    for key in EXIT:
        share = core.exit_share(ok, key, args.exit_events)
        shown = share if isinstance(share, str) else f"{share:.1%}"
        lines.append(f"| {CANDIDATES[key].name}{EXIT_NOTE.get(key, '')} | {shown} |")
    return lines


def run(args: argparse.Namespace) -> str:
    lines = [f"Machine: {core.machine()}. Medians of {args.rounds} interleaved rounds.", ""]
    with core.sink() as ok_sink, core.sink(status=429) as storm_sink:
        keys = [*CALLER, "structlog-drop"]
        results = core.caller_cost(ok_sink.url, keys, args.calls, args.rounds)
        lines += _caller_table(results)
        lines += _structlog_table(results)
        lines += _failure_table(args, storm_sink)
        lines += _end_to_end_table(args, ok_sink)
        lines += ["", *gzip_cost.report(3 if args.quick else 15)]
        lines += _exit_table(args, ok_sink)

    cap = 16 * 2**20
    mem = core.outage_memory(args.outage_seconds, args.outage_rate, cap)
    lines += [
        "",
        f"### Memory during an outage ({args.outage_seconds:g} s at ~{args.outage_rate:,} "
        "events/s of 1 KB, `max_buffer_bytes` = 16 MiB)",
        "",
        f"{mem['events']:,.0f} events logged; buffer held {mem['buffer_mib']:.1f} MiB "
        f"(cap {mem['cap_mib']:.0f} MiB); peak RSS grew by {mem['rss_growth_mib']:.1f} MiB; "
        f"{mem['dropped']:,.0f} events dropped and counted under `buffer_full`.",
    ]

    from benchmarks import faults

    lines += ["", faults.report(faults.Config.quick() if args.quick else faults.Config())]

    if not args.quick:
        from benchmarks import fleet

        lines += ["", fleet.report(senders=200, seconds=30.0)]
        with contextlib.suppress(ImportError):
            from benchmarks import local_server

            local = local_server.measure(args.events)
            title = "### `tblog local` ingest beside the handler's; `tblog tail` reading back"
            lines += ["", title, ""]
            lines += [f"- {key}: {value:,.0f}" if isinstance(value, (int, float)) else
                      f"- {key}: {value}" for key, value in local.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--calls", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=35)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--e2e-rounds", type=int, default=5)
    parser.add_argument("--exit-events", type=int, default=5_000)
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument("--outage-rate", type=int, default=20_000)
    parser.add_argument("--stuck-after", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.md"))
    args = parser.parse_args(argv)
    args.quiet = 2.0  # seconds without a new arrival before a drop is assumed (end to end)
    if args.quick:
        args.calls, args.rounds, args.events, args.exit_events = 500, 2, 2_000, 200
        args.outage_seconds, args.outage_rate = 1.0, 2_000
        args.e2e_rounds, args.stuck_after, args.quiet = 1, 8.0, 1.0
    report = run(args)
    sys.stdout.write(report)
    if not args.quick:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
