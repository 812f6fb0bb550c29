"""Property tests: any logging call becomes an event tb_logs accepts, or a counted drop.

Hypothesis draws messages (with lone surrogates and broken %-formats), arguments, nested
extras of any type (bytes, NaN, huge ints, sets, objects whose ``__str__`` and ``__repr__``
raise, circular structures, non-string keys) and exceptions.  Each call goes through a real
handler (and the structlog processor, and the queue handler) to the loopback Events API,
which validates every row against ``tb_logs.datasource``.  The caller never sees an
exception and ``handleError`` is never reached.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tblog
from tblog.structlog import TinybirdProcessor
from tests.eventsapi import EventsAPI

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Hostile:
    """An object whose every text form raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


texts = st.text(max_size=40) | st.builds(lambda s: s + "\ud800" + s, st.text(max_size=10))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | st.binary(max_size=20)
    | st.builds(Hostile)
    | st.builds(object)
)
keys = st.text(max_size=8) | st.integers() | st.tuples(st.integers(), st.integers())
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers() | st.text(max_size=5), max_size=3)
    ),
    max_leaves=12,
)
extras = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: "x_" + k), values)
formats = st.sampled_from(["plain", "%s", "%d", "%s and %s", "%(k)s", "100%", "%.2f", "%r"])


@pytest.fixture(scope="module")
def api() -> Iterator[EventsAPI]:
    server = EventsAPI()
    try:
        yield server
    finally:
        server.close()


class Recorder:
    def __init__(self) -> None:
        self.errors: list[logging.LogRecord] = []

    def attach(self, handler: logging.Handler) -> None:
        handler.handleError = self.errors.append  # type: ignore[method-assign,assignment]


def _outcome(api: EventsAPI, stats: dict[str, Any], before_rows: int) -> None:
    arrived = len(api.rows()) - before_rows
    assert arrived + stats["dropped_total"] >= 1
    assert api.quarantine["tb_logs"] == []


@SETTINGS
@given(fmt=formats, args=st.lists(values, max_size=3), extra=extras, raise_=st.booleans())
def test_any_logging_call_is_a_valid_event_or_a_counted_drop(
    api: EventsAPI, fmt: str, args: list[Any], extra: dict[str, Any], raise_: bool
) -> None:
    if extra and len(extra) > 1:  # sometimes make a cycle
        first = next(iter(extra))
        holder: dict[str, Any] = {"again": None}
        holder["again"] = holder
        extra[first] = holder
    handler = tblog.TinybirdLoggingHandler(api.url, api.token, "props", max_event_bytes=4096)
    recorder = Recorder()
    recorder.attach(handler)
    log = logging.getLogger("props.handler")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.DEBUG)
    before = len(api.rows())
    try:
        if raise_:
            try:
                raise ValueError(Hostile())
            except ValueError:
                log.exception(fmt, *args, extra=extra)
        else:
            log.warning(fmt, *args, extra=extra)
        assert handler.flush(5)
        _outcome(api, handler.stats(), before)
        assert recorder.errors == []
    finally:
        handler.close()


@SETTINGS
@given(event=texts, fields=extras)
def test_any_structlog_event_is_a_valid_event_or_a_counted_drop(
    api: EventsAPI, event: str, fields: dict[str, Any]
) -> None:
    proc = TinybirdProcessor(api.url, api.token, "props-structlog", max_event_bytes=4096)
    structlog.configure(processors=[proc, structlog.processors.JSONRenderer(default=repr)])
    before = len(api.rows())
    try:
        with contextlib.suppress(Exception):
            structlog.get_logger().info(event, **fields)
        assert proc.flush(5)
        _outcome(api, proc.stats(), before)
    finally:
        structlog.reset_defaults()
        proc.close()


@SETTINGS
@given(fmt=formats, args=st.lists(values, max_size=2), extra=extras)
def test_the_queue_handler_path_holds_too(
    api: EventsAPI, fmt: str, args: list[Any], extra: dict[str, Any]
) -> None:
    qh = tblog.TinybirdLoggingQueueHandler(queue.Queue(), api.url, api.token, "props-queue")
    recorder = Recorder()
    recorder.attach(qh)
    recorder.attach(qh.handler)
    log = logging.getLogger("props.queue")
    log.propagate = False
    log.handlers = [qh]
    before = len(api.rows())
    try:
        log.error(fmt, *args, extra=extra)
        qh.listener.stop()
        assert qh.flush(5)
        _outcome(api, qh.stats(), before)
        assert recorder.errors == []
    finally:
        qh.close()
