"""Issue 18 follow-up: no producer accepts a new option and then ignores it.

* structlog's ``TinybirdProcessor`` honours ``keep_trace_on_error``/``trace_hold_*`` (the
  handler's ``TraceKeep``) and ``client_reports_interval`` (``reports.watch``), as the handler.
* The producers of plain rows (``Datasource``, ``AsyncDatasource``, ``Tracker``,
  ``TraceRecorder``, ``TinybirdLitellmHandler``) have no logger, level or trace: they refuse
  sampling, dedup, trace keep and drop-report options with a ``TypeError`` naming them.
* ``schema="tinybird-python-sdk"`` rows carry a sampled record's rate in ``extra``.
* The end of a process without ``close()``: a normal exit and a ``multiprocessing`` child
  ship the dedup summaries and the final drop report, and discard and count held traces
  (for the structlog processor; the handler's other exit paths are in test_dedup.py,
  test_client_reports.py).

Against the loopback Events API; hold clocks are test clocks, never waited on.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import tblog
from tblog._delivery import reports
from tblog._delivery.reports import DATASOURCE
from tblog.structlog import TinybirdProcessor
from tests.eventsapi import EventsAPI
from tests.test_structlog import _structlog_defaults  # noqa: F401 - autouse, here too

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_processor(events_api: EventsAPI) -> Iterator[Callable[..., TinybirdProcessor]]:
    made: list[TinybirdProcessor] = []

    def make(**options: Any) -> TinybirdProcessor:
        options.setdefault("app_name", "opts-structlog")
        options.setdefault("warn_stderr", False)
        proc = TinybirdProcessor(events_api.url, events_api.token, **options)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.close()


def _logger(proc: TinybirdProcessor) -> Any:
    structlog.configure(
        processors=[structlog.processors.add_log_level, proc, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(io.StringIO()),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger()


def _messages(api: EventsAPI, ds: str = "tb_logs") -> list[str]:
    return [r["message"] for r in api.rows(ds)]


def _reports(api: EventsAPI) -> list[tuple[str, str, str, int]]:
    assert api.quarantine[DATASOURCE] == []
    return [(r["app_name"], r["datasource"], r["reason"], r["count"]) for r in api.rows(DATASOURCE)]


# -- 1. the structlog processor honours trace keep and drop reports ------------------------


def test_structlog_holds_a_trace_until_it_errors_and_discards_one_that_never_does(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor(keep_trace_on_error=True)
    log = _logger(proc)
    with tblog.trace("a" * 32):
        log.debug("d1")
        log.info("i1")
        log.warning("w1")  # a warning ships as usual
        log.error("boom")  # releases d1, i1 first
        log.info("after")  # the trace is kept: ships at once
    with tblog.trace("b" * 32):
        log.info("never errors")
    log.info("no trace")
    assert proc.flush(10)
    assert _messages(events_api) == ["w1", "d1", "i1", "boom", "after", "no trace"]
    assert {r["trace_id"] for r in events_api.rows()[1:5]} == {"a" * 32}
    stats = proc.stats()
    assert stats["trace_held"] == 1
    proc.close()
    stats = proc.stats()
    assert stats["trace_held"] == 0
    assert stats["dropped"] == {"trace_discarded": 1}
    # close() ships the final drop report, as the handler's does
    assert _reports(events_api) == [("opts-structlog", "tb_logs", "trace_discarded", 1)]


def test_structlog_hold_bounds_and_expiry_are_honoured(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor(keep_trace_on_error=True, trace_hold_max=2, trace_hold_seconds=5.0)
    assert proc._hold is not None
    clock = Clock()
    proc._hold._clock = clock
    log = _logger(proc)
    with tblog.trace("c" * 32):
        for i in range(3):
            log.info(f"c{i}")  # the per-trace cap: c0 goes
        log.error("c failed")
    with tblog.trace("d" * 32):
        log.info("d waits")
    clock.now += 6.0  # past trace_hold_seconds: flush() discards it
    assert proc.flush(10)
    assert _messages(events_api) == ["c1", "c2", "c failed"]
    stats = proc.stats()
    assert stats["dropped"] == {"trace_discarded": 2}
    assert stats["trace_held"] == 0


def test_structlog_options_of_the_hold_are_checked_by_name(events_api: EventsAPI) -> None:
    with pytest.raises(ValueError, match="trace_hold_max"):
        TinybirdProcessor(events_api.url, events_api.token, "t", trace_hold_max=0)
    with pytest.raises(TypeError, match="keep_trace_on_error"):
        TinybirdProcessor(events_api.url, events_api.token, "t", keep_trace_on_error="yes")


def test_structlog_drops_are_reported_periodically(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor(client_reports_interval=30.0)
    assert reports.reporter.watching(proc._channel)
    log = _logger(proc)
    events_api.fail_next(1, status=400)
    log.info("refused")
    proc.flush(10)
    assert proc.stats()["dropped"] == {"http_400": 1}
    reports.reporter.tick(time.monotonic() + 10_000)  # the report is due
    out = reports.reporter.out_channel(proc._channel)
    assert out is not None
    assert out.flush(10)
    assert _reports(events_api) == [("opts-structlog", "tb_logs", "http_400", 1)]


def test_structlog_reports_off_with_interval_zero(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor(client_reports_interval=0, keep_trace_on_error=True)
    assert not reports.reporter.watching(proc._channel)
    log = _logger(proc)
    with tblog.trace("e" * 32):
        log.info("discarded at close")
    proc.close()
    assert proc.stats()["dropped"] == {"trace_discarded": 1}
    assert events_api.rows(DATASOURCE) == []


def test_structlog_counts_add_up_with_every_option(
    events_api: EventsAPI, make_processor: Any
) -> None:
    """logged + summaries == sent + sampled + collapsed + dropped_total + queue_depth +
    trace_held (test_counts_add_up.py's invariant, for the processor)."""
    proc = make_processor(
        sample={"": {"DEBUG": 0.5}}, dedup_limit=2, dedup_window=3600,
        keep_trace_on_error=True, trace_hold_max=2,
    )  # fmt: skip
    assert proc._gate is not None
    proc._gate._rand = random.Random(7).random
    log = _logger(proc)
    events_api.fail_next(1, status=400)
    logged = 0
    for i in range(60):
        kind = i % 4
        if kind == 0:
            log.debug(f"sampled {i}")
        elif kind == 1:
            log.warning("the same warning")
        elif kind == 2:
            with tblog.trace(f"{i // 12 + 1:032x}"):
                log.info(f"in a trace {i}")
                if i % 24 == 2:
                    log.error(f"the trace failed {i}")
                    logged += 1
        else:
            log.info(f"plain {i}")
        logged += 1
    proc.flush(10)
    s = proc.stats()
    assert s["sampled"] and s["collapsed"] and s["summaries"] and s["trace_held"]
    assert set(s["dropped"]) == {"http_400", "trace_discarded"}
    assert logged + s["summaries"] == (
        s["sent"] + s["sampled"] + s["collapsed"] + s["dropped_total"] + s["queue_depth"]
        + s["trace_held"]
    )  # fmt: skip
    assert len(events_api.rows()) == s["sent"]


# -- 1. the producers of plain rows refuse them ---------------------------------------------

_LOG_ONLY: dict[str, Any] = {
    "keep_trace_on_error": True,
    "trace_hold_seconds": 5.0,
    "trace_hold_max": 10,
    "trace_hold_max_events": 100,
    "trace_hold_max_bytes": 10_000,
    "client_reports_interval": 30.0,
    "sample": {"": {"DEBUG": 0.5}},
    "dedup_limit": 3,
    "dedup_window": 10.0,
    "static_fields": {"region": "eu"},
}


def _datasource(api: EventsAPI, **options: Any) -> Any:
    return tblog.Datasource("rows", api.token, api.url, **options)


def _async_datasource(api: EventsAPI, **options: Any) -> Any:
    return tblog.AsyncDatasource("rows", api.token, api.url, **options)


def _tracker(api: EventsAPI, **options: Any) -> Any:
    from tblog.events import Tracker

    return Tracker(api.url, api.token, **options)


def _trace_recorder(api: EventsAPI, **options: Any) -> Any:
    from tblog.llm import TraceRecorder

    return TraceRecorder({"t1": api.token}, api_url=api.url, **options)


def _litellm(api: EventsAPI, **options: Any) -> Any:
    pytest.importorskip("litellm")
    from tblog.litellm import TinybirdLitellmHandler

    return TinybirdLitellmHandler(api.url, api.token, **options)


_ROW_PRODUCERS = {
    "Datasource": _datasource,
    "AsyncDatasource": _async_datasource,
    "Tracker": _tracker,
    "TraceRecorder": _trace_recorder,
    "TinybirdLitellmHandler": _litellm,
}


@pytest.mark.parametrize("producer", list(_ROW_PRODUCERS))
@pytest.mark.parametrize("option", list(_LOG_ONLY))
def test_row_producers_refuse_log_only_options_by_name(
    events_api: EventsAPI, producer: str, option: str
) -> None:
    make = _ROW_PRODUCERS[producer]
    with pytest.raises(TypeError, match=rf"'{option}'") as raised:
        make(events_api, **{option: _LOG_ONLY[option]})
    assert "stats()" in str(raised.value)  # says where this producer's drops are counted
    assert events_api.token not in str(raised.value)


@pytest.mark.parametrize("producer", list(_ROW_PRODUCERS))
def test_row_producers_still_take_their_delivery_options(
    events_api: EventsAPI, producer: str
) -> None:
    made = _ROW_PRODUCERS[producer](events_api, max_retries=2, redact=False, gzip=False)
    try:
        assert made is not None
    finally:
        closing = made.close()
        if hasattr(closing, "__await__"):  # AsyncDatasource.close() is a coroutine
            import asyncio

            asyncio.run(closing)


# -- 2. the SDK's row carries the sampling rate in extra ------------------------------------


def test_sdk_schema_rows_carry_the_sample_rate_in_extra(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(
        schema="tinybird-python-sdk", ds_name="sdk_logs", sample={"": {"INFO": 0.5}},
        dedup_limit=1, dedup_window=3600,
    )  # fmt: skip
    assert handler._gate is not None
    handler._gate._rand = lambda: 0.0  # every sampled record is kept
    logger.addHandler(handler)
    logger.info("sampled %s", 1)
    logger.info("sampled %s", 2)  # same template: collapsed into the summary
    logger.warning("not sampled")
    assert handler.flush(10)
    rows = events_api.rows("sdk_logs")
    by_message = {r["message"]: r for r in rows}
    assert set(by_message) == {"sampled 1", "not sampled", "repeated 1 time: sampled %s"}
    assert by_message["sampled 1"]["extra"]["sample_rate"] == 0.5
    summary = by_message["repeated 1 time: sampled %s"]["extra"]
    assert (summary["sample_rate"], summary["repeat_count"]) == (0.5, 1)
    assert "sample_rate" not in by_message["not sampled"].get("extra", {})
    for row in rows:  # the SDK's layout: no column of tblog's own
        assert "sample_rate" not in row


def test_sdk_schema_through_the_queue_handler_carries_it_too(
    events_api: EventsAPI, logger: logging.Logger
) -> None:
    import queue

    q: queue.Queue[Any] = queue.Queue()
    handler = tblog.TinybirdLoggingQueueHandler(
        q, events_api.url, events_api.token, "tests", "sdk_logs",
        schema="tinybird-python-sdk", sample={"": {"DEBUG": 0.25}},
    )  # fmt: skip
    try:
        assert handler.handler._gate is not None
        handler.handler._gate._rand = lambda: 0.0
        logger.addHandler(handler)
        logger.debug("queued")
        assert handler.flush(10)
        [row] = events_api.rows("sdk_logs")
        assert row["extra"]["sample_rate"] == 0.25
    finally:
        logger.removeHandler(handler)
        handler.close()


# -- 3. the end of a process without close() ------------------------------------------------

_STRUCTLOG_CHILD = """
import logging, sys
import structlog
import tblog
from tblog.structlog import TinybirdProcessor


def structlog_part(url, token, app):
    proc = TinybirdProcessor(
        url, token, app, dedup_limit=1, dedup_window=3600, keep_trace_on_error=True,
        flush_interval=3600, warn_stderr=False,
    )
    structlog.configure(
        processors=[structlog.processors.add_log_level, proc,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    slog = structlog.get_logger()
    for _ in range(3):
        slog.warning("structlog flood")
    with tblog.trace("f" * 32):
        slog.info("held, never errors")
        slog.info("held too")
    return proc


def handler_part(url, token, app):
    handler = tblog.TinybirdLoggingHandler(
        url, token, app, dedup_limit=1, dedup_window=3600, keep_trace_on_error=True,
        flush_interval=3600, warn_stderr=False,
    )
    log = logging.getLogger("exit.handler")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for _ in range(4):
        log.warning("handler flood")
    with tblog.trace("9" * 32):
        log.info("handler held")
    return handler


def queue_part(url, token, app):
    import queue
    handler = tblog.TinybirdLoggingQueueHandler(
        queue.Queue(), url, token, app, dedup_limit=1, dedup_window=3600,
        flush_interval=3600, warn_stderr=False,
    )
    log = logging.getLogger("exit.queue")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for _ in range(3):
        log.warning("queue flood")
    return handler
"""

_EXIT_CHILD = (
    _STRUCTLOG_CHILD
    + """
url, token = sys.argv[1], sys.argv[2]
kept = [
    structlog_part(url, token, "exit-structlog"),
    handler_part(url, token, "exit-handler"),
    queue_part(url, token, "exit-queue"),
]
# no flush(), no close(): the normal end of the interpreter ships what is left
"""
)


def _expect_exit_rows(api: EventsAPI, suffix: str) -> None:
    assert Counter(_messages(api)) == Counter(
        {
            "structlog flood": 1,
            "repeated 2 times: structlog flood": 1,
            "handler flood": 1,
            "repeated 3 times: handler flood": 1,
            "queue flood": 1,
            "repeated 2 times: queue flood": 1,
        }
    )
    assert sorted(_reports(api)) == [
        (f"exit-handler{suffix}", "tb_logs", "trace_discarded", 1),
        (f"exit-structlog{suffix}", "tb_logs", "trace_discarded", 2),
    ]


@pytest.mark.slow
def test_a_normal_exit_ships_summaries_and_reports_discarded_traces(
    events_api: EventsAPI,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_CHILD, events_api.url, events_api.token],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _expect_exit_rows(events_api, "")


def _mp_child(url: str, token: str) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_STRUCTLOG_CHILD, "<child>", "exec"), namespace)
    namespace["kept"] = [
        namespace["structlog_part"](url, token, "exit-structlog-mp"),
        namespace["handler_part"](url, token, "exit-handler-mp"),
        namespace["queue_part"](url, token, "exit-queue-mp"),
    ]
    # the child ends with os._exit after multiprocessing's bootstrap: only tblog's exit pass


@pytest.mark.slow
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="POSIX")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_multiprocessing_child_ships_summaries_and_reports_discarded_traces(
    events_api: EventsAPI,
) -> None:
    child = multiprocessing.get_context("fork").Process(
        target=_mp_child, args=(events_api.url, events_api.token)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    _expect_exit_rows(events_api, "-mp")
