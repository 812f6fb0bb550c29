"""Rate limit and dedup (issue 18.3): ``dedup_limit=N``, ``dedup_window=seconds``.

The same (logger, message template, level) more than N times in a window is collapsed: the
first N ship, the rest are counted (``stats()["collapsed"]``) and summed up in one event,
"repeated K times: <template>", with ``repeat_count``, ``first_ts`` and ``last_ts``.  Nothing
is held back without that summary: it ships when the window is over (seen on the next
record), at ``flush()``/``close()``, and when the key leaves the bounded table.  Windows run
on the gate's clock, patched here.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import random
import threading
from typing import Any

import pytest

import tblog
from tblog._event.gate import Gate
from tblog.structlog import TinybirdProcessor
from tests.eventsapi import EventsAPI


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _gated(handler: Any, clock: Clock) -> Gate:
    gate: Gate | None = handler._gate
    assert gate is not None
    gate._clock = clock
    return gate


def _collect(handler: Any, items: list[Any], then: Any = None) -> None:
    """What the handler puts goes to ``items`` (and on to ``then``)."""

    def put(snap: Any, size: int, pid: int | None = None) -> bool:
        items.append(snap)
        return then(snap, size, pid) if then is not None else True

    handler._put = put


def _summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "repeat_count" in r["extra"]]


def test_five_hundred_in_one_window_ship_ten_and_one_summary_of_490(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=10, dedup_window=60)
    _gated(handler, clock)
    logger.addHandler(handler)
    for i in range(500):
        logger.warning("disk %s is full (try %d)", "/var", i)
        clock.now += 0.01
    stats = handler.stats()
    assert stats["collapsed"] == 490
    assert handler.flush(10)  # the window is still open: flush ships the summary

    rows = events_api.rows()
    assert events_api.quarantine["tb_logs"] == []
    normal = [r for r in rows if "repeat_count" not in r["extra"]]
    assert [r["message"] for r in normal] == [f"disk /var is full (try {i})" for i in range(10)]
    [summary] = _summaries(rows)
    assert summary["message"] == "repeated 490 times: disk %s is full (try %d)"
    assert summary["level"] == "WARNING" and summary["level_no"] == 30
    assert summary["logger"] == logger.name
    assert summary["extra"]["repeat_count"] == 490
    assert summary["func_name"] == "test_five_hundred_in_one_window_ship_ten_and_one_summary_of_490"
    first, last = summary["extra"]["first_ts"], summary["extra"]["last_ts"]
    assert normal[-1]["timestamp"] <= first <= last == summary["timestamp"]
    assert summary["trace_id"] == ""
    stats = handler.stats()
    assert stats["sent"] == 11 and stats["summaries"] == 1
    # logged (500) == shipped records (10) + collapsed (490); the summary is an extra event
    assert (stats["sent"] - stats["summaries"]) + stats["collapsed"] == 500


def test_a_summary_ships_when_the_next_record_finds_its_window_over(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=2, dedup_window=10)
    _gated(handler, clock)
    items: list[Any] = []
    _collect(handler, items, handler._put)
    logger.addHandler(handler)
    for _ in range(5):
        logger.error("boom")
    assert len(items) == 2
    clock.now += 10  # the window is over: the next record reports it and starts a new one
    logger.error("boom")
    assert [s["msg"] for s in items] == ["boom", "boom", "repeated 3 times: boom", "boom"]
    logger.error("boom")
    logger.error("boom")  # the third of the new window
    assert handler.flush(10)
    messages = [r["message"] for r in events_api.rows()]
    assert messages == ["boom", "boom", "repeated 3 times: boom", "boom", "boom",
                        "repeated 1 time: boom"]  # fmt: skip


def test_an_idle_key_is_reported_once_any_record_comes_after_its_window(
    make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=1, dedup_window=5)
    _gated(handler, clock)
    items: list[Any] = []
    _collect(handler, items)
    logger.addHandler(handler)
    for _ in range(4):
        logger.info("flood")
    clock.now += 6
    logger.info("something else")  # another key: the sweep finds flood's window over
    assert [s["msg"] for s in items] == ["flood", "repeated 3 times: flood", "something else"]


def test_keys_are_logger_template_and_level_not_the_merged_message(
    make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=1, dedup_window=60)
    _gated(handler, clock)
    items: list[Any] = []
    _collect(handler, items)
    logger.addHandler(handler)
    other = logging.getLogger(logger.name + ".child")
    for i in range(3):
        logger.info("user %s", i)  # one key, whatever the argument
        logger.warning("user %s", i)  # another level
        other.info("user %s", i)  # another logger
        logger.info("user %s!", i)  # another template
    shipped = [(s["name"], s["levelname"], s["msg"], s["args"]) for s in items]
    assert shipped == [
        (logger.name, "INFO", "user %s", 0),
        (logger.name, "WARNING", "user %s", 0),
        (other.name, "INFO", "user %s", 0),
        (logger.name, "INFO", "user %s!", 0),
    ]
    assert handler.stats()["collapsed"] == 8
    handler._drain()
    assert sorted(s["msg"] for s in items[4:]) == ["repeated 2 times: user %s"] * 3 + [
        "repeated 2 times: user %s!"
    ]


def test_the_table_is_bounded_and_an_evicted_key_ships_its_summary(
    make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=1, dedup_window=60)
    gate = _gated(handler, clock)
    gate.max_keys = 3
    items: list[Any] = []
    _collect(handler, items)
    logger.addHandler(handler)
    logger.info("a")
    logger.info("a")  # held back
    for name in "bcd":  # the fourth key evicts the least recently seen: a
        logger.info(name)
    assert [s["msg"] for s in items] == ["a", "b", "c", "repeated 1 time: a", "d"]
    assert len(gate._runs) == 3


def test_close_ships_what_is_held_back(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=3, dedup_window=60)
    _gated(handler, clock)
    logger.addHandler(handler)
    for _ in range(10):
        logger.info("retrying")
    logger.removeHandler(handler)
    handler.close()
    messages = [r["message"] for r in events_api.rows()]
    assert messages == ["retrying"] * 3 + ["repeated 7 times: retrying"]


def test_a_flush_reports_and_the_window_goes_on(
    make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=2, dedup_window=60)
    _gated(handler, clock)
    items: list[Any] = []
    _collect(handler, items)
    logger.addHandler(handler)
    for _ in range(4):
        logger.info("x")
    handler._drain()
    for _ in range(3):
        logger.info("x")  # still over the limit in this window: held back again
    handler._drain()
    handler._drain()  # nothing more held back: nothing more shipped
    assert [s["msg"] for s in items] == ["x", "x", "repeated 2 times: x", "repeated 3 times: x"]


def test_threads_add_up(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(
        dedup_limit=50, dedup_window=60, sample={logger.name: {"DEBUG": 0.5}},
        max_buffer_size=50_000,
    )  # fmt: skip
    gate = _gated(handler, clock)
    gate._rand = random.Random(3).random
    logger.addHandler(handler)
    start = threading.Barrier(8)

    def work(n: int) -> None:
        own = f"thread {n}: %d"  # a template of its own
        start.wait()
        for i in range(1000):
            logger.info("same %d", i)  # one key for every thread
            logger.debug("sampled %d", n)  # sampled, then one key too
            if i < 50:
                logger.warning(own, i)  # eight keys, within the limit each

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert handler.flush(30)
    rows = events_api.rows()
    stats = handler.stats()
    logged = 8 * (1000 + 1000 + 50)
    summaries = _summaries(rows)
    assert len(summaries) == stats["summaries"] == 2  # "same %d", "sampled %d"
    assert stats["sent"] == len(rows)
    assert stats["dropped_total"] == 0 and stats["queue_depth"] == 0
    # logged == sent + sampled + collapsed + dropped_total + queue_depth, the summary rows
    # (extra events of their own) taken out of sent
    assert logged == (
        stats["sent"] - stats["summaries"] + stats["sampled"] + stats["collapsed"]
        + stats["dropped_total"] + stats["queue_depth"]
    )  # fmt: skip
    assert sum(s["extra"]["repeat_count"] for s in summaries) == stats["collapsed"]
    [same] = [s for s in summaries if s["message"].endswith("same %d")]
    assert same["extra"]["repeat_count"] == 8000 - 50
    [sampled] = [s for s in summaries if s["message"].endswith("sampled %d")]
    assert sampled["sample_rate"] == 0.5  # what it sums up was kept at that rate
    assert sum(1 for r in rows if r["level"] == "WARNING") == 8 * 50


def test_the_queue_handler_flush_covers_the_summary(
    events_api: EventsAPI, logger: logging.Logger, clock: Clock
) -> None:
    q: queue.Queue[Any] = queue.Queue()
    handler = tblog.TinybirdLoggingQueueHandler(
        q, events_api.url, events_api.token, "tests", dedup_limit=1, dedup_window=60
    )
    try:
        _gated(handler.handler, clock)
        logger.addHandler(handler)
        for _ in range(5):
            logger.info("again")
        assert handler.flush(10)
        assert [r["message"] for r in events_api.rows()] == ["again", "repeated 4 times: again"]
    finally:
        handler.close()


def test_option_errors() -> None:
    cases: list[tuple[Any, type[Exception]]] = [
        (-1, ValueError),
        (1.5, TypeError),
        (True, TypeError),
    ]
    for value, error in cases:
        with pytest.raises(error, match="dedup_limit"):
            tblog.TinybirdLoggingHandler("http://127.0.0.1:9", "p.x" * 10, "d", dedup_limit=value)
    with pytest.raises(ValueError, match="dedup_window must be >= 0"):
        tblog.TinybirdLoggingHandler(
            "http://127.0.0.1:9", "p.x" * 10, "d", dedup_limit=5, dedup_window=-1
        )
    off = tblog.TinybirdLoggingHandler(
        "http://127.0.0.1:9", "p.x" * 10, "d", dedup_limit=5, dedup_window=0
    )
    try:
        assert off._gate is None  # a window of 0 turns dedup off
    finally:
        off.close()


def test_the_structlog_processor_collapses_too(events_api: EventsAPI, clock: Clock) -> None:
    import structlog

    processor = TinybirdProcessor(
        events_api.url, events_api.token, "tests", dedup_limit=2, dedup_window=60
    )
    _gated(processor, clock)
    log = structlog.wrap_logger(
        None, processors=[structlog.processors.add_log_level, processor, _drop],
        context_class=dict,
    )  # fmt: skip
    try:
        for i in range(6):
            log.warning("payment retry", attempt=i)
        assert processor.stats()["collapsed"] == 4
        assert processor.flush(10)
        rows = events_api.rows()
        assert events_api.quarantine["tb_logs"] == []
        assert [r["message"] for r in rows] == ["payment retry"] * 2 + [
            "repeated 4 times: payment retry"
        ]
        summary = rows[-1]
        assert summary["level"] == "WARNING"
        assert summary["extra"]["repeat_count"] == 4
        assert summary["extra"]["first_ts"] <= summary["extra"]["last_ts"]
    finally:
        processor.close()


def _drop(logger: Any, method_name: str, event_dict: Any) -> Any:
    import structlog

    raise structlog.DropEvent


def test_tblog_flush_ships_what_is_held_back(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, clock: Clock
) -> None:
    handler = make_handler(dedup_limit=1, dedup_window=60)
    _gated(handler, clock)
    logger.addHandler(handler)
    for _ in range(3):
        logger.info("spam")
    assert tblog.flush(10)
    assert [r["message"] for r in events_api.rows()] == ["spam", "repeated 2 times: spam"]


def _child_floods(url: str, token: str) -> None:
    handler = tblog.TinybirdLoggingHandler(
        url, token, "tests", dedup_limit=2, dedup_window=3600, flush_interval=3600
    )
    log = logging.getLogger("tests.dedup.child")
    log.propagate = False
    log.addHandler(handler)
    for _ in range(10):
        log.error("child flood")
    # no flush, no close: the child ends with os._exit (multiprocessing), where only tblog's
    # exit pass runs


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="POSIX")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_process_end_ships_what_is_held_back(events_api: EventsAPI) -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_floods, args=(events_api.url, events_api.token))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    messages = [r["message"] for r in events_api.rows()]
    assert messages == ["child flood"] * 2 + ["repeated 8 times: child flood"]


def test_the_queue_handler_close_ships_the_summary(
    events_api: EventsAPI, logger: logging.Logger, clock: Clock
) -> None:
    q: queue.Queue[Any] = queue.Queue()
    handler = tblog.TinybirdLoggingQueueHandler(
        q, events_api.url, events_api.token, "tests", dedup_limit=1, dedup_window=60
    )
    _gated(handler.handler, clock)
    logger.addHandler(handler)
    for _ in range(3):
        logger.info("closing")
    logger.removeHandler(handler)
    handler.close()
    assert [r["message"] for r in events_api.rows()] == ["closing", "repeated 2 times: closing"]


def _child_of_a_flood(url: str, token: str) -> None:
    log = logging.getLogger("tests.dedup.forked")
    [handler] = log.handlers
    assert isinstance(handler, tblog.TinybirdLoggingHandler)
    assert handler.stats()["collapsed"] == 3  # the parent's count, inherited...
    handler.flush(10)  # ...but not its held-back records: the parent summarizes those


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="POSIX")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_summarize_its_parents_records(
    events_api: EventsAPI, make_handler: Any
) -> None:
    handler = make_handler(dedup_limit=1, dedup_window=3600)
    log = logging.getLogger("tests.dedup.forked")
    log.propagate = False
    log.addHandler(handler)
    try:
        for _ in range(4):
            log.warning("before fork")
        child = multiprocessing.get_context("fork").Process(
            target=_child_of_a_flood, args=(events_api.url, events_api.token)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert handler.flush(10)
        assert [r["message"] for r in events_api.rows()] == [
            "before fork", "repeated 3 times: before fork"
        ]  # fmt: skip
    finally:
        log.removeHandler(handler)
