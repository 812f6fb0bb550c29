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
import itertools
import json
import logging
import operator
import os
import random
import socket
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from tblog import context
from tblog._event.encode import (
    LINES_PER_CHUNK,
    Fragment,
    dumps,
    join_lines,
    json_default,
    orjson_dumps,
    shrink_event,
    to_text,
)
from tblog._event.redact import Redactor

# Attributes every LogRecord has (plus the ones formatters add, and tblog's own
# carriers for the queue path): anything else in ``record.__dict__`` is an extra.
CTX_ATTR = "_tblog_ctx"
STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", CTX_ATTR}
)

BASE_ATTRS = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
SNAPSHOT_OVERHEAD = 1600  # bytes: a copied record dict and the strings around it

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


#: What the caller's thread hands to the sender for one record: a shallow copy of the record's
#: ``__dict__`` in which four standard slots are reused for what the sender needs:
#:
#: * ``msg`` and ``args``: the merged message (``getMessage()`` on the caller's thread) and
#:   None; or, when the record has one %-argument of a ``DEFERRABLE`` type, the format string
#:   and that argument, merged on the sender thread (``snap_message``): formatting an int or a
#:   str later gives the same text, and no argument tuple is kept alive;
#: * ``exc_text``: the trace context ``(trace_id, span_id, bound_fields)``;
#: * ``exc_info``: None, the exception as text (an ``ExcInfo``), or the plain
#:   ``logging.Formatter`` to run on the sender thread.
#:
#: Writing to keys the record already has keeps the copy on the record's shared-key table;
#: adding a key would rebuild the dict (~0.6 us on the caller's thread).  And one container
#: per record, not a tuple around a dict: buffered snapshots survive the garbage collector's
#: young generation, and every surviving container brings the next collection closer, on the
#: application's threads.  Rare cases add private keys (below).  Read snapshots only through
#: ``snap_exc`` / ``snap_formatter`` and the slots above.
Snapshot = dict[str, Any]


class _Uncommon(Exception):  # noqa: N818 - a branch, not an error
    """A snapshot that takes the general path (``EventBuilder.encode_batch``)."""


def _message_or_empty(snap: Snapshot) -> str:
    """``snap_message``, or "" for a snapshot without a message (the general path copes)."""
    try:
        return snap_message(snap)
    except (KeyError, TypeError):
        return ""


# Private keys a snapshot may carry (underscored: never taken for ``extra=`` attributes).
FMT_KEY = "_tblog_fmt"  # formatter output (str), or the plain Formatter when exc_info is taken
SHAPED_KEY = "_tblog_shaped"  # True: FMT_KEY is the event itself (python-json-logger)
ARGS_KEY = "_tblog_args"  # the record's own args (the tinybird-python-sdk schema ships them)


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
    keep_args: bool = False,
) -> tuple[Snapshot, int]:
    """Copy what the event needs from ``record`` on the caller's thread; never mutates it.

    Returns the snapshot (see ``Snapshot``) and its ``snapshot_size``.
    """
    attrs = record.__dict__.copy()
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - bad %-args must not lose the record
        message = get_message(record)
    exc = None
    if record.exc_info or record.exc_text:
        exc = exc_of(record)
    if keep_args:
        attrs[ARGS_KEY] = attrs.get("args")
    attrs["msg"] = message
    attrs["args"] = None
    carried = attrs.get(CTX_ATTR)
    attrs["exc_text"] = carried if carried is not None else context.capture()
    attrs["exc_info"] = exc
    if kind == FMT_PLAIN:
        # a plain Formatter reads only the record: it runs on the sender thread, on the copy
        if exc is None:
            attrs["exc_info"] = formatter
        else:
            attrs[FMT_KEY] = formatter
    elif kind != FMT_NONE and formatter is not None:
        shown = record.__dict__.copy()
        if exc is not None:
            shown["exc_text"] = exc.stacktrace  # formatted once, above
        attrs[FMT_KEY] = formatter.format(clone(record, shown))
        if kind == FMT_JSON:
            attrs[SHAPED_KEY] = True
    return attrs, snapshot_size(attrs)


#: %-argument types whose formatting is the same later and runs no application code (exact
#: types: a subclass may override ``__str__``/``__format__``; None marks "merged" in a snapshot).
DEFERRABLE = frozenset((str, int, float, bool))


def snap_message(snap: Snapshot) -> str:
    """A snapshot's merged message (the sender merges a deferred argument here)."""
    msg = snap["msg"]
    arg = snap.get("args")
    if arg is None:
        return msg if type(msg) is str else to_text(msg)
    try:
        return msg % (arg,)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - as get_message: bad %-args never lose a record
        return (
            f"{to_text(msg)} [tblog: message formatting failed: {type(exc).__name__}: "
            f"{to_text(exc)}; args={to_text((arg,))}]"
        )


def snapshot_size(snap: Snapshot) -> int:
    """A snapshot's memory estimate, for ``max_buffer_bytes``: a pure function of it.

    The copied attribute dict and the strings around it, ~100 bytes per attribute beyond a
    plain record's, the message (and a text argument still to be merged into it), the
    formatter's output and the exception text.  The hot
    path of ``TinybirdLoggingHandler.emit`` computes the same sum inline.
    """
    message = snap.get("msg")
    size = SNAPSHOT_OVERHEAD + 100 * (len(snap) - BASE_ATTRS)
    if type(message) is str:
        size += len(message)
    arg = snap.get("args")  # a %-argument merged on the sender thread
    if type(arg) is str:
        size += len(arg)
    if FMT_KEY in snap:
        formatted = snap[FMT_KEY]
        if type(formatted) is str:
            size += len(formatted)
    exc = snap.get("exc_info")
    if type(exc) is ExcInfo:
        size += len(exc.stacktrace) + len(exc.message)
    return size


def snap_exc(snap: Snapshot) -> ExcInfo | None:
    """The exception a snapshot carries, as text (None: it carries none)."""
    exc = snap.get("exc_info")
    return exc if type(exc) is ExcInfo else None


def snap_formatter(snap: Snapshot) -> logging.Formatter | str | None:
    """The formatter output (str) or the plain Formatter to run, of a snapshot (None: none)."""
    fmt = snap.get(FMT_KEY)
    if fmt is None:
        fmt = snap.get("exc_info")
        if not isinstance(fmt, logging.Formatter):
            return None
    return fmt


#: What ``build`` assumes of a record that lacks an attribute LogRecord.__init__ sets.
_RECORD_DEFAULTS: dict[str, Any] = {
    "created": 0.0, "levelname": "NOTSET", "levelno": 0, "name": "", "process": 0,
    "processName": "", "thread": 0, "threadName": "", "module": "", "funcName": "",
    "lineno": 0, "pathname": "",
}  # fmt: skip

#: Fields a JSON formatter's event keeps as they are under redaction.
_ID_FIELDS = frozenset(("trace_id", "span_id", "event_id", "timestamp", "created", "asctime"))

_ts_cache: dict[int, str] = {}
_HEADS_MAX = 4096  # cached event heads per builder (call site x thread x process)
#: The extra attribute names of a snapshot and whether one of them is a secret's.
_Extras = tuple[tuple[str, ...], bool]
_SCALARS = frozenset((int, float, bool, type(None)))
_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))  # milliseconds of a timestamp
_DIGITS3Z = tuple(f"{i:03d}Z" for i in range(1000))  # its last three digits
_HEX2 = tuple(f"{i:02x}" for i in range(256))  # the last byte of an event id
#: The fields of a snapshot that make its tail, or send it down the general path.
_ROW_OF = operator.itemgetter("exc_info", "stack_info", "created", "exc_text")
#: The record fields a head is made of, read in one call (KeyError: not a full record).
_SHAPE_OF = operator.itemgetter(
    "name",
    "levelno",
    "levelname",
    "pathname",
    "lineno",
    "funcName",
    "module",
    "thread",
    "threadName",
    "process",
    "processName",
)


def iso_utc(created: float) -> str:
    """``created`` as ISO-8601 UTC with microseconds, e.g. ``2026-01-31T12:00:00.123456Z``."""
    seconds = int(created)
    micros = int((created - seconds) * 1_000_000 + 0.5)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    prefix = _ts_cache.get(seconds)
    if prefix is None:
        if len(_ts_cache) > 64:
            _ts_cache.clear()
        prefix = _ts_cache[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{micros:06d}Z"


class _EventIds:
    """Unique version-4-shaped UUIDs, cheaply: 74 random bits per process, then a counter.

    ``str(uuid.uuid4())`` costs about a microsecond, a large share of an event's encoding.
    Here the random part is drawn once per process from ``os.urandom`` and the low 48 bits
    count events, so ids never repeat within a process and collide across processes only
    if two draw the same 74 random bits.  A forked child must not repeat its parent's ids:
    the at-fork hook draws again, and so does the pid check of ``state()`` and ``next()``
    for a fork that ran no hook (uWSGI's, without ``--py-call-osafterfork``).
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.pid = os.getpid()
        bits = random.SystemRandom().getrandbits(120)  # not ``random``: a fork copies its state
        r = f"{bits >> 40:020x}"
        variant = "89ab"[int(r[15], 16) & 3]
        self.prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[16:19]}-"
        self.counter = itertools.count(bits & 0xFFFFFFFFFF)

    def state(self) -> tuple[str, Iterator[int]]:
        """The prefix and the counter, drawn again first if this is a forked child."""
        if os.getpid() != self.pid:
            self.reseed()
        return self.prefix, self.counter

    def next(self) -> str:
        prefix, counter = self.state()
        return f"{prefix}{next(counter) & 0xFFFFFFFFFFFF:012x}"


_ids = _EventIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.reseed)


def new_event_id() -> str:
    """A new event id: a version-4-shaped UUID, unique in this process (see ``_EventIds``)."""
    return _ids.next()


_extra_keys_cache: dict[tuple[str, ...], tuple[str, ...]] = {}


def extra_keys(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the record's ``extra=`` attributes, in order (underscored ones left out).

    Records from one call site share their attribute names, so the answer is cached by
    the tuple of names (a hash of interned strings is cheaper than a set difference).
    """
    shape = tuple(attrs)
    keys = _extra_keys_cache.get(shape)
    if keys is None:
        keys = tuple(
            k for k in shape if k not in STANDARD_ATTRS and (type(k) is not str or k[:1] != "_")
        )  # a key that is not a string (``extra={5: ...}``) ships as its text
        if len(_extra_keys_cache) >= 1024:
            _extra_keys_cache.clear()
        _extra_keys_cache[shape] = keys
    return keys


def extras_of(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The record's ``extra=`` attributes (underscore-prefixed ones are private, left out)."""
    return {k: attrs[k] for k in extra_keys(attrs)}


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
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor
        self.app_name = app_name
        self.environment = environment
        self.schema = schema
        self.static_fields = dict(static_fields)
        self.max_event_bytes = max_event_bytes
        self._heads: dict[tuple[Any, ...], Any] = {}  # orjson Fragments
        self._extras: dict[tuple[str, ...], _Extras] = {}  # by the snapshot's attribute names

    def encode(self, snap: Snapshot) -> bytes | None:
        """One JSON line for ``snap`` (shrunk to ``max_event_bytes``), or None when impossible."""
        chunks, count = self.encode_batch((snap,))
        return chunks[0] if count else None

    def encode_batch(self, snaps: Sequence[Snapshot]) -> tuple[list[bytes], int]:
        """The NDJSON lines of ``snaps`` in chunks joined by newlines, and how many there are.

        A snapshot that cannot be encoded (the sender counts it) has no line.  A common record
        (``tblog`` schema, no exception, stack or formatter) becomes a cached *head* (the
        fields one call site shares on one thread of one process) plus a small *tail* encoded
        by orjson; messages are screened for secrets once per batch.  Any other snapshot, or a
        common one that does not fit this path, takes ``_encode_one``.  Lines are joined
        ``LINES_PER_CHUNK`` at a time as they come (``join_lines``, inline).
        """
        if self.schema != "tblog" or orjson_dumps is None:
            return join_lines(map(self._encode_one, snaps))
        redactor = self.redactor
        messages = [_message_or_empty(a) for a in snaps]  # merged once: screened, then shipped
        flags = redactor.screen(messages) if redactor is not None else None
        heads, shape_of, plain_len, extras = self._heads, _SHAPE_OF, BASE_ATTRS, self._extras
        static, limit, scalars = self.static_fields, self.max_event_bytes, _SCALARS
        odumps, default = orjson_dumps, json_default
        (id_prefix, id_counter), id_block, last_hi = _ids.state(), "", -1
        last_ms, last_sec, second, prefix = -1, -1, "", ""
        digits, digits_z = _DIGITS3, _DIGITS3Z
        row_of, per_chunk = _ROW_OF, LINES_PER_CHUNK
        out: list[bytes] = []
        parts: list[bytes] = []
        count = 0
        for i, a in enumerate(snaps):
            line: bytes | None = None
            try:
                exc_info, stack_info, created, ctx = row_of(a)
                trace_id, span_id, bound = ctx
                message = messages[i]
                if exc_info or stack_info or FMT_KEY in a:
                    raise _Uncommon
                shape = shape_of(a)
                head = heads.get(shape) or self._new_head(a, shape)
                micros = int(created * 1_000_000 + 0.5)
                if micros // 1000 != last_ms:  # a new millisecond: "...T12:00:00.123"
                    last_ms = micros // 1000
                    if last_ms // 1000 != last_sec:
                        last_sec = last_ms // 1000
                        second = iso_utc(last_sec)[:-7]
                    prefix = second + digits[last_ms % 1000]
                number = next(id_counter)
                if number >> 8 != last_hi:  # ids come in blocks of 256 that share 40 bits
                    last_hi = number >> 8
                    id_block = f"{id_prefix}{last_hi & 0xFFFFFFFFFF:010x}"
                secret = False
                extra: dict[str, Any]
                if len(a) == plain_len:
                    extra = {}
                else:
                    names = tuple(a)
                    keys, secret = extras.get(names) or self._new_extras(names)
                    extra = {}
                    for key in keys:
                        extra[key] = a[key]
                if bound or static:
                    extra = {**static, **bound, **extra}
                if redactor is not None:
                    if flags is not None and flags[i]:
                        message = redactor.text(message)
                    if secret or bound or static:
                        extra = redactor.flat(extra)
                    else:
                        for value in extra.values():
                            t = type(value)
                            if t not in scalars and (t is not str or len(value) >= 8):
                                extra = redactor.flat(extra)
                                break
                line = odumps(
                    {
                        "level": head,  # the fragment: the level's value and the head fields
                        "timestamp": prefix + digits_z[micros % 1000],
                        "message": message,
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "event_id": id_block + _HEX2[number & 255],
                        "extra": extra,
                    },
                    default=default,
                )
                if len(line) > limit:
                    line = self._encode_one(a)  # shrunk there
            except Exception:  # noqa: BLE001 - uncommon, built in some other way, refused by
                line = self._encode_one(a)  # orjson: the general path copes
            if line is not None:
                out.append(line)
                if len(out) == per_chunk:
                    parts.append(b"\n".join(out))
                    count += per_chunk
                    out.clear()
        if out:
            parts.append(b"\n".join(out))
            count += len(out)
        return parts, count

    def _new_extras(self, names: tuple[str, ...]) -> _Extras:
        """The ``extra=`` attribute names among a snapshot's, and whether one names a secret."""
        keys = extra_keys(dict.fromkeys(names))
        secret = self.redactor is not None and any(self.redactor.secret_key(k) for k in keys)
        if len(self._extras) >= _HEADS_MAX:
            self._extras.clear()
        found = self._extras[names] = (keys, secret)
        return found

    def _new_head(self, a: Snapshot, shape: tuple[Any, ...]) -> Any:
        """The head of ``a``'s call site as the encoded value of ``"level"``, up to the tail.

        ``{"level": <fragment>, "timestamp": ...}`` then encodes as the whole event in one
        call: orjson copies a fragment's bytes as they are.
        """
        if len(self._heads) >= _HEADS_MAX:
            self._heads.clear()
        encoded = dumps(self._head(a))
        assert encoded.startswith(b'{"level":')  # _head's first field
        head = self._heads[shape] = Fragment(encoded[len(b'{"level":') : -1])
        return head

    def _encode_one(self, snap: Snapshot) -> bytes | None:
        """The general path: the whole event as a dict, redacted, encoded, shrunk to fit."""
        if SHAPED_KEY in snap:
            line = self._json_formatter_line(snap[FMT_KEY] or "")
            if line is not None:
                return line
        event = self.build(snap)
        if self.redactor is not None:
            event = self.redactor.event(event)
        line = dumps(event)
        if len(line) > self.max_event_bytes:
            return shrink_event(event, line, self.max_event_bytes)
        return line

    def _json_formatter_line(self, text: str) -> bytes | None:
        """A python-json-logger formatter shaped the event: ship its fields as they are."""
        if "\n" in text or self.redactor is not None:
            # an indenting formatter, or redaction: the event is re-encoded below as one line
            return self._reencoded(text)
        line = text.encode("utf-8", "replace")
        return line if len(line) <= self.max_event_bytes else self._reencoded(text)

    def _reencoded(self, text: str) -> bytes | None:
        """A JSON formatter's output parsed, redacted and encoded as one line (None: not JSON)."""
        try:
            event = json.loads(text)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        if self.redactor is not None:
            scrubbed = self.redactor.mapping(event)
            for key in _ID_FIELDS & event.keys():  # ids and times are not secrets
                scrubbed[key] = event[key]
            event = scrubbed
        line = dumps(event)
        if len(line) <= self.max_event_bytes:
            return line
        return shrink_event(event, line, self.max_event_bytes)

    @staticmethod
    def formatted_message(snap: Snapshot) -> str | None:
        fmt = snap_formatter(snap)
        if isinstance(fmt, logging.Formatter):
            message = snap_message(snap)
            exc = snap_exc(snap)
            attrs = dict(snap)
            attrs["msg"] = message
            attrs["args"], attrs["exc_info"] = None, None
            attrs["exc_text"] = exc.stacktrace if exc is not None else None
            try:
                return fmt.format(logging.makeLogRecord(attrs))
            except Exception as exc:  # noqa: BLE001
                return f"{message} [tblog: formatter failed: {type(exc).__name__}]"
        return fmt if isinstance(fmt, str) else None

    # The ``tblog`` schema in two parts.  The *head* holds the fields that records from one
    # call site, on one thread of one process, share (logger, level, code location, process
    # and thread); the *tail* the ones that change with every record (time, message, trace
    # context, event id, extras).  ``encode_batch`` encodes each head once and caches it.

    def _head(self, a: Snapshot) -> dict[str, Any]:
        return {
            "level": a["levelname"],
            "level_no": a["levelno"] or 0,
            "logger": a["name"],
            "app_name": self.app_name,
            "environment": self.environment,
            "hostname": HOSTNAME,
            "process_id": a["process"] or 0,
            "process_name": a["processName"] or "",
            "thread_id": a["thread"] or 0,
            "thread_name": a["threadName"] or "",
            "module": a["module"] or "",
            "func_name": a["funcName"] or "",
            "lineno": a["lineno"] or 0,
            "pathname": a["pathname"] or "",
        }

    def _extra(self, a: Snapshot) -> dict[str, Any]:
        keys = extra_keys(a)
        extra = {k: a[k] for k in keys} if keys else {}
        bound = a["exc_text"][2]
        if bound or self.static_fields:
            extra = {**self.static_fields, **bound, **extra}
        return extra

    def build(self, snap: Snapshot) -> dict[str, Any]:
        if self.schema == "tinybird-python-sdk":
            return self._build_sdk(snap)
        a = snap
        try:
            event: dict[str, Any] = self._head(a)
            event["timestamp"] = iso_utc(a["created"])
            event["message"] = snap_message(a)
            event["trace_id"], event["span_id"], _ = a["exc_text"]
            event["event_id"] = _ids.next()
        except KeyError:  # a record built without LogRecord.__init__: fill in the blanks
            return self.build({**_RECORD_DEFAULTS, **a})
        exc = snap_exc(a)
        if exc is not None:
            event["exception"] = {
                "type": exc.type,
                "message": exc.message,
                "stacktrace": exc.stacktrace,
            }
        if a.get("stack_info"):
            event["stack_info"] = a["stack_info"]
        event["extra"] = self._extra(a)
        formatted = self.formatted_message(a)
        if formatted is not None:
            event["formatted_message"] = formatted
        return event

    def _build_sdk(self, snap: Snapshot) -> dict[str, Any]:
        """The field names of the Tinybird Python SDK's ``TinybirdLoggingHandler``."""
        a = snap
        message = snap_message(a)
        trace_id, span_id, bound = a["exc_text"]
        exc = snap_exc(a)
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
        args = a.get(ARGS_KEY)
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
