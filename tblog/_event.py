"""LogRecord to event, in two halves.

Caller's thread (``snapshot``): the cheapest copy that makes the record
independent of what happens after the logging call returns: the merged message,
a shallow copy of the record's attributes, the exception as text (so the
traceback and its frames are released at once) and the trace context.

Sender thread (``EventBuilder``): the snapshot becomes the event dict, in the
``tblog`` schema (the columns of ``tb_logs.datasource``) or in the schema of the
Tinybird Python SDK's handler, and then one NDJSON line within ``max_event_bytes``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import random
import socket
import time
import traceback
from collections.abc import Mapping
from typing import Any, NamedTuple

from tblog import context
from tblog._encode import dumps, shrink_event, to_text

# Attributes every LogRecord has (plus the ones formatters add, and tblog's own
# carriers for the queue path): anything else in ``record.__dict__`` is an extra.
CTX_ATTR = "_tblog_ctx"
EXC_ATTR = "_tblog_exc"
STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", CTX_ATTR, EXC_ATTR}
)

_BASE_ATTRS = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_SNAPSHOT_OVERHEAD = 1600

HOSTNAME = socket.gethostname()

# Formatter kinds, decided once per formatter object.
FMT_NONE, FMT_PLAIN, FMT_CUSTOM, FMT_JSON = 0, 1, 2, 3

_JsonBase: type[logging.Formatter] | None
try:
    from pythonjsonlogger.core import BaseJsonFormatter as _JsonBase
except ImportError:  # pragma: no cover - python-json-logger >= 3.1 is a dependency
    _JsonBase = None


def formatter_kind(formatter: logging.Formatter | None) -> int:
    if formatter is None:
        return FMT_NONE
    if _JsonBase is not None and isinstance(formatter, _JsonBase):
        return FMT_JSON
    if type(formatter) is logging.Formatter:
        return FMT_PLAIN
    return FMT_CUSTOM


class ExcInfo(NamedTuple):
    type: str
    message: str
    stacktrace: str


#: What the caller's thread hands to the sender for one record: a plain tuple, the cheapest
#: container to build (a NamedTuple costs several times more on the hot path), holding
#: ``(attrs, message, exc, trace_id, span_id, bound, formatted, formatter, shaped)``:
#: ``formatted`` is formatter output made on the caller's thread, ``formatter`` a plain
#: Formatter to apply on the sender thread, ``shaped`` says ``formatted`` is the event itself
#: (a python-json-logger formatter made it).
Snapshot = tuple[
    dict[str, Any],
    str,
    "ExcInfo | None",
    str,
    str,
    Mapping[str, Any],
    "str | None",
    "logging.Formatter | None",
    bool,
]


def get_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``; when it raises, a message that says so (never an exception)."""
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - bad %-args must not lose the record
        return (
            f"{to_text(record.msg)} [tblog: message formatting failed: "
            f"{type(exc).__name__}: {to_text(exc)}; args={to_text(record.args)}]"
        )


def exc_of(record: logging.LogRecord) -> ExcInfo | None:
    carried = record.__dict__.get(EXC_ATTR)
    if carried is not None:
        return ExcInfo(*carried)
    info = record.exc_info
    if info and info[0] is not None:
        try:
            stack = "".join(traceback.format_exception(*info)).rstrip("\n")
        except Exception:  # noqa: BLE001
            stack = record.exc_text or ""
        return ExcInfo(info[0].__name__, to_text(info[1]), stack)
    if record.exc_text:
        last = record.exc_text.rstrip().rsplit("\n", 1)[-1]
        type_name, _, message = last.partition(": ")
        return ExcInfo(type_name, message, record.exc_text)
    return None


def clone(record: logging.LogRecord, attrs: dict[str, Any]) -> logging.LogRecord:
    """A new record of the same class over ``attrs`` (cheap; LogRecord.__init__ is not run)."""
    copy: logging.LogRecord = object.__new__(type(record))
    copy.__dict__.update(attrs)
    return copy


def snapshot(
    record: logging.LogRecord,
    kind: int,
    formatter: logging.Formatter | None,
) -> Snapshot:
    """Copy what the event needs from ``record`` on the caller's thread; never mutates it."""
    attrs = record.__dict__.copy()
    message = get_message(record)
    exc = exc_of(record) if (record.exc_info or record.exc_text or EXC_ATTR in attrs) else None
    if exc is not None:
        attrs["exc_info"] = None  # release the traceback and its frames now
        attrs["exc_text"] = exc.stacktrace
    carried = attrs.get(CTX_ATTR)
    if carried is not None:
        trace_id, span_id, bound = carried
    else:
        trace_id, span_id, bound = context.capture()
    formatted: str | None = None
    if kind == FMT_PLAIN:
        pass  # a plain Formatter reads only the record: it runs on the sender thread, on the copy
    elif kind != FMT_NONE and formatter is not None:
        formatted = formatter.format(clone(record, attrs))
        formatter = None
    else:
        formatter = None
    return (attrs, message, exc, trace_id, span_id, bound, formatted, formatter, kind == FMT_JSON)


def estimate_size(snap: Snapshot) -> int:
    """A cheap estimate of the snapshot's memory, for the buffer's ``max_buffer_bytes`` bound."""
    # What the snapshot holds in memory: the copied attribute dict (~1.2 KB for a plain
    # record), the tuple and strings around it, the message, ~100 bytes per extra attribute.
    size = _SNAPSHOT_OVERHEAD + len(snap[1]) + 100 * max(0, len(snap[0]) - _BASE_ATTRS)
    exc = snap[2]
    if exc is not None:
        size += len(exc.stacktrace) + len(exc.message)
    formatted = snap[6]
    if formatted is not None:
        size += len(formatted)
    return size


_ts_cache: dict[int, str] = {}


def iso_utc(created: float) -> str:
    """``created`` as ISO-8601 UTC with microseconds, e.g. ``2026-01-31T12:00:00.123456Z``."""
    seconds = int(created)
    micros = round((created - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    prefix = _ts_cache.get(seconds)
    if prefix is None:
        if len(_ts_cache) > 64:
            _ts_cache.clear()
        prefix = _ts_cache[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{micros:06d}Z"


def new_event_id() -> str:
    """A random (version 4) UUID as text, cheaper than ``str(uuid.uuid4())``."""
    n = random.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def extras_of(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The record's ``extra=`` attributes (underscore-prefixed ones are private, left out)."""
    keys = attrs.keys() - STANDARD_ATTRS  # a C-level set difference: most records have few
    return {k: attrs[k] for k in attrs if k in keys and k[:1] != "_"} if keys else {}


class EventBuilder:
    """Turns snapshots into NDJSON lines for one handler (sender thread only)."""

    def __init__(
        self,
        *,
        app_name: str,
        environment: str,
        schema: str,
        static_fields: Mapping[str, Any],
        max_event_bytes: int,
    ) -> None:
        self.app_name = app_name
        self.environment = environment
        self.schema = schema
        self.static_fields = dict(static_fields)
        self.max_event_bytes = max_event_bytes

    def encode(self, snap: Snapshot) -> bytes | None:
        """One JSON line for ``snap`` (shrunk to ``max_event_bytes``), or None when impossible."""
        if snap[8]:
            line = self._json_formatter_line(snap[6] or "")
            if line is not None:
                return line
        event = self.build(snap)
        line = dumps(event)
        if len(line) > self.max_event_bytes:
            return shrink_event(event, line, self.max_event_bytes)
        return line

    def _json_formatter_line(self, text: str) -> bytes | None:
        """A python-json-logger formatter shaped the event: ship its fields as they are."""
        if "\n" in text:
            return None  # an indenting formatter: re-encode below as one line
        line = text.encode("utf-8", "replace")
        if len(line) <= self.max_event_bytes:
            return line
        try:
            event = json.loads(text)
        except ValueError:
            return None
        return shrink_event(event, line, self.max_event_bytes) if isinstance(event, dict) else None

    @staticmethod
    def formatted_message(snap: Snapshot) -> str | None:
        attrs, message, _, _, _, _, formatted, formatter, _ = snap
        if formatter is not None:
            attrs = dict(attrs)
            attrs["msg"], attrs["args"], attrs["exc_info"] = message, None, None
            try:
                return formatter.format(logging.makeLogRecord(attrs))
            except Exception as exc:  # noqa: BLE001
                return f"{message} [tblog: formatter failed: {type(exc).__name__}]"
        return formatted

    def build(self, snap: Snapshot) -> dict[str, Any]:
        if self.schema == "tinybird-python-sdk":
            return self._build_sdk(snap)
        a, message, exc, trace_id, span_id, bound, _, _, _ = snap
        event: dict[str, Any] = {
            "timestamp": iso_utc(a["created"]),
            "level": a["levelname"],
            "level_no": a["levelno"],
            "logger": a["name"],
            "message": message,
            "app_name": self.app_name,
            "environment": self.environment,
            "hostname": HOSTNAME,
            "process_id": a.get("process") or 0,
            "process_name": a.get("processName") or "",
            "thread_id": a.get("thread") or 0,
            "thread_name": a.get("threadName") or "",
            "module": a.get("module") or "",
            "func_name": a.get("funcName") or "",
            "lineno": a.get("lineno") or 0,
            "pathname": a.get("pathname") or "",
            "trace_id": trace_id,
            "span_id": span_id,
            "event_id": new_event_id(),
        }
        if exc is not None:
            event["exception"] = {
                "type": exc.type,
                "message": exc.message,
                "stacktrace": exc.stacktrace,
            }
        if a.get("stack_info"):
            event["stack_info"] = a["stack_info"]
        extra = extras_of(a)
        if bound or self.static_fields:
            extra = {**self.static_fields, **bound, **extra}
        event["extra"] = extra
        formatted = self.formatted_message(snap)
        if formatted is not None:
            event["formatted_message"] = formatted
        return event

    def _build_sdk(self, snap: Snapshot) -> dict[str, Any]:
        """The field names of the Tinybird Python SDK's ``TinybirdLoggingHandler``."""
        a, message, exc, trace_id, span_id, bound, _, _, _ = snap
        created = a["created"]
        event: dict[str, Any] = dict(self.static_fields)
        event.update(
            name=a["name"],
            level=a["levelno"],
            levelname=a["levelname"],
            pathname=a.get("pathname"),
            filename=a.get("filename"),
            module=a.get("module"),
            lineno=a.get("lineno"),
            funcName=a.get("funcName"),
            created=created,
            asctime=_dt.datetime.fromtimestamp(created).isoformat(),
            msecs=a.get("msecs"),
            relativeCreated=a.get("relativeCreated"),
            thread=a.get("thread"),
            threadName=a.get("threadName"),
            process=a.get("process"),
            processName=a.get("processName"),
            message=message,
        )
        if exc is not None:
            event["exc_info"] = {
                "type": f"<class '{exc.type}'>",
                "value": exc.message,
                "traceback": exc.stacktrace,
            }
        args = a.get("args")
        if args:
            event["args"] = args if isinstance(args, Mapping) else list(args)
        if a.get("stack_info"):
            event["stack_info"] = a["stack_info"]
        extra = {**bound, **extras_of(a)}
        if trace_id:
            extra.setdefault("trace_id", trace_id)
        if span_id:
            extra.setdefault("span_id", span_id)
        if extra:
            event["extra"] = extra
        formatted = self.formatted_message(snap)
        if formatted is None:
            formatted = message
            if exc is not None:
                formatted += "\n" + exc.stacktrace
        event["formatted_message"] = formatted
        event["app_name"] = self.app_name
        return event
