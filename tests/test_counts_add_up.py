"""The counts add up (issue 18.5): every record logged is shipped, sampled, collapsed,
dropped (by reason), still queued or still held for its trace; nothing is unaccounted for.

Definitions: ``logged`` counts the application's records (the logging calls the handler
saw); each "repeated K times" summary row of dedup is an extra event of its own
(``stats()["summaries"]``), shipped like any other.  So, at any quiet moment:

    logged + summaries == sent + sampled + collapsed + dropped_total + queue_depth + trace_held

and the server holds exactly ``sent`` rows.  With sampling, dedup, trace-keep and forced
drops (HTTP 400 refusals, a full buffer) all on, from several threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import tblog
from tests.eventsapi import EventsAPI

THREADS = 4
PER_THREAD = 600


def _accounted(stats: dict[str, Any]) -> int:
    return int(
        stats["sent"]
        + stats.get("sampled", 0)
        + stats.get("collapsed", 0)
        + stats["dropped_total"]
        + stats["queue_depth"]
        + stats["trace_held"]
    )


def _work(logger: logging.Logger, n: int, start: threading.Barrier) -> int:
    """Log a mix of records; return how many logging calls reached the handler."""
    start.wait()
    logged = 0
    for i in range(PER_THREAD):
        kind = i % 6
        if kind == 0:
            logger.debug("sampled half the time %d", i)  # sample: DEBUG at 0.5
        elif kind == 1:
            logger.warning("the same warning again")  # dedup: 5 per window, then collapsed
        elif kind == 2:
            with tblog.trace(f"{n:02d}{i // 60:030d}"):  # trace-keep: held until an error
                logger.info(f"in a trace {n}-{i}")  # (a template of its own: dedup keys
                if i % 120 == 2:  # on the template)
                    logger.error(f"the trace failed {n}-{i}")
                    logged += 1
        else:
            logger.info(f"plain {n}-{i}")
        logged += 1
    return logged


@pytest.mark.parametrize("forced", ["http_400", "buffer_full"])
def test_logged_equals_shipped_sampled_collapsed_dropped_held(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, forced: str
) -> None:
    options: dict[str, Any] = {
        "sample": {"": {"DEBUG": 0.5}},
        "dedup_limit": 5,
        "dedup_window": 3600.0,
        "keep_trace_on_error": True,
        "trace_hold_max": 7,  # traces of 30 records: some are discarded by the cap
        "trace_hold_max_events": 150,  # and some by the global cap
        "batch_size": 100,
        "warn_stderr": False,
    }
    if forced == "buffer_full":
        options.update(max_buffer_size=50, drop_policy="newest")
    else:
        events_api.fail_next(3, status=400)
    handler = make_handler(**options)
    logger.addHandler(handler)
    start = threading.Barrier(THREADS)
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda n=n: counts.append(_work(logger, n, start)))
        for n in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logged = sum(counts)
    assert len(counts) == THREADS and logged > THREADS * PER_THREAD

    handler.flush(10)
    stats = handler.stats()
    assert stats["sampled"] > 0 and stats["collapsed"] > 0 and stats["summaries"] > 0
    assert stats["trace_held"] > 0
    assert stats["dropped"].get("trace_discarded", 0) > 0
    if forced == "http_400":
        assert stats["dropped"].get("http_400", 0) > 0
    assert stats["queue_depth"] == 0
    assert logged + stats["summaries"] == _accounted(stats), stats
    assert len(events_api.rows()) == stats["sent"]

    handler.close()  # what is held is discarded (counted); nothing is left anywhere
    stats = handler.stats()
    assert stats["trace_held"] == 0 and stats["queue_depth"] == 0
    assert logged + stats["summaries"] == _accounted(stats), stats
    assert len(events_api.rows()) == stats["sent"]
    summaries = [r for r in events_api.rows() if r["message"].startswith("repeated ")]
    assert len(summaries) <= stats["summaries"]  # (a summary may be dropped too: counted)
