"""python-json-logger formatters on TinybirdLoggingHandler, and the TinybirdJsonFormatter preset."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import uuid
from typing import Any

import pytest
from pythonjsonlogger.json import JsonFormatter

import tblog
from tblog._event import tb_logs
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
        tblog.TinybirdJsonFormatter(
            app_name="preset-app", environment="prod", static_fields={"region": "eu"}
        )
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
    stream.setFormatter(tblog.TinybirdJsonFormatter(app_name="stdout-app"))
    logger.addHandler(stream)
    with tblog.trace("f" * 32):
        logger.info({"event": "dict message", "items": [1, 2]})
        logger.warning("with stack", stack_info=True, extra={"obj": object()})
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    columns = load_schema("tb_logs")
    assert columns is not None
    names = {c.path[0] for c in columns} - set(tb_logs.OPTIONAL_FIELDS)
    assert names <= first.keys()
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
        qh.setFormatter(tblog.TinybirdJsonFormatter(app_name="queued"))
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


# -- issue 17: JsonFormatter's constructor and options -------------------------------------


def _lines(fmt: logging.Formatter, emit: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(fmt)
    log = logging.getLogger(f"tests.json_formatter.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(stream)
    emit(log)
    log.removeHandler(stream)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_positional_arguments_are_json_formatters() -> None:
    fmt = tblog.TinybirdJsonFormatter(
        "%(asctime)s %(levelname)s %(message)s", "%H:%M", app_name="pos"
    )
    [row] = _lines(fmt, lambda log: log.info("hi"))
    assert row["app_name"] == "pos"
    assert row["message"] == "hi"
    # fields named in fmt go into extra, as JsonFormatter would print them at the top level
    assert row["extra"]["levelname"] == "INFO"
    assert len(row["extra"]["asctime"]) == 5  # datefmt applied
    assert "message" not in row["extra"]  # the column already holds it
    [listed] = _lines(
        tblog.TinybirdJsonFormatter(["levelname", "filename"]), lambda log: log.info("x")
    )
    assert listed["extra"] == {"levelname": "INFO", "filename": "test_json_formatter.py"}
    [braced] = _lines(tblog.TinybirdJsonFormatter("{lineno}", style="{"), lambda log: log.info("x"))
    assert braced["extra"] == {"lineno": braced["lineno"]}


def test_a_positional_app_name_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="app_name="):
        fmt = tblog.TinybirdJsonFormatter("legacy-app", "staging", static_fields={"a": 1})
    [row] = _lines(fmt, lambda log: log.info("x"))
    assert (row["app_name"], row["environment"]) == ("legacy-app", "staging")
    assert row["extra"] == {"a": 1}


def test_json_formatter_options_are_honoured() -> None:
    def default(obj: Any) -> Any:
        return {"complex": [obj.real, obj.imag]} if isinstance(obj, complex) else str(obj)

    fmt = tblog.TinybirdJsonFormatter(
        app_name="opts",
        json_default=default,
        json_ensure_ascii=False,
        defaults={"d": 1, "e": 2},
        rename_fields={"missing": "kept", "e": "E"},
        rename_fields_keep_missing=True,
        timestamp="ts",
        exc_info_as_array=True,
        stack_info_as_array=True,
    )

    def emit(log: logging.Logger) -> None:
        log.info("Привет", extra={"z": complex(1, 2), "d": 5}, stack_info=True)
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")

    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(fmt)
    log = logging.getLogger("tests.json_formatter.options")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(stream)
    try:
        emit(log)
    finally:
        log.removeHandler(stream)
    text = out.getvalue()
    assert "Привет" in text  # json_ensure_ascii=False
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["extra"]["z"] == {"complex": [1.0, 2.0]}  # json_default
    assert first["extra"]["d"] == 5 and first["extra"]["E"] == 2  # defaults, renamed
    assert first["extra"]["kept"] is None  # rename_fields_keep_missing
    assert first["extra"]["ts"].startswith("20")  # timestamp
    assert isinstance(first["stack_info"], list)  # stack_info_as_array
    assert isinstance(second["exception"]["stacktrace"], list)  # exc_info_as_array
    assert second["exception"]["stacktrace"][-1] == "ValueError: bad"


def test_ensure_ascii_and_separators_default_to_json_formatters() -> None:
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(tblog.TinybirdJsonFormatter(app_name="ascii"))
    log = logging.getLogger("tests.json_formatter.ascii")
    log.propagate = False
    log.addHandler(stream)
    try:
        log.warning("Привет")
    finally:
        log.removeHandler(stream)
    assert '"message": "\\u041f\\u0440' in out.getvalue()


def test_dictconfig_class_and_fileconfig_class(tmp_path: Any) -> None:
    import logging.config

    stream = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "j": {
                    "class": "tblog.TinybirdJsonFormatter",
                    "format": "%(levelname)s %(message)s",
                    "datefmt": "%H",
                }
            },
            "handlers": {
                "s": {"class": "logging.StreamHandler", "formatter": "j", "stream": stream}
            },
            "loggers": {
                "tests.dictconfig": {"handlers": ["s"], "level": "INFO", "propagate": False}
            },
        }
    )
    logging.getLogger("tests.dictconfig").info("from dictConfig")
    row = json.loads(stream.getvalue())
    assert row["message"] == "from dictConfig"
    assert row["extra"] == {"levelname": "INFO"}
    assert row["level"] == "INFO"
    # the "()" form takes every keyword, tblog's too
    stream = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "j": {
                    "()": "tblog.TinybirdJsonFormatter",
                    "app_name": "dict-app",
                    "json_ensure_ascii": False,
                    "static_fields": {"team": "a"},
                }
            },
            "handlers": {
                "s": {"class": "logging.StreamHandler", "formatter": "j", "stream": stream}
            },
            "loggers": {
                "tests.dictconfig": {"handlers": ["s"], "level": "INFO", "propagate": False}
            },
        }
    )
    logging.getLogger("tests.dictconfig").info("Grüße")
    assert "Grüße" in stream.getvalue()
    row = json.loads(stream.getvalue())
    assert (row["app_name"], row["extra"]) == ("dict-app", {"team": "a"})
    logging.getLogger("tests.dictconfig").handlers.clear()

    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root,f\n[handlers]\nkeys=s\n[formatters]\nkeys=j\n"
        "[logger_root]\nhandlers=\n"
        "[logger_f]\nqualname=tests.fileconfig\nhandlers=s\nlevel=INFO\npropagate=0\n"
        "[handler_s]\nclass=FileHandler\nformatter=j\n"
        f"args=({str(tmp_path / 'out.log')!r},)\n"
        "[formatter_j]\nclass=tblog.TinybirdJsonFormatter\nformat=%%(name)s %%(message)s\n",
        encoding="utf-8",
    )
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    try:
        logging.config.fileConfig(ini, disable_existing_loggers=False)
    finally:  # fileConfig empties the root logger: give it back what it had
        logging.root.handlers[:] = root_handlers
        logging.root.setLevel(root_level)
    flog = logging.getLogger("tests.fileconfig")
    flog.info("from fileConfig")
    for h in flog.handlers:
        h.close()
    row = json.loads((tmp_path / "out.log").read_text(encoding="utf-8"))
    assert row["message"] == "from fileConfig"
    assert row["extra"] == {"name": "tests.fileconfig"}
    flog.handlers.clear()


def test_a_non_string_extra_key_is_shipped_not_lost(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    handler.setFormatter(tblog.TinybirdJsonFormatter(app_name="keys"))
    logger.addHandler(handler)
    logger.info("int key", extra={5: "nine", "s": 1})  # type: ignore[dict-item]
    logger.info({7: "seven", (1, 2): "tuple", "t": "x"})
    assert handler.flush(5)
    first, second = events_api.rows()
    assert first["extra"] == {"5": "nine", "s": 1}
    assert second["extra"] == {"7": "seven", "(1, 2)": "tuple", "t": "x"}
    assert events_api.quarantine["tb_logs"] == []
    assert not any(handler.stats()["dropped"].values())


def test_the_formatter_never_raises_and_keeps_the_record() -> None:
    def broken_serializer(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("serializer is broken")

    class Circular:
        pass

    loop: dict[str, Any] = {}
    loop["self"] = loop
    fmt = tblog.TinybirdJsonFormatter(app_name="safe", json_serializer=broken_serializer)
    rows = _lines(fmt, lambda log: log.info("bad %d", "x", extra={"loop": loop}))
    assert rows[0]["message"].startswith("bad %d")  # a bad %-argument keeps the record
    assert rows[0]["extra"]["loop"] == {"self": "<circular reference>"}
    [nan] = _lines(
        tblog.TinybirdJsonFormatter(app_name="nan"),
        lambda log: log.info("x", extra={"n": float("nan")}),
    )
    assert nan["extra"]["n"] is None  # valid JSON: no NaN token


def test_the_exception_column_holds_notes_groups_and_fmts_exc_info() -> None:
    def emit(log: logging.Logger) -> None:
        err = ValueError("inner")
        if sys.version_info >= (3, 11):
            err.add_note("a note")
            try:
                raise ExceptionGroup("group", [err])  # noqa: F821 - 3.11+
            except Exception:
                log.exception("grouped")
        else:
            try:
                raise err
            except ValueError:
                log.exception("grouped")

    [row] = _lines(tblog.TinybirdJsonFormatter(), emit)
    stacktrace = row["exception"]["stacktrace"]
    assert "Traceback (most recent call last)" in stacktrace and "ValueError: inner" in stacktrace
    if sys.version_info >= (3, 11):
        assert "a note" in stacktrace and "ExceptionGroup: group" in stacktrace
    # fmt naming exc_info: JsonFormatter's text, in extra, renamed as asked
    [named] = _lines(
        tblog.TinybirdJsonFormatter("%(exc_info)s", rename_fields={"exc_info": "trace"}), emit
    )
    assert named["extra"] == {"trace": named["exception"]["stacktrace"]}


def test_a_raising_hook_still_writes_the_row_with_the_error() -> None:
    class Broken(tblog.TinybirdJsonFormatter):
        def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
            raise KeyError("hook")

    [row] = _lines(Broken(app_name="hooked"), lambda log: log.warning("kept %s", "anyway"))
    assert row["message"] == "kept anyway"
    assert row["app_name"] == "hooked"
    assert row["extra"] == {"tblog_format_error": "KeyError: 'hook'"}
    assert validate(load_schema("tb_logs") or [], row) is None
