"""``TinybirdJsonFormatter``: a python-json-logger formatter whose lines are ``tb_logs`` rows.

Set on a ``TinybirdLoggingHandler`` it decides the shipped event (the handler
ships a python-json-logger formatter's line as it is); set on any other handler
(a ``StreamHandler`` for stdout, a file) it writes lines that Tinybird can ingest
into ``tb_logs`` unchanged: every column's field name, the trace context read on
the logging thread, ``extra`` as one object and the exception as an object.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from tblog import _config, context
from tblog._event.build import (
    CTX_ATTR,
    HOSTNAME,
    STANDARD_ATTRS,
    exc_of,
    iso_utc,
    new_event_id,
)
from tblog._event.encode import dumps, to_text

__all__ = ["TinybirdJsonFormatter"]

# python-json-logger's own keys in ``message_dict`` (the record's text, already columns here).
_MESSAGE_DICT_SKIP = frozenset(("exc_info", "stack_info"))


class TinybirdJsonFormatter(JsonFormatter):
    """A ``pythonjsonlogger`` ``JsonFormatter`` preset for the ``tb_logs`` schema.

    ``TinybirdJsonFormatter(app_name=None, environment=None, *, static_fields=None,
    **kwargs)``: ``app_name`` and ``environment`` fall back to ``TB_APP_NAME`` /
    ``TB_ENVIRONMENT`` like the handler's (give the formatter the same values as
    its handler).  ``static_fields`` go into ``extra``, under the record's own
    extras and the bound fields.  Other keyword arguments (``rename_fields``,
    ``reserved_attrs``, ...) are python-json-logger's.
    """

    def __init__(
        self,
        app_name: str | None = None,
        environment: str | None = None,
        *,
        static_fields: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if static_fields is not None and not isinstance(static_fields, Mapping):
            raise TypeError("static_fields must be a mapping of field names to values")
        kwargs.setdefault("reserved_attrs", sorted(STANDARD_ATTRS))
        super().__init__(**kwargs)
        self.app_name = _config.resolve_app_name(app_name)
        self.environment = _config.resolve_environment(environment)
        self.extra_static = dict(static_fields or {})

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        """Fill ``log_data`` with the ``tb_logs`` fields of ``record``."""
        a = record.__dict__
        carried = a.get(CTX_ATTR)
        if carried is not None:
            trace_id, span_id, bound = carried
        else:
            trace_id, span_id, bound = context.capture()  # on the logging thread
        message = a.get("message")
        if not isinstance(message, str):
            message = to_text(record.msg)
        fields: dict[str, Any] = {
            "timestamp": iso_utc(record.created),
            "level": record.levelname,
            "level_no": record.levelno,
            "logger": record.name,
            "message": message,
            "app_name": self.app_name,
            "environment": self.environment,
            "hostname": HOSTNAME,
            "process_id": record.process or 0,
            "process_name": record.processName or "",
            "thread_id": record.thread or 0,
            "thread_name": record.threadName or "",
            "module": record.module or "",
            "func_name": record.funcName or "",
            "lineno": record.lineno or 0,
            "pathname": record.pathname or "",
            "trace_id": trace_id,
            "span_id": span_id,
            "event_id": new_event_id(),
        }
        exc = exc_of(record)
        if exc is not None:
            fields["exception"] = {
                "type": exc.type,
                "message": exc.message,
                "stacktrace": exc.stacktrace,
            }
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        skip = self.reserved_attrs
        extra: dict[str, Any] = dict(self.extra_static)
        extra.update(bound)
        for key, value in message_dict.items():
            if key not in _MESSAGE_DICT_SKIP:
                extra[key] = value
        for key, value in a.items():
            if key not in skip and key[:1] != "_":
                extra[key] = value
        fields["extra"] = extra
        rename = self.rename_fields
        for key, value in fields.items():
            log_data[rename.get(key, key)] = value

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        """One compact JSON line; values JSON cannot hold become text (never raises)."""
        return dumps(log_data).decode("utf-8")
