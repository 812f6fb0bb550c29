"""Trace-aware keep (issue 18.2): a trace's DEBUG/INFO records ship only if the trace errors.

Against the loopback Events API; the hold's clock is a test clock, so expiry is decided by
the test, never by waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import pytest

import tblog
from tblog._event import tracekeep
from tests.eventsapi import EventsAPI


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keeping(make_handler: Any, logger: logging.Logger, **options: Any) -> Any:
    handler = make_handler(keep_trace_on_error=True, warn_stderr=False, **options)
    clock = Clock()
    assert handler._hold is not None
    handler._hold._clock = clock
    logger.addHandler(handler)
    return handler, clock


def _messages(api: EventsAPI) -> list[str]:
    return [r["message"] for r in api.rows()]


def test_off_by_default_and_no_hold_object(make_handler: Any, logger: logging.Logger) -> None:
    handler = make_handler()
    assert handler._hold is None
    assert handler.stats()["trace_held"] == 0


def test_held_until_the_trace_errors_then_shipped_in_order_before_the_error(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, _ = _keeping(make_handler, logger)
    with tblog.trace("a" * 32):
        logger.debug("d1")
        logger.info("i2")
    logger.info("no trace")  # ships as usual
    with tblog.trace("b" * 32):
        logger.info("other trace")
    assert handler.flush(5)
    assert _messages(events_api) == ["no trace"]
    assert handler.stats()["trace_held"] == 3

    with tblog.trace("a" * 32):
        logger.error("boom")
        logger.info("after")  # the trace is kept now: ships directly
    assert handler.flush(5)
    assert _messages(events_api) == ["no trace", "d1", "i2", "boom", "after"]
    rows = events_api.rows()
    assert {r["trace_id"] for r in rows[1:]} == {"a" * 32}
    stats = handler.stats()
    assert stats["trace_held"] == 1  # "other trace" still waits
    assert stats["dropped"].get("trace_discarded", 0) == 0


def test_a_warning_ships_as_usual_and_releases_nothing(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, _ = _keeping(make_handler, logger)
    with tblog.trace("5" * 32):
        logger.info("held")
        logger.warning("careful")
    assert handler.flush(5)
    assert _messages(events_api) == ["careful"]
    assert handler.stats()["trace_held"] == 1


def test_a_hold_that_runs_out_is_discarded_and_counted(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, clock = _keeping(make_handler, logger, trace_hold_seconds=30.0)
    with tblog.trace("c" * 32):
        for i in range(5):
            logger.info("held %d", i)
    clock.now += 31
    assert handler.flush(5)  # flush looks at the holds
    stats = handler.stats()
    assert stats["dropped"]["trace_discarded"] == 5
    assert stats["trace_held"] == 0
    assert events_api.rows() == []
    with tblog.trace("c" * 32):  # the same trace later: a new hold; its error ships only it
        logger.info("late")
        logger.error("err")
    assert handler.flush(5)
    assert _messages(events_api) == ["late", "err"]


def test_a_kept_trace_holds_again_once_its_window_is_over(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, clock = _keeping(make_handler, logger, trace_hold_seconds=10.0)
    with tblog.trace("d" * 32):
        logger.error("first error")
        clock.now += 5
        logger.info("within the window")
        clock.now += 6
        logger.info("after the window")
    assert handler.flush(5)
    assert _messages(events_api) == ["first error", "within the window"]
    assert handler.stats()["trace_held"] == 1


def test_the_sender_tick_expires_holds(make_handler: Any, logger: logging.Logger) -> None:
    handler, clock = _keeping(make_handler, logger, trace_hold_seconds=1.0)
    with tblog.trace("e" * 32):
        logger.info("x")
    clock.now += 2
    tracekeep._tick(0.0)  # what every pass of the sender thread calls
    assert handler.stats()["dropped"]["trace_discarded"] == 1
    assert handler.stats()["trace_held"] == 0


def test_per_trace_cap_discards_the_oldest(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, _ = _keeping(make_handler, logger, trace_hold_max=3)
    with tblog.trace("f" * 32):
        for i in range(5):
            logger.info("m%d", i)
        assert handler.stats()["trace_held"] == 3
        logger.critical("crash")
    assert handler.flush(5)
    assert _messages(events_api) == ["m2", "m3", "m4", "crash"]
    assert handler.stats()["dropped"]["trace_discarded"] == 2


def test_global_caps_discard_the_oldest_trace_first(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, _ = _keeping(make_handler, logger, trace_hold_max_events=4)
    for t in "123":
        with tblog.trace(t * 32):
            logger.info("%s-a", t)
            logger.info("%s-b", t)
    stats = handler.stats()
    assert stats["trace_held"] == 4
    assert stats["dropped"]["trace_discarded"] == 2
    for t in "123":
        with tblog.trace(t * 32):
            logger.error("%s-err", t)
    assert handler.flush(5)
    assert _messages(events_api) == ["1-err", "2-a", "2-b", "2-err", "3-a", "3-b", "3-err"]


def test_the_byte_cap_holds_too(make_handler: Any, logger: logging.Logger) -> None:
    handler, _ = _keeping(make_handler, logger, trace_hold_max_bytes=10_000)
    with tblog.trace("9" * 32):
        for _ in range(20):
            logger.info("x" * 1000)
    stats = handler.stats()
    assert stats["trace_held"] == handler._hold.held
    assert handler._hold.held_bytes <= 10_000
    assert stats["trace_held"] + stats["dropped"]["trace_discarded"] == 20


def test_close_discards_and_counts_what_is_held(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, _ = _keeping(make_handler, logger)
    with tblog.trace("7" * 32):
        logger.info("a")
        logger.info("b")
    handler.close()
    stats = handler.stats()
    assert stats["dropped"]["trace_discarded"] == 2
    assert stats["trace_held"] == 0
    assert events_api.rows() == []


def test_threads_of_one_trace_keep_every_record(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler, _ = _keeping(make_handler, logger, trace_hold_max=10_000)
    trace_id = "8" * 32
    start = threading.Barrier(4)

    def work(n: int) -> None:
        with tblog.trace(trace_id):
            start.wait()
            for i in range(200):
                logger.info("t%d-%d", n, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handler.stats()["trace_held"] == 800
    with tblog.trace(trace_id):
        logger.error("end")
    assert handler.flush(5)
    got = _messages(events_api)
    assert len(got) == 801 and got[-1] == "end"
    for n in range(4):  # each thread's records in its own order
        mine = [m for m in got if m.startswith(f"t{n}-")]
        assert mine == [f"t{n}-{i}" for i in range(200)]


def test_through_the_queue_handler(events_api: EventsAPI, logger: logging.Logger) -> None:
    q: queue.Queue[Any] = queue.Queue()
    handler = tblog.TinybirdLoggingQueueHandler(
        q, events_api.url, events_api.token, "tests", keep_trace_on_error=True
    )
    logger.addHandler(handler)
    try:
        with tblog.trace("6" * 32):
            logger.info("held")
            logger.info("held too")
        logger.info("plain")
        assert handler.flush(5)
        assert _messages(events_api) == ["plain"]
        with tblog.trace("6" * 32):
            logger.error("err")
        assert handler.flush(5)
        assert _messages(events_api) == ["plain", "held", "held too", "err"]
    finally:
        handler.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("keep_trace_on_error", "yes"),
        ("trace_hold_seconds", 0),
        ("trace_hold_max", 0),
        ("trace_hold_max_events", -1),
        ("trace_hold_max_bytes", 1.5),
    ],
)
def test_bad_trace_options_are_refused_by_name(
    events_api: EventsAPI, option: str, value: Any
) -> None:
    with pytest.raises((TypeError, ValueError), match=option):
        tblog.TinybirdLoggingHandler(events_api.url, events_api.token, "t", **{option: value})


def test_dictconfig_builds_it(events_api: EventsAPI) -> None:
    import logging.config

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "tb": {
                    "class": "tblog.TinybirdLoggingHandler",
                    "api_url": events_api.url,
                    "token": events_api.token,
                    "app_name": "dc",
                    "keep_trace_on_error": True,
                    "trace_hold_seconds": 5,
                    "trace_hold_max": 10,
                }
            },
            "loggers": {"dc.keep": {"handlers": ["tb"], "level": "DEBUG", "propagate": False}},
        }
    )
    log = logging.getLogger("dc.keep")
    handler = log.handlers[0]
    try:
        assert isinstance(handler, tblog.TinybirdLoggingHandler)
        assert handler._hold is not None and handler._hold.hold_max == 10
    finally:
        log.removeHandler(handler)
        handler.close()
