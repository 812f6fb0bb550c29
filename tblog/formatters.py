"""``TinybirdJsonFormatter``: python-json-logger's ``JsonFormatter``, writing ``tb_logs`` rows.

Set on a ``TinybirdLoggingHandler`` it decides the shipped event (the handler ships a
python-json-logger formatter's line as it is); set on any other handler (a ``StreamHandler``
for stdout, a file) it writes lines that Tinybird can ingest into ``tb_logs`` unchanged:
every column's field name, the trace context read on the logging thread, ``extra`` as one
object and the exception as an object.

It takes ``JsonFormatter``'s arguments (positional ``fmt, datefmt, style, validate`` and
every keyword option), so ``class: tblog.TinybirdJsonFormatter`` works in ``dictConfig``
and ``fileConfig``.  The row's ``extra`` object holds what ``JsonFormatter`` with the same
options would print at the top level (``defaults``, the fields named in ``fmt``,
``static_fields``, a dict message, the record's extras, ``timestamp``), with tblog's bound
fields; ``message``, the exception and ``stack_info`` are the row's own columns.  Lines are
serialized as ``JsonFormatter`` serializes them; when that fails (a circular value, NaN, a
broken ``json_serializer``) tblog's never-failing encoder writes the line instead, and a
record is never lost to the formatter.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.core import (
    STYLE_PERCENT_REGEX,
    STYLE_STRING_FORMAT_REGEX,
    STYLE_STRING_TEMPLATE_REGEX,
)
from pythonjsonlogger.json import JsonFormatter

from tblog import _config, context
from tblog._diag import diag
from tblog._event import tb_logs
from tblog._event.encode import dumps, to_text
from tblog._event.snapshot import CTX_ATTR, STANDARD_ATTRS, exc_of, get_message
from tblog._event.tb_logs import iso_utc

__all__ = ["TinybirdJsonFormatter"]

# python-json-logger's own keys in a dict message: the row's exception and stack_info columns.
_MESSAGE_DICT_SKIP = frozenset(("exc_info", "stack_info"))
_FIELD_PATTERNS = {
    "%": STYLE_PERCENT_REGEX,
    "{": STYLE_STRING_FORMAT_REGEX,
    "$": STYLE_STRING_TEMPLATE_REGEX,
}


def _legacy_app_name(fmt: object, style: str, validate: bool) -> bool:
    """True for tblog's old ``TinybirdJsonFormatter("my_app", ...)``: a ``fmt`` naming no field.

    ``JsonFormatter`` itself refuses such a ``fmt`` (``validate`` raises ``ValueError``),
    so no valid ``JsonFormatter`` call is taken for the old form.
    """
    pattern = _FIELD_PATTERNS.get(style)
    return (
        validate
        and pattern is not None
        and isinstance(fmt, str)
        and bool(fmt)
        and pattern.search(fmt) is None
    )


def _key(key: object) -> str:
    return key if isinstance(key, str) else to_text(key)


class TinybirdJsonFormatter(JsonFormatter):
    """A ``pythonjsonlogger`` ``JsonFormatter`` for the ``tb_logs`` schema.

    ``TinybirdJsonFormatter(fmt=None, datefmt=None, style="%", validate=True, *,
    <JsonFormatter's options>, app_name=None, environment=None)``.  ``app_name`` and
    ``environment`` fall back to ``TB_APP_NAME`` / ``TB_ENVIRONMENT`` like the handler's
    (give the formatter the same values as its handler).  ``rename_fields`` renames the
    row's columns by their ``tb_logs`` names and the fields of ``extra`` by theirs.
    ``reserved_attrs`` defaults to every standard ``LogRecord`` attribute.
    """

    def __init__(
        self,
        fmt: str | Sequence[str] | None = None,
        datefmt: str | None = None,
        style: str = "%",
        validate: bool = True,
        *,
        prefix: str = "",
        rename_fields: dict[str, str] | None = None,
        rename_fields_keep_missing: bool = False,
        static_fields: Mapping[str, Any] | None = None,
        reserved_attrs: Sequence[str] | None = None,
        timestamp: bool | str = False,
        defaults: dict[str, Any] | None = None,
        exc_info_as_array: bool = False,
        stack_info_as_array: bool = False,
        json_default: Callable[[Any], Any] | None = None,
        json_encoder: Callable[..., Any] | None = None,
        json_serializer: Callable[..., Any] = json.dumps,
        json_indent: int | str | None = None,
        json_ensure_ascii: bool = True,
        app_name: str | None = None,
        environment: str | None = None,
    ) -> None:
        if _legacy_app_name(fmt, style, validate):
            warnings.warn(
                "TinybirdJsonFormatter's first positional argument is fmt, as JsonFormatter's: "
                f"pass app_name={fmt!r}"
                + (f" and environment={datefmt!r}" if datefmt is not None else "")
                + " as keywords",
                DeprecationWarning,
                stacklevel=2,
            )
            app_name = fmt if app_name is None else app_name  # type: ignore[assignment]
            environment = datefmt if environment is None else environment
            fmt = datefmt = None
        if static_fields is not None and not isinstance(static_fields, Mapping):
            raise TypeError("static_fields must be a mapping of field names to values")
        if fmt is not None and not isinstance(fmt, (str, Sequence)):
            raise TypeError("fmt must be a format string or a sequence of field names")
        super().__init__(
            fmt,
            datefmt,
            style,
            validate,
            prefix=prefix,
            rename_fields=rename_fields,
            rename_fields_keep_missing=rename_fields_keep_missing,
            static_fields=static_fields,
            reserved_attrs=sorted(STANDARD_ATTRS) if reserved_attrs is None else reserved_attrs,
            timestamp=timestamp,
            defaults=defaults,
            exc_info_as_array=exc_info_as_array,
            stack_info_as_array=stack_info_as_array,
            json_default=json_default,
            json_encoder=json_encoder,
            json_serializer=json_serializer,
            json_indent=json_indent,
            json_ensure_ascii=json_ensure_ascii,
        )
        self.app_name = _config.resolve_app_name(app_name)
        self.environment = _config.resolve_environment(environment)

    def format(self, record: logging.LogRecord) -> str:
        """The record's ``tb_logs`` row as one JSON line.  Never raises.

        As ``JsonFormatter.format``, except that a bad ``%``-argument gives a message saying
        so, and that anything else raising (an override of ``process_log_record``, ...)
        gives the row without the fields that failed, with the error in
        ``extra["tblog_format_error"]``.
        """
        try:
            message_dict: dict[str, Any] = {}
            if isinstance(record.msg, dict):
                message_dict = record.msg.copy()
                record.message = ""
            else:
                record.message = get_message(record)
            if "asctime" in self._required_fields:
                record.asctime = self.formatTime(record, self.datefmt)
            log_data: dict[str, Any] = {}
            self.add_fields(log_data, record, message_dict)
            log_data = self.process_log_record(log_data)
            return self.serialize_log_record(log_data)
        except Exception as exc:  # noqa: BLE001 - a formatter must not lose the record
            diag(
                logging.WARNING, "json-formatter-error",
                "TinybirdJsonFormatter: formatting a record raised %s: %s; wrote the row "
                "without its extra fields", type(exc).__name__, to_text(exc),
            )  # fmt: skip
            return self._fallback_line(record, exc)

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        """Fill ``log_data`` with the ``tb_logs`` fields of ``record``."""
        a: dict[Any, Any] = record.__dict__  # ``extra=`` may add keys that are not str
        carried = a.get(CTX_ATTR)
        if carried is not None:
            trace_id, span_id, bound = carried
        else:
            trace_id, span_id, bound = context.capture()  # on the logging thread
        message = a.get("message")
        if not isinstance(message, str):
            message = to_text(record.msg)
        exc = exc_of(record)
        stack: Any = self.formatStack(record.stack_info) if record.stack_info else None
        stacktrace: Any = None
        if exc is not None:
            stacktrace = exc.stacktrace.splitlines() if self.exc_info_as_array else exc.stacktrace
        rename = self.rename_fields
        # ``extra``: what JsonFormatter would print at the top level, in its order
        extra: dict[str, Any] = {}
        for key, value in self.defaults.items():
            extra[rename.get(key, key)] = value
        for field in self._required_fields:
            if field == "message":  # the row's column
                continue
            if field == "exc_info":
                shown: Any = stacktrace
            elif field == "stack_info":
                shown = stack
            else:
                shown = a.get(field)
            extra[rename.get(field, field)] = shown
        for source in (self.static_fields, bound, message_dict):
            for key, value in source.items():
                if source is message_dict and key in _MESSAGE_DICT_SKIP:
                    continue
                name = _key(key)
                extra[rename.get(name, name)] = value
        skip = self._skip_fields
        for key, value in a.items():
            if key in skip:
                continue
            if isinstance(key, str):
                if key[:1] == "_":
                    continue
                extra[rename.get(key, key)] = value
            else:  # logging accepts any key in ``extra=``: the event keeps it as text
                name = to_text(key)
                extra[rename.get(name, name)] = value
        if self.timestamp:
            key = self.timestamp if isinstance(self.timestamp, str) else "timestamp"
            extra[rename.get(key, key)] = datetime.fromtimestamp(record.created, tz=timezone.utc)
        head = tb_logs.head(
            record.levelname, record.levelno, record.name, self.app_name, self.environment,
            record.process or 0, record.processName or "", record.thread or 0,
            record.threadName or "", record.module or "", record.funcName or "",
            record.lineno or 0, record.pathname or "",
        )  # fmt: skip
        fields = tb_logs.finish(
            head, iso_utc(record.created), message, trace_id, span_id, exc, stack, extra
        )
        if exc is not None and self.exc_info_as_array:
            fields["exception"]["stacktrace"] = stacktrace
        if rename:
            for key, value in fields.items():
                log_data[rename.get(key, key)] = value
        else:
            log_data.update(fields)
        if self.rename_fields_keep_missing:
            for field in rename.values():
                if field not in log_data and field not in extra:
                    extra[field] = None

    def _fallback_line(self, record: logging.LogRecord, error: BaseException) -> str:
        """The row of a record whose formatting raised: its columns, and the error in ``extra``."""
        try:
            trace_id, span_id, _ = record.__dict__.get(CTX_ATTR) or context.capture()
            exc = exc_of(record)
        except Exception:  # noqa: BLE001 - the line must still be written
            trace_id, span_id, exc = "", "", None
        head = tb_logs.head(
            to_text(getattr(record, "levelname", "")), getattr(record, "levelno", 0) or 0,
            to_text(getattr(record, "name", "")), self.app_name, self.environment,
            getattr(record, "process", 0) or 0, getattr(record, "processName", "") or "",
            getattr(record, "thread", 0) or 0, getattr(record, "threadName", "") or "",
            getattr(record, "module", "") or "", getattr(record, "funcName", "") or "",
            getattr(record, "lineno", 0) or 0, getattr(record, "pathname", "") or "",
        )  # fmt: skip
        created = getattr(record, "created", None)
        when = iso_utc(created if isinstance(created, (int, float)) else 0.0)
        problem = {"tblog_format_error": f"{type(error).__name__}: {to_text(error)}"}
        row = tb_logs.finish(head, when, get_message(record), trace_id, span_id, exc, None, problem)
        return dumps(row).decode("utf-8")

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        """``JsonFormatter``'s JSON; tblog's encoder when that fails or would not be valid JSON.

        With the default ``json_serializer`` (``json.dumps``) NaN and infinities are refused
        (they are not JSON: Tinybird would quarantine the row) and become null below.
        """
        try:
            if self.json_serializer is json.dumps:
                text: Any = json.dumps(
                    log_data,
                    default=self.json_default,
                    cls=self.json_encoder,  # type: ignore[arg-type]
                    indent=self.json_indent,
                    ensure_ascii=self.json_ensure_ascii,
                    allow_nan=False,
                )
            else:
                text = super().jsonify_log_record(log_data)
            if isinstance(text, (bytes, bytearray)):  # an orjson-style serializer
                text = bytes(text).decode("utf-8", "replace")
            if isinstance(text, str):
                return text
            problem = f"returned {type(text).__name__}, not str"
        except Exception as exc:  # noqa: BLE001 - circular values, NaN, a broken serializer
            problem = f"raised {type(exc).__name__}: {to_text(exc)}"
        diag(
            logging.INFO, "json-formatter-fallback",
            "TinybirdJsonFormatter: json_serializer %s; tblog's encoder wrote the line", problem,
        )  # fmt: skip
        return dumps(log_data).decode("utf-8")
