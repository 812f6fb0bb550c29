"""``schema="tinybird-python-sdk"`` rows equal the Tinybird Python SDK's, field by field.

The SDK (``tinybird-python-sdk``, in the ``test`` extra) and tblog both log the same calls,
from the same source lines, through the same logger, to one loopback Events API server
(tests/eventsapi.py); the decoded rows are then compared whole.  The logging clock
(``logging.time``) is frozen for the duration, so ``created``, ``asctime``, ``msecs``,
``relativeCreated`` and the ``%(asctime)s`` of ``formatted_message`` are equal too: no field
is ignored.  The only thing that differs is the datasource each side writes to.

The SDK's handler makes one synchronous request per record and logs to the root logger
while it does; it is attached only to this test's own non-propagating logger, detached
before tblog's is attached, and its queue handler's listener is stopped before the rows
are read.  Importing the SDK runs ``logging.basicConfig(level=INFO)``, which is undone.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

import tblog
from tests.eventsapi import EventsAPI


def _import_sdk() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import tb.logger as sdk_logger
    finally:  # ``import tb`` configures the root logger: put it back as it was
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return sdk_logger


sdk = _import_sdk()

APP = "parity-app"
README_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # the SDK README's


class PaymentDeclinedError(Exception):
    """Defined here: its ``str(type)`` names this module, as the SDK's ``exc_info`` does."""


class _FrozenTime:
    """``logging``'s view of the ``time`` module, with the wall clock stopped."""

    def __init__(self, ns: int) -> None:
        self._ns = ns

    def time(self) -> float:
        return self._ns / 1e9

    def time_ns(self) -> int:
        return self._ns

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def parity_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"parity.{os.urandom(4).hex()}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def log_everything(log: logging.Logger) -> None:
    """The same calls, from the same lines, whichever handler is attached."""
    log.info("hello %s", "world", extra={"k": 1, "obj": {"a": [1, 2]}, "text": "é", "_p": 1})
    try:
        raise PaymentDeclinedError("card 42 declined")
    except PaymentDeclinedError:
        log.error("failed %d times", 3, exc_info=True)
    log.warning("with the stack", stack_info=True)
    log.info("mapping %(a)s", {"a": 1})
    log.debug("no arguments")
    log.error("exc_info outside an except block", exc_info=True)
    try:
        {}["missing"]
    except KeyError:
        log.exception("lookup failed", extra={"user": "ana", "n": None})
    log.critical("%s and %s", "two", ["args"])


def _log_with_each(
    log: logging.Logger,
    handlers: list[logging.Handler],
    clocks: list[_FrozenTime],
    monkeypatch: pytest.MonkeyPatch,
    first: logging.Handler | None = None,
) -> None:
    """``log_everything`` once per handler, from one line: the same call stacks too.

    With ``first``, that handler sees each record before the one compared (it formats the
    record: ``exc_text``, ``message`` and ``asctime`` are set when the Tinybird one runs).
    """
    for handler, clock in zip(handlers, clocks):
        monkeypatch.setattr(logging, "time", clock)
        if first is not None:
            log.addHandler(first)
        log.addHandler(handler)
        try:
            log_everything(log)
        finally:
            log.removeHandler(handler)
            if first is not None:
                log.removeHandler(first)


def _formatter(kind: str) -> logging.Formatter | None:
    return logging.Formatter(README_FORMAT) if kind == "readme" else None


def _compare(sdk_rows: list[dict[str, Any]], tblog_rows: list[dict[str, Any]]) -> None:
    assert len(sdk_rows) == 8, "the SDK lost rows: the comparison would prove nothing"
    assert len(tblog_rows) == len(sdk_rows)
    for theirs, ours in zip(sdk_rows, tblog_rows):
        assert list(ours) == list(theirs), ours.get("message")  # the same fields, in order
        for key in theirs:
            assert ours[key] == theirs[key], (key, theirs.get("message"))


NOW = _FrozenTime(1_764_000_000_123_456_789)


@pytest.mark.parametrize("formatter", ["none", "readme", "after-a-console-handler"])
def test_handler_rows_equal_the_sdk_handlers(
    events_api: EventsAPI,
    parity_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    formatter: str,
) -> None:
    theirs = sdk.TinybirdLoggingHandler(events_api.token, events_api.url, APP, ds_name="sdk_rows")
    ours = tblog.TinybirdLoggingHandler(
        events_api.url, events_api.token, APP, "tblog_rows", schema="tinybird-python-sdk"
    )
    for handler in (theirs, ours):
        handler.setFormatter(_formatter(formatter))
    console = None
    if formatter == "after-a-console-handler":
        console = logging.StreamHandler(io.StringIO())
        console.setFormatter(logging.Formatter(README_FORMAT))
    try:
        _log_with_each(parity_logger, [theirs, ours], [NOW, NOW], monkeypatch, console)
        assert ours.flush(10)
    finally:
        ours.close()
    sdk_rows = events_api.rows("sdk_rows")
    if console is not None:  # the traceback the console handler formatted is in the row
        assert "Traceback" in sdk_rows[1]["exc_info"]["traceback"]
    _compare(sdk_rows, events_api.rows("tblog_rows"))


@pytest.mark.parametrize("formatter", ["none", "readme"])
def test_queue_handler_rows_equal_the_sdk_queue_handlers(
    events_api: EventsAPI,
    parity_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    formatter: str,
) -> None:
    """The SDK's queue path ships ``QueueHandler.prepare``'s record: the formatted text as
    ``message``, no ``args`` and no ``exc_info`` (they are None, in ``extra``)."""
    theirs = sdk.TinybirdLoggingQueueHandler(
        queue.Queue(), events_api.token, events_api.url, APP, ds_name="sdk_rows"
    )
    ours = tblog.TinybirdLoggingQueueHandler(
        queue.Queue(), events_api.url, events_api.token, APP, "tblog_rows",
        schema="tinybird-python-sdk",
    )  # fmt: skip
    for handler in (theirs, ours):
        handler.setFormatter(_formatter(formatter))
    try:
        _log_with_each(parity_logger, [theirs, ours], [NOW, NOW], monkeypatch)
        assert ours.flush(10)
    finally:
        theirs.listener.stop()  # handles what is queued, then joins its thread
        ours.close()
    sdk_rows = events_api.rows("sdk_rows")
    assert all("args" not in row and "exc_info" not in row for row in sdk_rows)
    _compare(sdk_rows, events_api.rows("tblog_rows"))


def test_the_comparison_sees_the_timestamps(
    events_api: EventsAPI, parity_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the clock frozen at two different instants, the rows differ exactly in the
    timestamp fields: the comparison above does look at them."""
    theirs = sdk.TinybirdLoggingHandler(events_api.token, events_api.url, APP, ds_name="sdk_rows")
    ours = tblog.TinybirdLoggingHandler(
        events_api.url, events_api.token, APP, "tblog_rows", schema="tinybird-python-sdk"
    )
    later = _FrozenTime(1_764_000_001_987_654_321)
    try:
        _log_with_each(parity_logger, [theirs, ours], [NOW, later], monkeypatch)
        assert ours.flush(10)
    finally:
        ours.close()
    sdk_rows, tblog_rows = events_api.rows("sdk_rows"), events_api.rows("tblog_rows")
    assert len(sdk_rows) == len(tblog_rows) == 8
    for theirs_row, ours_row in zip(sdk_rows, tblog_rows):
        differ = {k for k in theirs_row if theirs_row[k] != ours_row.get(k)}
        assert differ == {"created", "asctime", "msecs", "relativeCreated"}, differ


# -- Datasource ------------------------------------------------------------------------------

APPENDS: list[Any] = [
    {"id": 1, "name": "ana", "tags": ["a", "b"], "nested": {"x": 1.5, "ok": True}},
    '{"id": 2, "name": "raw text line"}',
    b'{"id": 3, "name": "bytes line"}',
    {"id": 4, "name": "é unicode ✓", "none": None},
]


def test_datasource_rows_equal_the_sdks(events_api: EventsAPI) -> None:
    from tb.datasource import Datasource as SdkDatasource

    with SdkDatasource("sdk_rows", events_api.token, api_url=events_api.url) as theirs:
        for row in APPENDS:
            theirs << row
    with tblog.Datasource("tblog_rows", events_api.token, api_url=events_api.url) as ours:
        for row in APPENDS:
            ours << row
    sdk_rows = events_api.rows("sdk_rows")
    assert len(sdk_rows) == len(APPENDS)
    assert events_api.rows("tblog_rows") == sdk_rows


def test_async_datasource_rows_equal_the_sdks(events_api: EventsAPI) -> None:
    """Compared with the SDK's synchronous ``Datasource``: its ``AsyncDatasource`` (0.3.7)
    delivers nothing on its own (its timer's flush cancels itself; ``close()`` sets the
    shutdown flag its flush then returns on; a full buffer re-enters its own lock)."""
    import asyncio

    from tb.datasource import Datasource as SdkDatasource

    with SdkDatasource("sdk_rows", events_api.token, api_url=events_api.url) as theirs:
        for row in APPENDS:
            theirs << row

    async def main() -> None:
        async with tblog.AsyncDatasource("tblog_rows", events_api.token, events_api.url) as ours:
            for row in APPENDS[:2]:
                await ours << row  # the SDK README's syntax
            for row in APPENDS[2:]:
                await (ours << row)  # and the one the SDK's class needs

    asyncio.run(main())
    sdk_rows = events_api.rows("sdk_rows")
    assert len(sdk_rows) == len(APPENDS)
    assert events_api.rows("tblog_rows") == sdk_rows


def test_datasource_takes_the_sdks_buffer(events_api: EventsAPI) -> None:
    """``Datasource(name, token, api_url, buffer)``: the SDK's ``Buffer`` sets when to send
    (``max_wait_records`` rows or ``max_wait_seconds``), here two rows, without a flush."""
    from tb.datasource import Buffer

    buffer = Buffer(max_wait_seconds=60, max_wait_records=2)
    ds = tblog.Datasource("orders", events_api.token, events_api.url, buffer)
    try:
        assert ds.flush_interval == 60 and ds.batch_size == 2
        ds << {"id": 1} << {"id": 2}
        deadline = time.monotonic() + 10
        while len(events_api.rows("orders")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # bounded polling on the server's rows, not a fixed wait
        assert events_api.rows("orders") == [{"id": 1}, {"id": 2}]
    finally:
        ds.close()
    with pytest.raises(TypeError, match="buffer"):
        tblog.Datasource("orders", events_api.token, events_api.url, buffer=object())
