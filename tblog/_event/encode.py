"""JSON that never fails, NDJSON bodies, gzip and the per-event size cap.

``dumps`` takes any Python value and returns one line of valid UTF-8 JSON:
orjson when available (fast path), then a sanitising pass that turns what JSON
cannot hold into something it can: non-string keys become strings, bytes are
decoded, lone surrogates become U+FFFD, circular references and very deep nesting
are cut, NaN and infinities become null, huge integers become strings, and any
other object becomes its ``str()`` (else its ``repr()``, else a placeholder).
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import os
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

try:  # the fast path; the stdlib json is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency on CPython
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "LINES_PER_CHUNK",
    "MAX_DEPTH",
    "Fragment",
    "dumps",
    "gzip_bytes",
    "gzip_lines",
    "join_lines",
    "json_default",
    "jsonable",
    "orjson_dumps",
    "shrink_event",
    "to_text",
]

MAX_DEPTH = 32
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_SURROGATES = re.compile("[\ud800-\udfff]")
TRUNCATION_MARK = "…[truncated]"

if _orjson is not None:
    _ORJSON_OPTS = _orjson.OPT_NON_STR_KEYS


def to_text(value: object) -> str:
    """``str(value)``, else ``repr(value)``, else a placeholder naming the type. Never raises."""
    try:
        text = str(value)
        if isinstance(text, str):
            return text
    except Exception:  # noqa: BLE001, S110 - user __str__ may raise anything
        pass
    try:
        return repr(value)
    except Exception:  # noqa: BLE001
        return f"<unrepresentable {type(value).__name__} object>"


def json_default(obj: Any) -> Any:
    """orjson/json ``default=`` hook for types JSON has no form for."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, (Decimal, uuid.UUID, PurePath)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value if isinstance(obj.value, (str, int, float)) else obj.name
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {to_text(obj)}"
    tolist = getattr(type(obj), "tolist", None)  # numpy arrays and scalars, pandas objects
    if callable(tolist):
        return tolist(obj)
    return to_text(obj)


def jsonable(value: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """Return a copy of ``value`` made only of JSON types (dict, list, str, int, float, bool, None).

    Never raises and never mutates ``value``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value) if _SURROGATES.search(value) else value
    if isinstance(value, int):
        return int(value) if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _depth >= MAX_DEPTH:
        return "<max depth exceeded>"
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        ident = id(value)
        if ident in _seen:
            return "<circular reference>"
        seen = _seen | {ident}
        try:
            if isinstance(value, Mapping):
                return {_key(k): jsonable(v, _depth + 1, seen) for k, v in list(value.items())}
            return [jsonable(v, _depth + 1, seen) for v in list(value)]
        except Exception:  # noqa: BLE001 - a broken container becomes its text
            return jsonable(to_text(value), _depth + 1, seen)
    try:
        converted = json_default(value)
    except Exception:  # noqa: BLE001
        converted = to_text(value)
    if isinstance(converted, str):
        return jsonable(converted)
    return jsonable(converted, _depth + 1, _seen | {id(value)})


def _key(key: object) -> str:
    if isinstance(key, str):
        return jsonable(key)  # type: ignore[no-any-return]
    if isinstance(key, (bytes, bytearray)):
        return jsonable(bytes(key).decode("utf-8", "replace"))  # type: ignore[no-any-return]
    if key is None or isinstance(key, bool):  # as json and orjson name them
        return "null" if key is None else ("true" if key else "false")
    return jsonable(to_text(key))  # type: ignore[no-any-return]


def _dumps_std(value: Any) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=json_default
    ).encode("utf-8")


#: orjson's ``Fragment`` (already encoded JSON that orjson copies as it is), or None without
#: orjson (then nothing may use it).
Fragment: Any = getattr(_orjson, "Fragment", None)


#: ``orjson.dumps`` itself (None without orjson), for hot loops that call it as
#: ``orjson_dumps(value, default=json_default)`` and fall back to ``dumps`` when it raises.
#: Without ``dumps``'s options it is twice as fast, and refuses what they would allow
#: (dict keys that are not strings); numpy values go through ``json_default``.
orjson_dumps: Any = getattr(_orjson, "dumps", None)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as one line of compact UTF-8 JSON. Never raises."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value, default=json_default, option=_ORJSON_OPTS)
        except Exception:  # noqa: BLE001, S110 - fall through to the sanitising path
            pass
    try:
        return _dumps_std(jsonable(value))
    except Exception:  # noqa: BLE001 - last resort: the text of the value, as a JSON string
        return _dumps_std(jsonable(to_text(value)))


def _isal() -> Any:
    """python-isal's zlib (the ``speedups`` extra), unless ``TBLOG_GZIP=zlib`` asks for zlib's."""
    if os.environ.get("TBLOG_GZIP", "").lower() == "zlib":
        return None
    try:
        from isal import isal_zlib  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return isal_zlib


_fast_gzip = _isal()


#: zlib's ``memLevel`` for request bodies (see ``gzip_lines``).
ZLIB_MEM_LEVEL = 6

#: Encoded lines are kept joined by newlines in chunks of this many: orjson's output keeps
#: the buffer it grew (a 300-byte line can hold 4 KB), and chunks of this size come and go
#: without the system's help (a batch's body is never one megabyte-sized buffer).
LINES_PER_CHUNK = 32


def join_lines(lines: Iterable[bytes | None]) -> tuple[list[bytes], int]:
    """``lines`` (None: no line) in chunks of ``LINES_PER_CHUNK`` joined by newlines, and how
    many lines there are."""
    kept = [line for line in lines if line is not None]
    chunks = [
        b"\n".join(kept[i : i + LINES_PER_CHUNK]) for i in range(0, len(kept), LINES_PER_CHUNK)
    ]
    return chunks, len(kept)


def gzip_bytes(data: bytes, level: int = 1) -> bytes:
    """Gzip ``data`` (level 1: logs compress well and CPU on the sender thread matters)."""
    return gzip_lines([data], b"", level)


def gzip_lines(chunks: list[bytes], end: bytes = b"\n", level: int = 1) -> bytes:
    """Gzip ``chunk + end`` for each of ``chunks``, as one stream, without joining them first.

    The compressed output is a fortieth of a batch of log lines: no megabyte-sized buffer is
    made (and given back to the system, and faulted in again for the next batch).
    """
    if _fast_gzip is not None:
        compressor = _fast_gzip.compressobj(level, zlib.DEFLATED, 31)
    else:
        # memLevel 6: zlib's hash table a quarter of its default, held in the cache while it
        # runs: 15% less CPU for log lines, and 3% larger output (measured: 41x against 42x)
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31, ZLIB_MEM_LEVEL)
    out = []
    for chunk in chunks:
        out.append(compressor.compress(chunk))
        if end:
            out.append(compressor.compress(end))
    out.append(compressor.flush())
    return b"".join(out)


def truncate_text(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8, marking the cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    keep = max(0, max_bytes - len(TRUNCATION_MARK.encode()))
    return raw[:keep].decode("utf-8", "ignore") + TRUNCATION_MARK


def shrink_event(event: dict[str, Any], line: bytes, max_bytes: int) -> bytes | None:
    """``event`` encoded in at most ``max_bytes`` with ``truncated: true``; None if impossible.

    The largest text fields are cut first (message, formatted message, exception
    text, then each ``extra`` value); ``event`` itself is not modified.
    """
    shrunk = dict(event)
    shrunk["truncated"] = True
    share = max(64, max_bytes // 8)
    for _ in range(16):
        excess = len(line) - max_bytes
        if excess <= 0:
            return line
        field, size, container = _largest_text(shrunk)
        if field is None or size <= 64:
            break
        # Let the largest field absorb the whole excess if it stays above its fair share;
        # otherwise cut it to the share and move on to the next largest.
        needed = size - excess - 256
        container[field] = truncate_text(container[field], needed if needed >= share else share)
        line = dumps(shrunk)
    if len(line) <= max_bytes:
        return line
    # Last resort: keep the identifying fields and a short message only.
    minimal = {
        k: v for k, v in shrunk.items() if not isinstance(v, (dict, list, str)) or k in _KEEP
    }
    minimal["message"] = truncate_text(to_text(shrunk.get("message", "")), max_bytes // 4)
    exc = shrunk.get("exception")
    if isinstance(exc, dict) and isinstance(exc.get("type"), str):
        minimal["exception"] = {"type": exc["type"][:200]}
    minimal["truncated"] = True
    line = dumps(minimal)
    return line if len(line) <= max_bytes else None


_KEEP = frozenset(
    ("timestamp", "level", "logger", "app_name", "environment", "hostname", "trace_id",
     "span_id", "event_id", "name", "levelname", "process_name", "thread_name", "module",
     "func_name", "pathname")
)  # fmt: skip


def _largest_text(event: dict[str, Any]) -> tuple[str | None, int, dict[str, Any]]:
    """Find the longest string among the event's fields, its exception and its extra."""
    best: tuple[str | None, int, dict[str, Any]] = (None, 0, event)
    containers: list[dict[str, Any]] = [event]
    for nested in ("exception", "exc_info", "extra"):
        value = event.get(nested)
        if isinstance(value, dict):
            copy = dict(value)
            event[nested] = copy
            containers.append(copy)
    for container in containers:
        for key, value in container.items():
            text = value
            if not isinstance(text, str):
                if container is not event and isinstance(text, (dict, list)):
                    container[key] = text = dumps(text).decode("utf-8")
                else:
                    continue
            size = len(text)
            if size > best[1]:
                best = (key, size, container)
    return best
