"""tblog.structlog.TinybirdProcessor with the real structlog, against the loopback Events API."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import tblog
from tblog.structlog import TinybirdProcessor
from tests.eventsapi import EventsAPI


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def make_processor(events_api: EventsAPI) -> Iterator[Any]:
    made: list[TinybirdProcessor] = []

    def make(**options: Any) -> TinybirdProcessor:
        options.setdefault("app_name", "structlog-tests")
        proc = TinybirdProcessor(events_api.url, events_api.token, **options)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.close()


def configure(*processors: Any, out: io.StringIO) -> None:
    structlog.configure(
        processors=list(processors),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def test_event_dict_maps_onto_tb_logs_and_output_is_unchanged(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor(environment="staging", static_fields={"region": "eu"})
    chain = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer(sort_keys=True)
    with_tb, without_tb = io.StringIO(), io.StringIO()

    configure(*chain, renderer, out=without_tb)
    structlog.get_logger("plain").warning("paid", order=7)

    configure(*chain, proc, renderer, out=with_tb)
    structlog.contextvars.bind_contextvars(request="r-1")
    with tblog.trace("a" * 32, "b" * 16), tblog.bound(user="u1"):
        structlog.get_logger("shop").warning("paid", order=7, items=[1, 2])
    assert proc.flush(5)

    [row] = events_api.rows()
    assert events_api.quarantine["tb_logs"] == []
    assert row["message"] == "paid"
    assert row["level"] == "WARNING"
    assert row["level_no"] == logging.WARNING
    assert row["app_name"] == "structlog-tests"
    assert row["environment"] == "staging"
    assert (row["trace_id"], row["span_id"]) == ("a" * 32, "b" * 16)
    assert row["extra"] == {"region": "eu", "user": "u1", "request": "r-1", "order": 7,
                            "items": [1, 2]}  # fmt: skip
    assert row["timestamp"].endswith("Z")
    assert uuid.UUID(row["event_id"]).version == 4
    assert row["process_id"] == os.getpid()
    assert row["thread_name"] == "MainThread"
    # The renderer still gets the event dict untouched: same keys as without the processor.
    shipped = json.loads(with_tb.getvalue())
    plain = json.loads(without_tb.getvalue())
    assert shipped.keys() - {"request", "items"} == plain.keys()
    assert shipped["event"] == "paid"
    assert shipped["order"] == 7


def test_timestamp_of_the_event_is_kept_when_unambiguous(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor()
    out = io.StringIO()
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    configure(stamp, proc, structlog.processors.JSONRenderer(), out=out)
    structlog.get_logger().info("stamped")
    configure(proc, structlog.processors.JSONRenderer(), out=io.StringIO())
    log = structlog.get_logger()
    log.info("aware", timestamp="2025-01-02T03:04:05.123456Z")
    log.info("epoch", timestamp=1_700_000_000.5)
    log.info("naive", timestamp="2001-01-01T00:00:00")
    assert proc.flush(5)
    stamped, aware, epoch, naive = events_api.rows()
    assert stamped["timestamp"] == json.loads(out.getvalue())["timestamp"]
    assert aware["timestamp"] == "2025-01-02T03:04:05.123456Z"
    assert epoch["timestamp"] == "2023-11-14T22:13:20.500000Z"
    assert naive["timestamp"][:4] == stamped["timestamp"][:4]  # local time: the call's moment
    assert naive["extra"] == {}


def test_exception_from_exc_info_and_the_callers_dict_is_not_mutated(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor()
    seen: list[dict[str, Any]] = []

    def keep(_: Any, __: str, event_dict: Any) -> Any:
        seen.append(dict(event_dict))
        return event_dict

    configure(structlog.processors.add_log_level, proc, keep,
              structlog.processors.format_exc_info, structlog.processors.JSONRenderer(),
              out=io.StringIO())  # fmt: skip
    log = structlog.get_logger()
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed", step=3)
    assert proc.flush(5)
    [row] = events_api.rows()
    assert row["level"] == "ERROR"
    assert row["extra"] == {"step": 3}
    exc = row["exception"]
    assert exc["type"] == "ValueError"
    assert exc["message"] == "bad value"
    assert exc["stacktrace"].startswith("Traceback")
    assert 'raise ValueError("bad value")' in exc["stacktrace"]
    assert seen[0]["exc_info"] is True  # the next processor still sees exc_info


def test_exception_already_rendered_by_format_exc_info(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor()
    configure(structlog.processors.add_log_level, structlog.processors.format_exc_info, proc,
              structlog.processors.JSONRenderer(), out=io.StringIO())  # fmt: skip
    try:
        {}["missing"]
    except KeyError:
        structlog.get_logger().error("lookup", exc_info=True)
    assert proc.flush(5)
    [row] = events_api.rows()
    assert row["exception"]["type"] == "KeyError"
    assert row["exception"]["message"] == "'missing'"
    assert "Traceback" in row["exception"]["stacktrace"]
    assert "exception" not in row["extra"]


def test_processor_formatter_for_foreign_and_structlog_records(
    events_api: EventsAPI, make_processor: Any, logger: logging.Logger
) -> None:
    proc = make_processor()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level],
            processors=[
                proc,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger.addHandler(handler)
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    with tblog.trace("c" * 32):
        logger.warning("foreign %s", "record", extra={"order": 1})
        structlog.get_logger(logger.name).info("from structlog", cart=2)
    assert proc.flush(5)
    foreign, native = events_api.rows()
    assert foreign["message"] == "foreign record"
    assert foreign["level"] == "WARNING"
    assert foreign["logger"] == logger.name
    assert foreign["func_name"] == "test_processor_formatter_for_foreign_and_structlog_records"
    assert foreign["lineno"] > 0
    assert foreign["extra"] == {"order": 1}
    assert foreign["trace_id"] == "c" * 32
    assert native["message"] == "from structlog"
    assert native["logger"] == logger.name
    assert native["extra"] == {"cart": 2}
    assert native["trace_id"] == "c" * 32
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["foreign record", "from structlog"]


def test_placed_after_the_renderer_is_a_clear_error(make_processor: Any) -> None:
    proc = make_processor()
    configure(structlog.processors.JSONRenderer(), proc, out=io.StringIO())
    with pytest.raises(TypeError, match="before the renderer"):
        structlog.get_logger().info("x")


def test_placed_after_render_to_log_kwargs_is_detected_from_the_config(
    make_processor: Any,
) -> None:
    proc = make_processor()
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_kwargs, proc],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    with pytest.raises(TypeError, match="render_to_log_kwargs"):
        structlog.get_logger().info("x")


def test_level_filter_close_and_stats(events_api: EventsAPI, make_processor: Any) -> None:
    proc = make_processor(level="info")
    configure(structlog.processors.add_log_level, proc, structlog.processors.JSONRenderer(),
              out=io.StringIO())  # fmt: skip
    log = structlog.get_logger()
    log.debug("hidden")
    log.info("shown")
    proc.close()
    log.info("after close")
    assert [r["message"] for r in events_api.rows()] == ["shown"]
    stats = proc.stats()
    assert stats["filtered"] == 1
    assert stats["sent"] == 1
    assert stats["dropped"] == {"closed": 1}


def test_token_never_in_repr(events_api: EventsAPI) -> None:
    proc = TinybirdProcessor(events_api.url, events_api.token, "app")
    try:
        assert events_api.token not in repr(proc)
        assert events_api.token not in json.dumps(proc.stats())
    finally:
        proc.close()


def test_tblog_and_http_stack_records_are_not_shipped(
    events_api: EventsAPI, make_processor: Any
) -> None:
    proc = make_processor()
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[proc, structlog.processors.JSONRenderer()]
    )
    for name in ("urllib3.connectionpool", "tblog", "requests"):
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, "internal", None, None)
        formatter.format(record)
    record = logging.LogRecord("app", logging.WARNING, __file__, 1, "mine", None, None)
    formatter.format(record)
    assert proc.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["mine"]
    assert proc.stats()["ignored"] == 3


def test_a_broken_event_dict_is_counted_not_raised(make_processor: Any) -> None:
    from collections.abc import MutableMapping

    class Broken(MutableMapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise KeyError(key)

        def __setitem__(self, key: str, value: Any) -> None:
            pass

        def __delitem__(self, key: str) -> None:
            pass

        def __iter__(self) -> Any:
            raise RuntimeError("cannot iterate")

        def __len__(self) -> int:
            return 1

    proc = make_processor()
    broken = Broken()
    assert proc(None, "info", broken) is broken
    assert proc.stats()["dropped"] == {"snapshot_failed": 1}


def test_callsite_parameters_fill_their_columns(events_api: EventsAPI, make_processor: Any) -> None:
    proc = make_processor()
    # structlog's QUAL_NAME reads code.co_qualname, which Python 3.10 does not have: every
    # other call-site parameter there, all of them on 3.11+.
    params = [
        p for p in structlog.processors.CallsiteParameter
        if sys.version_info >= (3, 11) or p.value != "qual_name"
    ]  # fmt: skip
    configure(
        structlog.processors.CallsiteParameterAdder(params),
        proc,
        structlog.processors.JSONRenderer(),
        out=io.StringIO(),
    )
    structlog.get_logger().info("where")
    assert proc.flush(5)
    [row] = events_api.rows()
    assert row["func_name"] == "test_callsite_parameters_fill_their_columns"
    assert row["module"] == "test_structlog"
    assert row["pathname"] == __file__
    assert row["lineno"] > 0
    assert row["thread_name"] == "MainThread"
    assert set(row["extra"]) <= {"qual_module", "qual_name"}  # no column for these


def test_one_processor_formatter_shared_by_two_handlers_ships_each_record_once(
    events_api: EventsAPI, make_processor: Any, logger: logging.Logger, capfd: Any
) -> None:
    proc = make_processor(warn_stderr=True)
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            proc,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ]
    )
    outs = [io.StringIO(), io.StringIO()]
    for out in outs:
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)  # one formatter, two handlers (console and file)
        logger.addHandler(handler)
    for i in range(3):
        logger.warning("twice formatted %d", i)
    logger.warning("twice formatted %d", 0)  # the same text again is a new record: shipped
    assert proc.flush(5)
    rows = events_api.rows()
    assert [r["message"] for r in rows] == [f"twice formatted {i}" for i in (0, 1, 2, 0)]
    assert len({r["event_id"] for r in rows}) == 4
    assert all(len(out.getvalue().splitlines()) == 4 for out in outs)  # both still print
    assert proc.stats()["duplicates"] == 4
    err = capfd.readouterr().err
    assert err.count("reached TinybirdProcessor twice") == 1


def test_placed_after_remove_processors_meta_is_told_once(
    make_processor: Any, logger: logging.Logger, capfd: Any
) -> None:
    proc = make_processor(warn_stderr=True)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                proc,
                structlog.processors.JSONRenderer(),
            ]
        )
    )
    logger.addHandler(handler)
    logger.warning("first")
    logger.warning("second")
    err = capfd.readouterr().err
    assert err.count("comes after remove_processors_meta") == 1


def test_records_that_share_a_time_are_not_taken_for_repeats(
    events_api: EventsAPI, make_processor: Any, logger: logging.Logger
) -> None:
    # A coarse clock (Windows before 3.13) gives records of a tight loop one time: only the
    # copies of one record are repeats.
    proc = make_processor()
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[proc, structlog.processors.JSONRenderer()]
    )
    created = 1_700_000_000.25
    for i in range(3):
        record = logging.LogRecord(logger.name, logging.INFO, __file__, 7, "same %d", (i,), None)
        record.created = float(str(created))  # an equal value, a float object of its own
        record.relativeCreated, record.msecs = 5.0, 250.0
        formatter.format(record)
        formatter.format(record)  # a second handler
    assert proc.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["same 0", "same 1", "same 2"]
    assert proc.stats()["duplicates"] == 3
