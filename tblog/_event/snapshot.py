"""The caller's half of a log record's way out: the snapshot, and what it is made of.

On the caller's thread (``snapshot``, and the inline copy in ``TinybirdLoggingHandler.emit``)
a record becomes the cheapest copy that is independent of what happens after the logging call
returns: the merged message, a shallow copy of the record's attributes, the exception as
text (so the traceback and its frames are released at once) and the trace context.  This
module also owns what the snapshot is made of: the standard attributes and the ``extra=``
ones, formatter kinds, the exception as text, and ``snapshot_size``, the one memory
estimate the buffer bounds count (the handler's inline sum is checked against it).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any, NamedTuple

from tblog import context
from tblog._event.encode import jsonable, to_text

# Attributes every LogRecord has (plus the ones formatters add, and tblog's own
# carriers for the queue path): anything else in ``record.__dict__`` is an extra.
CTX_ATTR = "_tblog_ctx"
STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", CTX_ATTR}
)

BASE_ATTRS = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
SNAPSHOT_OVERHEAD = 1600  # bytes: a copied record dict and the strings around it

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


# Private keys a snapshot may carry (underscored: never taken for ``extra=`` attributes).
FMT_KEY = "_tblog_fmt"  # formatter output (str), or the plain Formatter when exc_info is taken
SHAPED_KEY = "_tblog_shaped"  # True: FMT_KEY is the event itself (python-json-logger)
ARGS_KEY = "_tblog_args"  # the record's own args (the tinybird-python-sdk schema ships them)
SDK_KEY = "_tblog_sdk"  # an ``SdkOriginals``: what else of the record that schema ships as is


class SdkOriginals(NamedTuple):
    """The record's own slots the snapshot reuses, as the Tinybird SDK's rows show them.

    ``exc_head``: ``(str(type), str(value))`` of a truthy ``exc_info`` (else None, and
    ``exc_info`` is the falsy value itself); ``exc_text``: as the record had it (None unless
    an earlier handler formatted the record).
    """

    msg: Any
    exc_head: tuple[str, str] | None
    exc_info: Any
    exc_text: str | None


def sdk_originals(record: logging.LogRecord) -> SdkOriginals:
    """What ``log_record_to_dict`` of the Tinybird SDK reads from the slots a snapshot reuses."""
    msg = record.msg
    if type(msg) is not str:
        msg = jsonable(msg)
    info = record.exc_info
    head = None
    if info:
        try:
            head = (to_text(info[0]), to_text(info[1]))
        except Exception:  # noqa: BLE001 - not a (type, value, traceback) triple
            head = (to_text(type(info)), to_text(info))
        info = None
    text = record.exc_text if isinstance(record.exc_text, str) else None
    return SdkOriginals(msg, head, info, text)


def _shown_exc(record: logging.LogRecord) -> ExcInfo | None:
    """What ``logging.Formatter`` prints for an ``exc_info`` that ``exc_of`` finds empty
    (``(None, None, None)``: ``exc_info=True`` outside an ``except`` block)."""
    try:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")  # type: ignore[misc]
    except Exception:  # noqa: BLE001
        return None
    return ExcInfo("", "", text) if text else None


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
        attrs[SDK_KEY] = sdk_originals(record)
        if exc is None and record.exc_info:
            exc = _shown_exc(record)
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
