"""The sender's half of a log record's way out: snapshots become NDJSON lines.

``EventBuilder`` (sender thread only) turns the snapshots ``tblog._event.snapshot`` took into
events in the ``tblog`` schema (the ``tb_logs`` row of ``tblog._event.tb_logs``) or in the schema
of the Tinybird Python SDK's handler, redacts them and encodes each as one NDJSON line within
``max_event_bytes``; ``encode_batch`` is its fast path for the common record, a loop in
Python here, the same loop compiled in ``tblog._speedups`` when that optional module was
built (see ``tblog._event.compiled``; tests hold the two to the same bytes).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from tblog._event import tb_logs
from tblog._event.compiled import SPEEDUPS
from tblog._event.encode import (
    LINES_PER_CHUNK,
    Fragment,
    dumps,
    join_lines,
    json_default,
    orjson_dumps,
    shrink_event,
)
from tblog._event.gate import RATE_KEY
from tblog._event.redact import Redactor
from tblog._event.snapshot import (
    ARGS_KEY,
    BASE_ATTRS,
    FMT_KEY,
    SDK_KEY,
    SHAPED_KEY,
    SdkOriginals,
    Snapshot,
    extra_keys,
    snap_exc,
    snap_formatter,
    snap_message,
)
from tblog._event.tb_logs import ids, iso_utc


class _Uncommon(Exception):  # noqa: N818 - a branch, not an error
    """A snapshot that takes the general path (``EventBuilder.encode_batch``)."""


def _message_or_empty(snap: Snapshot) -> str:
    """``snap_message``, or "" for a snapshot without a message (the general path copes)."""
    try:
        return snap_message(snap)
    except (KeyError, TypeError):
        return ""


#: What ``build`` assumes of a record that lacks an attribute LogRecord.__init__ sets.
_RECORD_DEFAULTS: dict[str, Any] = {
    "created": 0.0, "levelname": "NOTSET", "levelno": 0, "name": "", "process": 0,
    "processName": "", "thread": 0, "threadName": "", "module": "", "funcName": "",
    "lineno": 0, "pathname": "",
}  # fmt: skip

#: Fields a JSON formatter's event keeps as they are under redaction.
_ID_FIELDS = frozenset(("trace_id", "span_id", "event_id", "timestamp", "created", "asctime"))

#: Record attributes the SDK's rows copy as they are, in its order: the call site (before
#: ``created`` and ``asctime``), then the timing, thread and process (before ``message``).
_SDK_SITE = ("pathname", "filename", "module", "lineno", "funcName")
_SDK_RUN = ("msecs", "relativeCreated", "thread", "threadName", "process", "processName")
#: The record attributes a snapshot reuses (``Snapshot``); their own values are in ``SDK_KEY``.
_SDK_SLOTS = ("msg", "args", "exc_info", "exc_text")
_SKIP = object()
#: What the SDK's handler formats a record with when it has no formatter of its own.
_PLAIN_FORMATTER = logging.Formatter()

_HEADS_MAX = 4096  # cached event heads per builder (call site x thread x process)
#: The extra attribute names of a snapshot and whether one of them is a secret's.
_Extras = tuple[tuple[str, ...], bool]
_SCALARS = frozenset((int, float, bool, type(None)))
_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))  # milliseconds of a timestamp
_DIGITS3Z = tuple(f"{i:03d}Z" for i in range(1000))  # its last three digits
_HEX2 = tuple(f"{i:02x}" for i in range(256))  # the last byte of an event id
#: The fields of a snapshot that make its tail, or send it down the general path.
_ROW_OF = operator.itemgetter("exc_info", "stack_info", "created", "exc_text")
#: The record fields a head is made of.
_SHAPE_KEYS = (
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
#: ... read in one call (KeyError: not a full record).
_SHAPE_OF = operator.itemgetter(*_SHAPE_KEYS)


class _Batch:
    """What the compiled loop (``tblog._speedups.encode_lines``) reads of its builder, for
    one batch: the caches, the callbacks for what is not plain, the id block."""

    __slots__ = (
        "extra_json", "extras", "fallback", "heads", "id_counter", "id_prefix", "limit",
        "new_extras", "new_head", "per_chunk", "python_line", "rate_key", "redact",
        "redact_text", "second", "shape_keys", "static", "value_json",
    )  # fmt: skip

    def __init__(self, builder: EventBuilder) -> None:
        redactor = builder.redactor
        self.heads = builder._head_bytes
        self.new_head = builder._new_head_bytes
        self.extras = builder._extras
        self.new_extras = builder._new_extras
        self.extra_json = builder._extra_json
        self.fallback = builder._encode_one
        self.python_line = builder._python_line
        self.redact = redactor is not None
        self.redact_text = redactor.text if redactor is not None else str
        self.static = builder.static_fields
        self.limit = builder.max_event_bytes
        self.id_prefix, self.id_counter = ids.state()
        self.second = _second_text
        self.value_json = _value_json
        self.rate_key = RATE_KEY  # (FMT_KEY and BASE_ATTRS: tblog._event.compiled configures)
        self.per_chunk, self.shape_keys = LINES_PER_CHUNK, _SHAPE_KEYS


def _second_text(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a timestamp (its digits follow)."""
    return iso_utc(second)[:-7]


def _value_json(value: Any) -> bytes:
    return orjson_dumps(value, default=json_default)  # type: ignore[no-any-return]


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
        self._head_bytes: dict[tuple[Any, ...], bytes] = {}  # the compiled loop's heads
        #: ``encode_batch`` runs the compiled loop (tests turn it off to run the Python one)
        self.compiled = SPEEDUPS is not None
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
        if self.compiled and SPEEDUPS is not None:
            items = snaps if type(snaps) is list else list(snaps)
            merged = SPEEDUPS.merge_messages(items, _message_or_empty)
            screened = redactor.screen(merged) if redactor is not None else None
            chunks, lines = SPEEDUPS.encode_lines(items, merged, screened, _Batch(self))
            return chunks, lines
        messages = [_message_or_empty(a) for a in snaps]  # merged once: screened, then shipped
        flags = redactor.screen(messages) if redactor is not None else None
        return self._encode_loop(snaps, messages, flags)

    def _python_line(self, snap: Snapshot, message: str, flag: bool | None) -> bytes | None:
        """The Python loop's line for one snapshot the compiled loop leaves to it (a message or
        trace id that is not text, a time it does not take on), or None."""
        chunks, count = self._encode_loop((snap,), [message], None if flag is None else [flag])
        return chunks[0] if count else None

    def _encode_loop(
        self, snaps: Sequence[Snapshot], messages: list[str], flags: list[bool] | None
    ) -> tuple[list[bytes], int]:
        """``encode_batch``'s loop in Python (``messages`` merged, ``flags`` screened)."""
        redactor = self.redactor
        heads, shape_of, plain_len, extras = self._heads, _SHAPE_OF, BASE_ATTRS, self._extras
        static, limit, final_extra = self.static_fields, self.max_event_bytes, self._final_extra
        odumps, default = orjson_dumps, json_default
        (id_prefix, id_counter), id_block, last_hi = ids.state(), "", -1
        last_ms, last_sec, second, prefix = -1, -1, "", ""
        digits, digits_z = _DIGITS3, _DIGITS3Z
        row_of, per_chunk = _ROW_OF, LINES_PER_CHUNK
        out: list[bytes] = []
        parts: list[bytes] = []
        count = 0
        last_shape: tuple[Any, ...] | None = None  # consecutive records of one call site
        last_names: tuple[str, ...] | None = None
        keys: tuple[str, ...] = ()
        found = False
        # One dict for every line, its values replaced (cheaper than a new dict each time);
        # "level" holds the head fragment: the level's value and the head fields.
        event: dict[str, Any] = dict.fromkeys(
            ("level", "timestamp", "message", "trace_id", "span_id", "event_id", "extra")
        )
        for i, a in enumerate(snaps):
            line: bytes | None = None
            try:
                exc_info, stack_info, created, ctx = row_of(a)
                trace_id, span_id, bound = ctx
                message = messages[i]
                if exc_info or stack_info or FMT_KEY in a:
                    raise _Uncommon
                shape = shape_of(a)
                if shape != last_shape:
                    event["level"] = heads.get(shape) or self._new_head(a, shape)
                    last_shape = shape
                secret = False
                extra: dict[str, Any]
                if len(a) == plain_len:
                    extra = {}
                else:
                    if RATE_KEY in a:  # kept by sampling: its row has a sample_rate
                        raise _Uncommon
                    names = tuple(a)
                    if names != last_names:
                        keys, found = extras.get(names) or self._new_extras(names)
                        last_names = names
                    secret = found
                    extra = {}
                    for key in keys:
                        extra[key] = a[key]
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
                if redactor is not None and flags is not None and flags[i]:
                    message = redactor.text(message)
                if bound or static or redactor is not None:
                    extra = final_extra(extra, bound, secret)
                event["timestamp"] = prefix + digits_z[micros % 1000]
                event["message"] = message
                event["trace_id"] = trace_id
                event["span_id"] = span_id
                event["event_id"] = id_block + _HEX2[number & 255]
                event["extra"] = extra
                line = odumps(event, default=default)
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

    def _extra_json(self, extra: dict[str, Any], bound: Mapping[str, Any], secret: bool) -> bytes:
        """The compiled loop's ``extra`` when it is not plain, encoded."""
        return orjson_dumps(  # type: ignore[no-any-return]
            self._final_extra(extra, bound, secret), default=json_default
        )

    def _final_extra(
        self, extra: dict[str, Any], bound: Mapping[str, Any], secret: bool
    ) -> dict[str, Any]:
        """A record's ``extra`` (``secret``: a key names a secret) with the static and bound
        fields, redacted where it may hold a secret: a secret's name, bound or static fields,
        a value other than a number or a text under 8 characters."""
        static, redactor = self.static_fields, self.redactor
        if bound or static:
            extra = {**static, **bound, **extra}
        if redactor is not None:
            if secret or bound or static:
                extra = redactor.flat(extra)
            else:
                for value in extra.values():
                    t = type(value)
                    if t not in _SCALARS and (t is not str or len(value) >= 8):
                        extra = redactor.flat(extra)
                        break
        return extra

    def _new_head_bytes(self, a: Snapshot, shape: tuple[Any, ...]) -> bytes:
        """The compiled loop's head: ``{"level":`` and the head fields, up to the tail."""
        if len(self._head_bytes) >= _HEADS_MAX:
            self._head_bytes.clear()
        head = self._head_bytes[shape] = dumps(self._head(a))[:-1]
        return head

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
        return tb_logs.head(
            a["levelname"], a["levelno"] or 0, a["name"], self.app_name, self.environment,
            a["process"] or 0, a["processName"] or "", a["thread"] or 0, a["threadName"] or "",
            a["module"] or "", a["funcName"] or "", a["lineno"] or 0, a["pathname"] or "",
        )  # fmt: skip

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
            head = self._head(a)
            created, (trace_id, span_id, _) = a["created"], a["exc_text"]
        except KeyError:  # a record built without LogRecord.__init__: fill in the blanks
            return self.build({**_RECORD_DEFAULTS, **a})
        event = tb_logs.finish(
            head, iso_utc(created), snap_message(a), trace_id, span_id, snap_exc(a),
            a.get("stack_info"), self._extra(a), a.get(RATE_KEY),
        )  # fmt: skip
        formatted = self.formatted_message(a)
        if formatted is not None:
            event["formatted_message"] = formatted
        return event

    def _build_sdk(self, snap: Snapshot) -> dict[str, Any]:
        """The row of the Tinybird Python SDK's ``TinybirdLoggingHandler``, field by field.

        As its ``log_record_to_dict``: the record's attributes it names, ``exc_info`` as
        ``str(type)``/``str(value)`` and the traceback text the record carried (None unless
        an earlier handler formatted it), ``args`` and ``stack_info`` when set, and in
        ``extra`` every other public attribute of the record (``msg``, ``levelno``,
        ``exc_text``, ``taskName``..., and the empty ``args``/``exc_info``/``stack_info``).
        tblog adds its bound fields, trace ids and a sampled record's ``sample_rate``
        (that layout has no column for it) to ``extra``, ``static_fields`` in front.
        """
        a = snap
        message = snap_message(a)
        trace_id, span_id, bound = a["exc_text"]
        exc = snap_exc(a)
        orig = a.get(SDK_KEY)
        created = a["created"]
        base: dict[str, Any] = {"name": a["name"], "level": a["levelno"],
                                "levelname": a["levelname"]}  # fmt: skip
        for key in _SDK_SITE:
            base[key] = a.get(key)
        base["created"] = created
        base["asctime"] = _dt.datetime.fromtimestamp(created).isoformat()
        for key in _SDK_RUN:
            base[key] = a.get(key)
        base["message"] = message
        if isinstance(orig, SdkOriginals):
            if orig.exc_head is not None:
                base["exc_info"] = {"type": orig.exc_head[0], "value": orig.exc_head[1],
                                    "traceback": orig.exc_text or None}  # fmt: skip
        elif exc is not None:
            base["exc_info"] = {
                "type": f"<class '{exc.type}'>",
                "value": exc.message,
                "traceback": exc.stacktrace,
            }
        args = a.get(ARGS_KEY)
        if args:
            base["args"] = args if isinstance(args, Mapping) else list(args)
        if a.get("stack_info"):
            base["stack_info"] = a["stack_info"]
        event: dict[str, Any] = dict(self.static_fields)
        event.update(base)
        extra = {**bound, **self._sdk_extra(a, base, orig)}
        if trace_id:
            extra.setdefault("trace_id", trace_id)
        if span_id:
            extra.setdefault("span_id", span_id)
        rate = a.get(RATE_KEY)
        if rate is not None:  # kept by sampling: the SDK's layout has no sample_rate column
            extra["sample_rate"] = rate
        if extra:
            event["extra"] = extra
        formatted = self.formatted_message(snap)
        if formatted is None:  # no formatter: what the SDK's handler.format() gives then
            formatted = self.formatted_message({**snap, FMT_KEY: _PLAIN_FORMATTER})
        event["formatted_message"] = formatted if formatted is not None else message
        event["app_name"] = self.app_name
        return event

    @staticmethod
    def _sdk_extra(a: Snapshot, base: Mapping[str, Any], orig: object) -> dict[str, Any]:
        """The SDK's ``extra``: the record's public attributes its row does not name."""
        if isinstance(orig, SdkOriginals):
            slots = {"msg": orig.msg, "args": a.get(ARGS_KEY), "exc_info": orig.exc_info,
                     "exc_text": orig.exc_text}  # fmt: skip
        else:  # a snapshot taken for the tblog schema: its reused slots say nothing
            slots = dict.fromkeys(_SDK_SLOTS, _SKIP)
        extra: dict[str, Any] = {}
        for key, value in a.items():
            name = key if type(key) is str else str(key)
            if name[:1] == "_" or name in base:
                continue
            own = slots.get(name, value)
            if own is not _SKIP:
                extra[name] = own
        return extra
