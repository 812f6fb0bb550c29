"""Gzip's share of an event, with the stdlib's zlib and with ISA-L (``tblog[speedups]``).

It accounts for the distance between the two end-to-end rows of tblog: the same lines of the
benchmark's call, encoded by tblog's ``EventBuilder`` and compressed chunk by chunk at level 1
as the sender does (``tblog._event.encode.gzip_lines``), in caller-thread CPU per event over a
``NullHandler`` call made in the same rounds (medians of interleaved rounds).  Also zlib's
two faster strategies, to show why level 1 is the floor.  ``python -m benchmarks.gzip_cost``
prints the table alone.
"""

from __future__ import annotations

import logging
import statistics
import time
import zlib
from collections.abc import Callable

from benchmarks import core
from tblog._event import encode as _encode
from tblog._event.build import EventBuilder
from tblog._event.snapshot import FMT_NONE, snapshot

EVENTS = 2_000  # a batch at the default batch_size


def _batch() -> tuple[list[bytes], int]:
    """The benchmark's call as ``EVENTS`` encoded lines, in the sender's chunks."""
    log = logging.getLogger("benchmarks.gzip_cost")
    snaps = []
    for i in range(EVENTS):
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 1, "user %s logged in", (42,), None,
            extra={"request_id": "r-1234", "attempt": i},
        )  # fmt: skip
        snaps.append(snapshot(record, FMT_NONE, None)[0])
    builder = EventBuilder(
        app_name="bench", environment="", schema="tblog", static_fields={},
        max_event_bytes=1_000_000,
    )  # fmt: skip
    chunks, _ = builder.encode_batch(snaps)
    return chunks, sum(map(len, chunks)) + len(chunks)  # the body's bytes before gzip


def _with_backend(chunks: list[bytes], backend: object) -> bytes:
    saved = _encode._fast_gzip
    _encode._fast_gzip = backend
    try:
        return _encode.gzip_lines(chunks)
    finally:
        _encode._fast_gzip = saved


def _strategy(chunks: list[bytes], strategy: int) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31, 8, strategy)
    out = [compressor.compress(chunk + b"\n") for chunk in chunks]
    return b"".join([*out, compressor.flush()])


def measure(rounds: int = 15) -> list[tuple[str, float, float]]:
    """(label, CPU per event over a NullHandler call, compression ratio) for each way."""
    chunks, size = _batch()
    ways: list[tuple[str, Callable[[], bytes]]] = [
        ("zlib, level 1 (tblog without `tblog[speedups]`)", lambda: _with_backend(chunks, None)),
        ("zlib, level 1, Huffman only", lambda: _strategy(chunks, zlib.Z_HUFFMAN_ONLY)),
        ("zlib, level 1, RLE", lambda: _strategy(chunks, zlib.Z_RLE)),
    ]
    fast = _encode._isal()
    if fast is not None:
        ways.insert(0, ("ISA-L, level 1 (tblog with `tblog[speedups]`)",
                        lambda: _with_backend(chunks, fast)))  # fmt: skip
    ratios: dict[str, list[float]] = {label: [] for label, _ in ways}
    sizes: dict[str, int] = {}
    null_logger = core.logger_for(logging.NullHandler())
    for _ in range(rounds):
        null = core.calls(null_logger, "logging", EVENTS)[1]  # the caller-thread CPU of a call
        for label, way in ways:
            start = time.thread_time()
            body = way()
            ratios[label].append((time.thread_time() - start) / EVENTS / null)
            sizes[label] = len(body)
    return [(label, statistics.median(ratios[label]), size / sizes[label]) for label, _ in ways]


def report(rounds: int = 15) -> list[str]:
    lines = [
        "### Gzip's share of an event",
        "",
        f"A batch of {EVENTS:,} events of the benchmark's call, encoded by tblog and gzipped "
        "chunk by chunk as the sender does; caller-thread CPU per event over a `NullHandler` "
        f"call made in the same round, medians of {rounds} rounds.",
        "",
        "| gzip | CPU per event, over a NullHandler call | compression |",
        "|---|---:|---:|",
    ]
    for label, cost, ratio in measure(rounds):
        lines.append(f"| {label} | {cost:.3f}x | {ratio:.1f}x |")
    return lines


if __name__ == "__main__":
    print("\n".join(report()))
