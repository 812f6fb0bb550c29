"""``python -m benchmarks``: run every measurement in one process and print one Markdown report.

Options: ``--calls`` per round, ``--rounds``, ``--events`` for the end-to-end runs,
``--outage-seconds`` (the issue's full run is 60), ``--quick`` (a smoke configuration),
``--out`` (where the Markdown report is written, default ``benchmarks/results.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from benchmarks import core


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if value == value and base else "n/a"


def run(args: argparse.Namespace) -> str:
    lines = [f"Machine: {core.machine()}. Medians of {args.rounds} interleaved rounds.", ""]
    with core.sink() as ok_sink, core.sink(status=429) as storm_sink:
        names = list(core.CANDIDATES)
        results = core.caller_cost(ok_sink.url, names, args.calls, args.rounds)
        base = results["logging.NullHandler"].median
        lines += [
            '### Caller cost per `logger.info("user %s logged in", x, extra={...})`',
            "",
            "| handler | caller-thread CPU per call | ratio | wall per call | wall ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        base_wall = results["logging.NullHandler"].median_wall
        for name, res in results.items():
            if res.error:
                lines.append(f"| {name} | {res.error} | n/a | | |")
            else:
                lines.append(
                    f"| {name} | {res.median * 1e6:.2f} us | {_ratio(res.median, base)} "
                    f"| {res.median_wall * 1e6:.2f} us | {_ratio(res.median_wall, base_wall)} |"
                )

        failure = {
            "tblog during a 429 storm (Retry-After: 1)": core.caller_cost(
                storm_sink.url, ["tblog TinybirdLoggingHandler"], args.calls, args.rounds
            ),
            "tblog during an outage (connection refused)": core.caller_cost(
                core.refused_url(), ["tblog TinybirdLoggingHandler"], args.calls, args.rounds
            ),
        }
        lines += ["", "### Caller cost under failure (ratios over NullHandler)", "",
                  "| condition | caller-thread CPU | wall |", "|---|---:|---:|"]  # fmt: skip
        for label, res_map in failure.items():
            res = res_map["tblog TinybirdLoggingHandler"]
            lines.append(
                f"| {label} | {_ratio(res.median, base)} | {_ratio(res.median_wall, base_wall)} |"
            )

        lines += ["", "### End to end (tblog)", "",
                  "| producer threads | process CPU per delivered event, over a NullHandler call "
                  "| events/s delivered | all arrived |", "|---:|---:|---:|---|"]  # fmt: skip
        for threads in (1, 8):
            cpu, rate, complete = core.end_to_end(ok_sink.url, ok_sink, args.events, threads)
            lines.append(
                f"| {threads} | {_ratio(cpu, base)} | {rate:,.0f} | {'yes' if complete else 'NO'} |"
            )

        lines += ["", "### Share of events that arrive at a normal exit (no close())", "",
                  "| handler | arrived |", "|---|---:|"]  # fmt: skip
        for kind, label in (
            ("tblog", "tblog TinybirdLoggingHandler"),
            ("tblog-queue", "tblog TinybirdLoggingQueueHandler"),
            ("sdk-queue", "Tinybird SDK TinybirdLoggingQueueHandler"),
        ):
            share = core.exit_share(ok_sink, kind, args.exit_events)
            lines.append(
                f"| {label} | {'n/a (not installed)' if share is None else f'{share:.1%}'} |"
            )

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

    if not args.quick:
        from benchmarks import fleet

        lines += ["", fleet.report(senders=200, seconds=30.0)]
        with contextlib.suppress(ImportError):
            from benchmarks import local_server

            local = local_server.measure(args.events)
            lines += ["", "### `tblog local` ingest rate beside the handler's", ""]
            lines += [f"- {key}: {value:,.0f}" if isinstance(value, (int, float)) else
                      f"- {key}: {value}" for key, value in local.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--exit-events", type=int, default=5_000)
    parser.add_argument("--outage-seconds", type=float, default=10.0)
    parser.add_argument("--outage-rate", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds, args.events, args.exit_events = 500, 2, 2_000, 200
        args.outage_seconds, args.outage_rate = 1.0, 2_000
    report = run(args)
    sys.stdout.write(report)
    if not args.quick:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
