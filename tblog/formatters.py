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
from tblog._event import tb_logs
from tblog._event.encode import dumps, to_text
from tblog._event.snapshot import CTX_ATTR, STANDARD_ATTRS, exc_of
from tblog._event.tb_logs import iso_utc

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
        skip = self.reserved_attrs
        extra: dict[str, Any] = dict(self.extra_static)
        extra.update(bound)
        for key, value in message_dict.items():
            if key not in _MESSAGE_DICT_SKIP:
                extra[key] = value
        for key, value in a.items():
            if key not in skip and key[:1] != "_":
                extra[key] = value
        head = tb_logs.head(
            record.levelname, record.levelno, record.name, self.app_name, self.environment,
            record.process or 0, record.processName or "", record.thread or 0,
            record.threadName or "", record.module or "", record.funcName or "",
            record.lineno or 0, record.pathname or "",
        )  # fmt: skip
        stack = self.formatStack(record.stack_info) if record.stack_info else None
        fields = tb_logs.finish(
            head, iso_utc(record.created), message, trace_id, span_id, exc_of(record), stack, extra
        )
        rename = self.rename_fields
        for key, value in fields.items():
            log_data[rename.get(key, key)] = value

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        """One compact JSON line; values JSON cannot hold become text (never raises)."""
        return dumps(log_data).decode("utf-8")
