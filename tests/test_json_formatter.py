"""python-json-logger formatters on TinybirdLoggingHandler, and the TinybirdJsonFormatter preset."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from typing import Any

import pytest
from pythonjsonlogger.json import JsonFormatter

import tblog
from tests.eventsapi import EventsAPI, load_schema, validate


def test_json_formatter_shapes_the_shipped_event(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(ds_name="json_logs")
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "severity", "name": "logger_name"},
            static_fields={"service": "checkout"},
        )
    )
    logger.addHandler(handler)
    logger.warning("paid %d", 3, extra={"order": 42})
    assert handler.flush(5)
    [row] = events_api.rows("json_logs")
    assert row == {
        "severity": "WARNING",
        "logger_name": logger.name,
        "message": "paid 3",
        "service": "checkout",
        "order": 42,
    }


def test_json_formatter_reserved_attrs_and_exception(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(ds_name="json_logs")
    # Reserve everything but funcName and lineno: those two come out as extra fields.
    reserved = [a for a in tblog._event.snapshot.STANDARD_ATTRS if a not in ("funcName", "lineno")]
    handler.setFormatter(JsonFormatter("%(message)s", reserved_attrs=reserved))
    logger.addHandler(handler)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    assert handler.flush(5)
    [row] = events_api.rows("json_logs")
    assert row["message"] == "failed"
    assert row["funcName"] == "test_json_formatter_reserved_attrs_and_exception"
    assert isinstance(row["lineno"], int)
    assert "levelname" not in row
    assert row["exc_info"].startswith("Traceback")
    assert row["exc_info"].endswith("RuntimeError: boom")


def test_preset_ships_tb_logs_rows(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    handler.setFormatter(
        tblog.TinybirdJsonFormatter("preset-app", "prod", static_fields={"region": "eu"})
    )
    logger.addHandler(handler)

    def worker() -> None:
        with tblog.trace("1" * 32, "2" * 16):
            logger.info("in thread", extra={"n": 1})

    with tblog.trace("a" * 32, "b" * 16), tblog.bound(user="u1"):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        try:
            raise KeyError("k")
        except KeyError:
            logger.error("lookup failed", exc_info=True, extra={"region": "us"})
    assert handler.flush(5)

    assert events_api.quarantine["tb_logs"] == []
    in_thread, failed = events_api.rows()
    assert (in_thread["trace_id"], in_thread["span_id"]) == ("1" * 32, "2" * 16)
    assert in_thread["extra"] == {"region": "eu", "n": 1}
    assert in_thread["thread_name"] != failed["thread_name"]
    assert (failed["trace_id"], failed["span_id"]) == ("a" * 32, "b" * 16)
    assert failed["extra"] == {"region": "us", "user": "u1"}
    assert failed["app_name"] == "preset-app"
    assert failed["environment"] == "prod"
    assert failed["level"] == "ERROR"
    assert failed["level_no"] == logging.ERROR
    assert failed["logger"] == logger.name
    assert failed["func_name"] == "test_preset_ships_tb_logs_rows"
    assert uuid.UUID(failed["event_id"]).version == 4
    assert failed["exception"]["type"] == "KeyError"
    assert failed["exception"]["message"] == "'k'"
    assert failed["exception"]["stacktrace"].startswith("Traceback")


def test_preset_on_a_stream_handler_writes_valid_tb_logs_lines(logger: logging.Logger) -> None:
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(tblog.TinybirdJsonFormatter("stdout-app"))
    logger.addHandler(stream)
    with tblog.trace("f" * 32):
        logger.info({"event": "dict message", "items": [1, 2]})
        logger.warning("with stack", stack_info=True, extra={"obj": object()})
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    columns = load_schema("tb_logs")
    assert columns is not None
    names = {c.path[0] for c in columns} - {"truncated", "formatted_message"}
    assert names - {"exception", "stack_info"} <= first.keys()
    assert validate(columns, first) is None
    assert validate(columns, second) is None
    assert first["extra"] == {"event": "dict message", "items": [1, 2]}
    assert first["trace_id"] == "f" * 32
    assert second["stack_info"].startswith("Stack (most recent call last)")
    assert second["extra"]["obj"].startswith("<object object")


def test_preset_rejects_bad_static_fields() -> None:
    with pytest.raises(TypeError, match="static_fields"):
        tblog.TinybirdJsonFormatter(static_fields=["not", "a", "mapping"])  # type: ignore[arg-type]


def test_preset_through_the_queue_handler_keeps_the_callers_trace(
    events_api: EventsAPI, logger: logging.Logger
) -> None:
    import queue

    qh = tblog.TinybirdLoggingQueueHandler(
        queue.Queue(), events_api.url, events_api.token, "queued"
    )
    try:
        qh.setFormatter(tblog.TinybirdJsonFormatter("queued"))
        logger.addHandler(qh)
        with tblog.trace("9" * 32, "8" * 16):
            logger.warning("through the listener thread", extra={"k": "v"})
        qh.listener.stop()
        assert qh.flush(5)
    finally:
        qh.close()
    [row] = events_api.rows()
    assert (row["trace_id"], row["span_id"]) == ("9" * 32, "8" * 16)
    assert row["extra"] == {"k": "v"}
    assert row["app_name"] == "queued"
    assert events_api.quarantine["tb_logs"] == []
