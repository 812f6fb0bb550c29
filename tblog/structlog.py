"""structlog integration: ``TinybirdProcessor`` ships each event dict to Tinybird.

Put the processor anywhere in a structlog processor chain *before* the renderer
(or in a ``structlog.stdlib.ProcessorFormatter``'s ``foreign_pre_chain`` or
``processors``, before the renderer there too)::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        TinybirdProcessor(api_url, token, "my_app"),
        structlog.processors.JSONRenderer(),
    ])

It returns the event dict unchanged.  On the caller's thread it only takes a
shallow copy of the event dict plus tblog's trace context (and, when an exception
is attached, its text, so the traceback's frames are released at once); the
event is built and encoded on the shared sender thread, in the ``tblog`` schema
(the columns of ``tb_logs.datasource``).  Like the logging handler it never does
I/O on the caller's thread, never blocks and never raises into the application,
with one exception: a processor placed after the renderer (it receives a string
instead of an event dict) is a configuration error and raises ``TypeError``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from tblog import _config, _diag, context
from tblog._delivery import reports as _reports
from tblog._delivery.channel import Channel
from tblog._delivery.producer import ProducerControl
from tblog._delivery.sender import (
    SHUTDOWN_TIMEOUT,
    _Default,
    busy_threads,
    get_sender,
    still_busy,
)
from tblog._event import tb_logs
from tblog._event.encode import dumps, shrink_event, to_text
from tblog._event.gate import RATE_KEY, Gate
from tblog._event.redact import build_redactor
from tblog._event.snapshot import CTX_ATTR, ExcInfo, exc_of, extras_of
from tblog._event.tb_logs import iso_utc
from tblog._event.tracekeep import TraceKeep

try:
    import structlog as _structlog
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("tblog.structlog needs structlog: pip install 'tblog[structlog]'") from _exc

__all__ = ["TinybirdProcessor"]

_get_ident = threading.get_ident
_modules = sys.modules
_OTEL = context.OTEL_MODULE  # imported: an OpenTelemetry span may be current (context.capture)
_current = context.current

# Level names as structlog spells them (method names and ``add_log_level`` values).
_LEVELS: dict[str, tuple[str, int]] = {
    "debug": ("DEBUG", logging.DEBUG),
    "info": ("INFO", logging.INFO),
    "msg": ("INFO", logging.INFO),
    "log": ("INFO", logging.INFO),
    "warn": ("WARNING", logging.WARNING),
    "warning": ("WARNING", logging.WARNING),
    "error": ("ERROR", logging.ERROR),
    "err": ("ERROR", logging.ERROR),
    "exception": ("ERROR", logging.ERROR),
    "critical": ("CRITICAL", logging.CRITICAL),
    "fatal": ("CRITICAL", logging.CRITICAL),
    "notset": ("NOTSET", logging.NOTSET),
}

# Event dict keys that become columns (or are structlog's plumbing), never ``extra``.
_CONSUMED = frozenset(
    (
        "event", "level", "timestamp", "logger", "logger_name", "exc_info", "exception",
        "stack", "stack_info", "_record", "_from_structlog", "positional_args",
        # structlog.processors.CallsiteParameterAdder
        "pathname", "filename", "module", "func_name", "lineno", "thread", "thread_name",
        "process", "process_name",
    )
)  # fmt: skip

_RENDERER_TYPES: tuple[type, ...] = tuple(
    t
    for t in (
        getattr(_structlog.processors, "JSONRenderer", None),
        getattr(_structlog.processors, "KeyValueRenderer", None),
        getattr(_structlog.processors, "LogfmtRenderer", None),
        getattr(_structlog.dev, "ConsoleRenderer", None),
    )
    if isinstance(t, type)
)


def _is_renderer(processor: object) -> bool:
    if isinstance(processor, _RENDERER_TYPES):
        return True
    wrap = getattr(_structlog.stdlib.ProcessorFormatter, "wrap_for_formatter", None)
    return processor is wrap or processor is getattr(_structlog.stdlib, "render_to_log_kwargs", 0)


#: What the caller's thread hands to the sender for one structlog event: (fields: a shallow
#: copy of the event dict without ``_record``, method name, logger name, created, the stdlib
#: record's attributes or None (ProcessorFormatter), the exception as text or None, the trace
#: context (trace_id, span_id, bound fields), pid, thread id, thread name).  A plain tuple:
#: building a NamedTuple costs a Python call on the caller's thread.
_Snap = tuple[
    dict[str, Any], str, str, float, "dict[str, Any] | None", "ExcInfo | None",
    "tuple[str, str, Mapping[str, Any]]", int, int, str,
]  # fmt: skip


def _snap_size(snap: _Snap) -> int:
    """A snapshot's memory estimate, for ``max_buffer_bytes`` (computed inline by ``_ship``)."""
    exc = snap[5]
    return 400 + 64 * len(snap[0]) + (len(exc.stacktrace) if exc is not None else 0)


class TinybirdProcessor(ProducerControl):
    """A structlog processor that ships every event dict to a Tinybird datasource.

    ``TinybirdProcessor(api_url, token, app_name, ds_name="tb_logs", **options)``
    takes the delivery options of ``TinybirdLoggingHandler`` (``batch_size``,
    ``flush_interval``, ``max_buffer_size``, ``drop_policy``, ``gzip``, ``wait``,
    ``static_fields``, ``environment``, ``ignore_loggers``, ...), plus ``level``:
    events below it are passed on but not shipped.  Sampling and dedup (``sample``,
    ``dedup_*``), the trace hold (``keep_trace_on_error``, ``trace_hold_*``) and drop
    reports (``client_reports_interval``) work as the handler's, with the same
    ``stats()`` keys.
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        app_name: str | None = None,
        ds_name: str = "tb_logs",
        *,
        level: int | str = logging.NOTSET,
        environment: str | None = None,
        ignore_loggers: Iterable[str] | str | None = None,
        **options: Any,
    ) -> None:
        target = _config.resolve_target(api_url, token, app_name, ds_name, environment)
        self.app_name, self.ds_name = target.app_name, target.ds_name
        self.environment = target.environment
        self.level = _level_number(level)
        self.options = _config.options_from(options)
        self._static = dict(self.options.static_fields)
        opts = self.options
        self._redactor = build_redactor(opts.redact, opts.redact_keys, opts.redact_patterns)
        self._ignore = _config.ignored_prefixes(ignore_loggers)
        self._ignore_cache: dict[str, bool] = {}
        self._sender = get_sender()
        self._channel = Channel(
            self._sender,
            api_url=target.api_url,
            token=target.token,
            datasource=self.ds_name,
            options=self.options,
            encode=self._encode,
            measure=_snap_size,
            label=f"structlog:{self.app_name}:{self.ds_name}",
        )
        self.api_url = target.api_url
        self.ignored = 0
        self.filtered = 0
        self.duplicates = 0
        # The records shipped last (see ``_seen_before``): a ProcessorFormatter shared by two
        # handlers formats each record twice, each time on a copy of it.
        self._recent: dict[tuple[Any, ...], Any] = {}
        self._checked = False
        self._misplaced = ""
        self._closed = False
        # sampling and dedup (tblog._event.gate): None unless sample or dedup_limit is set
        self._gate: Gate | None = None
        if opts.sample or (opts.dedup_limit and opts.dedup_window):
            self._gate = Gate(
                sample=opts.sample,
                dedup_limit=opts.dedup_limit,
                dedup_window=opts.dedup_window,
                ship=self._ship_summary,
            )
        # trace-aware keep (tblog._event.tracekeep), as the handler's: None unless
        # keep_trace_on_error.  TraceKeep reads a trace id and a level from what it is given:
        # a held structlog snapshot goes wrapped (under ``_HELD``), unwrapped to ship.
        self._hold: TraceKeep | None = None
        if opts.keep_trace_on_error:
            put = self._channel.put
            self._hold = TraceKeep(
                lambda held, size, pid: put(held[_HELD], size, pid),
                self._channel.count_drop,
                hold_seconds=opts.trace_hold_seconds,
                hold_max=opts.trace_hold_max,
                max_events=opts.trace_hold_max_events,
                max_bytes=opts.trace_hold_max_bytes,
            )
        # drop reports (tblog._delivery.reports) unless client_reports_interval=0
        _reports.watch(self._channel, app_name=self.app_name, environment=self.environment)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} app_name={self.app_name!r} ds_name={self.ds_name!r} "
            f"api_url={self.api_url!r}>"
        )

    # -- the processor (caller's thread) -----------------------------------------------

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        if type(event_dict) is not dict and not isinstance(event_dict, MutableMapping):
            raise TypeError(_misplaced_message(f"a {type(event_dict).__name__}"))
        if not self._checked:
            self._misplaced = self._check_chain()
            self._checked = True
            self._check_formatters()
        if self._misplaced:
            raise TypeError(self._misplaced)
        try:
            self._ship(logger, method_name, event_dict)
        except Exception as exc:  # noqa: BLE001 - never raise into the application
            self._channel.count_drop("snapshot_failed")
            _diag_warning(exc)
        return event_dict

    def _ship(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> None:
        ident = _get_ident()
        if ident in busy_threads and still_busy(ident):
            self.ignored += 1  # the sender's own HTTP stack, through a ProcessorFormatter
            return
        if self._closed:
            self._channel.count_drop("closed")
            return
        fields = dict(event_dict)
        record = fields.pop("_record", None)
        attrs: dict[str, Any] | None = None
        if record is not None and isinstance(record, logging.LogRecord):
            attrs = record.__dict__.copy()
            if self._seen_before(attrs):
                return
            name = str(attrs.get("name") or "")
            created = float(attrs.get("created") or time.time())
        else:
            record = None
            raw_name = fields.get("logger", fields.get("logger_name"))
            if raw_name is None:
                raw_name = getattr(logger, "name", "")
            name = raw_name if type(raw_name) is str else to_text(raw_name)
            created = time.time()
        refused = self._ignore_cache.get(name)
        if refused is None:
            refused = _config.refused_name(name, self._ignore, self._ignore_cache)
        if refused:
            self.ignored += 1
            return
        if self.level and _level_of(fields, method_name, attrs)[1] < self.level:
            self.filtered += 1
            return
        if self._gate is not None and not self._admit(self._gate, fields, method_name, name,
                                                       created, attrs):  # fmt: skip
            return
        exc = None
        if record is not None or "exc_info" in fields:
            exc = _exception_now(fields, record)
        ctx = attrs.get(CTX_ATTR) if attrs is not None else None
        if ctx is None:  # (a record that crossed a tblog queue keeps its context)
            ctx = context.capture() if _OTEL in _modules else _current()
        pid = os.getpid()
        snap: _Snap = (
            fields, method_name, name, created, attrs, exc, ctx, pid, ident,
            threading.current_thread().name,
        )  # fmt: skip
        size = 400 + 64 * len(fields)  # == _snap_size(snap), which the sender subtracts
        if exc is not None:
            size += len(exc.stacktrace)
        hold = self._hold
        if hold is not None and ctx[0]:
            level_no = _level_of(fields, method_name, attrs)[1]
            if hold({"exc_text": (ctx[0],), "levelno": level_no, _HELD: snap}, size, pid):
                return
        self._channel.put(snap, size, pid)

    @staticmethod
    def _admit(  # noqa: PLR0917
        gate: Gate,
        fields: dict[str, Any],
        method_name: str,
        name: str,
        created: float,
        attrs: dict[str, Any] | None,
    ) -> bool:
        """Whether sampling and dedup ship this event (a kept sample carries its rate)."""
        level_no = _level_of(fields, method_name, attrs)[1]
        rate = 1.0
        if gate.rules:
            rate = gate.rate(name, level_no)
            if rate < 1.0 and not gate.keep(rate):
                return False
        template = fields.get("event")
        if gate.limit and type(template) is str:
            a = attrs or {}
            site = (
                _str(fields.get("pathname", a.get("pathname", ""))),
                _int(fields.get("lineno", a.get("lineno", 0))),
                _str(fields.get("func_name", a.get("funcName", ""))),
            )
            if not gate.held(name, template, level_no, created, *site, rate):
                return False
        if rate < 1.0:
            fields[RATE_KEY] = rate  # (the processor's own copy of the event dict)
        return True

    def _ship_summary(self, record: logging.LogRecord) -> None:
        """Ship the gate's "repeated K times" record as an event of this processor."""
        if self._closed:
            self._channel.count_drop("closed")
            return
        fields: dict[str, Any] = {
            "event": record.msg, "level": record.levelname, "pathname": record.pathname,
            "lineno": record.lineno, "func_name": record.funcName,
        }  # fmt: skip
        for key, value in record.__dict__.items():
            if key in ("repeat_count", "first_ts", "last_ts", "dedup_window", RATE_KEY):
                fields[key] = value
        pid = os.getpid()
        snap: _Snap = (
            fields, record.levelname.lower(), record.name, record.created, None, None,
            ("", "", {}), pid, _get_ident(), threading.current_thread().name,
        )  # fmt: skip
        self._channel.put(snap, _snap_size(snap), pid)

    def _check_chain(self) -> str:
        """Why structlog's configured chain is wrong for this processor ("" when it is fine)."""
        try:
            processors = list(_structlog.get_config().get("processors") or ())
        except Exception:  # noqa: BLE001 - the check is best effort
            return ""
        for i, proc in enumerate(processors):
            if proc is self:
                renderers = [p for p in processors[:i] if _is_renderer(p)]
                if renderers:
                    name = getattr(renderers[0], "__name__", type(renderers[0]).__name__)
                    return _misplaced_message(f"the output of {name}")
                return ""
        return ""

    def _seen_before(self, attrs: dict[str, Any]) -> bool:
        """True when the record ``attrs`` copies was shipped already (counted, told once).

        ``ProcessorFormatter`` formats a shallow copy of the record for each handler it
        serves: the copies share the record's ``created`` float object, which no other record
        has.  Holding on to it (for the last ``_RECENT_MAX`` records) keeps its identity from
        being reused, also where the clock is coarse and two records share a time.
        """
        created = attrs.get("created")
        key = (created, attrs.get("thread"), attrs.get("name"), attrs.get("lineno"))
        recent = self._recent
        if created is not None and recent.get(key) is created:
            self.duplicates += 1
            self._tell(
                "duplicate",
                "the same log record reached TinybirdProcessor twice (is one "
                "ProcessorFormatter shared by two handlers?); it is shipped once",
            )
            return True
        recent[key] = created
        if len(recent) > _RECENT_MAX:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del recent[next(iter(recent))]
        return False

    def _tell(self, cause: str, what: str) -> None:
        """``what`` once to the ``tblog`` logger, and once on stderr unless silenced."""
        key = f"structlog-{cause}:{id(self)}"
        _diag.warn_once(key, "tblog: %s", what)
        if self.options.warn_stderr:
            _diag.tell(
                key,
                f"tblog: {what} [once per process; TBLOG_QUIET=1 or warn_stderr=False silences]",
            )

    def _check_formatters(self) -> None:
        """Tell once when a ProcessorFormatter runs this processor after
        ``remove_processors_meta``: the record (logger name, function, line) is gone by then."""
        try:
            loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
            for lg in loggers:
                for handler in getattr(lg, "handlers", ()):
                    chain = list(getattr(handler.formatter, "processors", None) or ())
                    if self in chain and any(p is _REMOVE_META for p in chain[: chain.index(self)]):
                        self._tell(
                            "meta",
                            "TinybirdProcessor comes after remove_processors_meta in a "
                            "ProcessorFormatter, so its rows lack the logger name, function "
                            "and line; put it before remove_processors_meta",
                        )
                        return
        except Exception:  # noqa: BLE001, S110 - the check is best effort
            pass

    # -- the sender thread -------------------------------------------------------------

    def _encode(self, snap: _Snap) -> bytes | None:
        event = self.build(snap)
        if self._redactor is not None:
            event = self._redactor.event(event)
        line = dumps(event)
        if len(line) > self.options.max_event_bytes:
            return shrink_event(event, line, self.options.max_event_bytes)
        return line

    def build(self, snap: _Snap) -> dict[str, Any]:
        """The ``tb_logs`` row for one snapshot (sender thread)."""
        f, method, logger_name, created, record, exc, ctx, pid, thread_id, thread_name = snap
        trace_id, span_id, bound = ctx
        a = record or {}
        level, level_no = _level_of(f, method, record)
        message = f.get("event", a.get("msg", ""))
        extra: dict[str, Any] = dict(self._static)
        extra.update(bound)
        if record is not None:
            extra.update(extras_of(a))
        for key, value in f.items():
            if key not in _CONSUMED and key[:1] != "_":
                extra[key] = value
        positional = f.get("positional_args")
        if positional:
            extra["positional_args"] = positional
        head = tb_logs.head(
            level, level_no, logger_name, self.app_name, self.environment,
            _int(f.get("process", a.get("process", pid))),
            _str(f.get("process_name", a.get("processName", ""))),
            _int(f.get("thread", a.get("thread", thread_id))),
            _str(f.get("thread_name", a.get("threadName", thread_name))),
            _str(f.get("module", a.get("module", ""))),
            _str(f.get("func_name", a.get("funcName", ""))),
            _int(f.get("lineno", a.get("lineno", 0))),
            _str(f.get("pathname", a.get("pathname", ""))),
        )  # fmt: skip
        stack = f.get("stack") or f.get("stack_info") or a.get("stack_info")
        return tb_logs.finish(
            head,
            _timestamp(f.get("timestamp"), created, record is not None),
            message if isinstance(message, str) else to_text(message),
            trace_id,
            span_id,
            exc or _exception_from_text(f.get("exception")),
            (stack if isinstance(stack, str) else to_text(stack)) if stack else None,
            extra,
            f.get(RATE_KEY),
        )

    # -- control -----------------------------------------------------------------------

    def flush(self, timeout: float | _Default | None = SHUTDOWN_TIMEOUT) -> bool:
        """Deliver what this processor buffered before the call; True when all of it arrived.

        Without an argument it waits at most ``shutdown_timeout`` seconds; ``flush(None)``
        waits without a limit.  Events held by ``keep_trace_on_error`` wait for their
        trace's error (or their ``trace_hold_seconds``): they are not part of it.
        """
        return self._flush_channel(timeout)

    def close(self) -> None:
        """Deliver what is buffered (within ``shutdown_timeout``) and stop shipping. Idempotent."""
        if not self._closed:
            self._close_channel()

    def stats(self) -> dict[str, Any]:
        """Counters: enqueued, sent, batches, bytes, drops by reason, ignored, filtered, and
        duplicates (a record that reached the processor again, not shipped twice)."""
        return self._producer_stats(filtered=self.filtered, duplicates=self.duplicates)


#: Records remembered for ``_seen_before``.
_RECENT_MAX = 256
#: The key of a held snapshot in what ``TinybirdProcessor`` gives its ``TraceKeep``.
_HELD = "_tblog_snap"
_REMOVE_META = getattr(
    getattr(_structlog.stdlib, "ProcessorFormatter", None), "remove_processors_meta", None
)


def _misplaced_message(got: str) -> str:
    return (
        "tblog.structlog.TinybirdProcessor must come before the renderer in the structlog "
        f"processor chain (it received {got}, not an event dict); move it before "
        "JSONRenderer/ConsoleRenderer/KeyValueRenderer/ProcessorFormatter.wrap_for_formatter"
    )


def _diag_warning(exc: Exception) -> None:
    _diag.diag(
        logging.WARNING, "structlog-snapshot",
        "tblog: could not snapshot a structlog event (%s); dropped it", type(exc).__name__,
    )  # fmt: skip


def _level_number(level: int | str) -> int:
    if isinstance(level, bool):
        raise TypeError("level must be an int or a level name")
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        found = _LEVELS.get(level.lower())
        if found is not None:
            return found[1]
        number = logging.getLevelName(level.upper())
        if isinstance(number, int):
            return number
        raise ValueError(f"level must be a logging level name, not {level!r}")
    raise TypeError("level must be an int or a level name")


def _level_of(
    fields: Mapping[str, Any], method: str, record: Mapping[str, Any] | None
) -> tuple[str, int]:
    raw = fields.get("level")
    if isinstance(raw, str):
        found = _LEVELS.get(raw.lower())
        if found is not None:
            return found
        number = logging.getLevelName(raw.upper())
        if isinstance(number, int):
            return raw.upper(), number
    elif isinstance(raw, int) and not isinstance(raw, bool):
        return logging.getLevelName(raw), raw
    if record is not None and isinstance(record.get("levelno"), int):
        return str(record.get("levelname") or ""), int(record["levelno"])
    return _LEVELS.get(method, ("INFO", logging.INFO))


def _exception_now(fields: dict[str, Any], record: logging.LogRecord | None) -> ExcInfo | None:
    """Turn ``exc_info`` into text on the caller's thread (releases the traceback's frames)."""
    info = fields.get("exc_info")
    if info is None and record is not None and (record.exc_info or record.exc_text):
        return exc_of(record)
    if not info:
        return None
    if info is True:
        info = sys.exc_info()
    elif isinstance(info, BaseException):
        info = (type(info), info, info.__traceback__)
    if not (isinstance(info, tuple) and len(info) == 3 and info[0] is not None):
        return None
    fields.pop("exc_info", None)
    carrier = logging.LogRecord("", 0, "", 0, "", None, info)
    return exc_of(carrier)


def _exception_from_text(value: Any) -> ExcInfo | None:
    """structlog already rendered the exception (``format_exc_info`` or ``dict_tracebacks``)."""
    if not value:
        return None
    if isinstance(value, str):
        last = value.rstrip().rsplit("\n", 1)[-1]
        type_name, _, message = last.partition(": ")
        return ExcInfo(type_name.strip(), message, value.rstrip("\n"))
    if isinstance(value, list) and value and isinstance(value[-1], Mapping):
        last_exc = value[-1]
        lines = ["Traceback (most recent call last):"]
        for frame in last_exc.get("frames") or ():
            if isinstance(frame, Mapping):
                lines.append(
                    f'  File "{frame.get("filename", "?")}", line {frame.get("lineno", "?")}, '
                    f"in {frame.get('name', '?')}"
                )
        type_name = to_text(last_exc.get("exc_type", ""))
        message = to_text(last_exc.get("exc_value", ""))
        lines.append(f"{type_name}: {message}")
        return ExcInfo(type_name, message, "\n".join(lines))
    text = to_text(value)
    return ExcInfo("", text, text)


def _timestamp(value: Any, created: float, from_record: bool) -> str:
    """The event's own timestamp when it is unambiguous, else the moment of the call."""
    if from_record:
        return iso_utc(created)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return iso_utc(float(value))
    ts = _parse_aware(value)
    return iso_utc(ts if ts is not None else created)


def _parse_aware(value: Any) -> float | None:
    if isinstance(value, str) and len(value) >= 19:
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, _dt.datetime) and value.tzinfo is not None:
        return value.timestamp()
    return None  # naive or unparseable: local time of unknown zone, so not trusted


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else to_text(value)
