"""Trace context and bound fields, carried by :mod:`contextvars`.

Everything here is correct per thread and per asyncio task: a new thread starts
with an empty context, and an asyncio task starts with a copy of the context of
the code that created it.  Handlers read these values on the caller's thread at
the moment of the logging call, so a record keeps the context it was logged in
even when it is shipped later from another thread or process.

When OpenTelemetry is in use and a span is current, events carry that span's
trace and span ids instead (see ``capture``); nothing here imports OpenTelemetry.

All three (trace id, span id, bound fields) live in one ``ContextVar`` as an
immutable ``(trace_id, span_id, bound)`` tuple, replaced whole on every change, so
capturing the context at a logging call is a single read.  Bound fields are an
immutable snapshot (a fresh ``dict`` on every change, never mutated afterwards).
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TypeVar, cast

__all__ = [
    "bind",
    "bound",
    "get_bound",
    "get_span_id",
    "get_trace_id",
    "new_span_id",
    "new_trace_id",
    "set_span_id",
    "set_trace_id",
    "trace",
    "unbind",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: Once this module is imported, an OpenTelemetry span may be current: the producers then take
#: the context from ``capture()`` (which looks for one), else from ``current()``.
OTEL_MODULE = "opentelemetry.trace"

Context = tuple[str, str, Mapping[str, Any]]  # (trace_id, span_id, bound fields)
_ctx: ContextVar[Context] = ContextVar("tblog_context", default=("", "", _EMPTY))

F = TypeVar("F", bound=Callable[..., Any])


_rng = random.Random()  # seeded from os.urandom
_rng_pid = os.getpid()


def _random_bits(k: int) -> int:
    """``k`` random bits from this process's own generator.

    A fork copies a generator's state: ``random`` reseeds its own in an at-fork hook, which
    a fork that runs none (uWSGI's, without ``--py-call-osafterfork``) skips, and every
    worker would then draw the same trace ids.  The pid check seeds a child's afresh.
    """
    global _rng, _rng_pid
    if os.getpid() != _rng_pid:
        _rng, _rng_pid = random.Random(), os.getpid()
    return _rng.getrandbits(k)


def new_trace_id() -> str:
    """Return a new random trace id: 32 lowercase hex digits, as in W3C trace context."""
    return f"{_random_bits(128) or 1:032x}"


def new_span_id() -> str:
    """Return a new random span id: 16 lowercase hex digits, as in W3C trace context."""
    return f"{_random_bits(64) or 1:016x}"


def get_trace_id() -> str:
    """Return the current trace id, or ``""`` when none is set."""
    return _ctx.get()[0]


def get_span_id() -> str:
    """Return the current span id, or ``""`` when none is set."""
    return _ctx.get()[1]


def set_trace_id(trace_id: str | None) -> None:
    """Set the current trace id; ``None`` (or ``""``) clears it."""
    value = _as_id(trace_id, "trace_id")
    _, span_id, fields = _ctx.get()
    _ctx.set((value, span_id, fields))


def set_span_id(span_id: str | None) -> None:
    """Set the current span id; ``None`` (or ``""``) clears it."""
    value = _as_id(span_id, "span_id")
    trace_id, _, fields = _ctx.get()
    _ctx.set((trace_id, value, fields))


def get_bound() -> Mapping[str, Any]:
    """Return a read-only view of the fields bound in the current context."""
    return _ctx.get()[2]


def bind(**fields: Any) -> None:
    """Bind ``fields`` to the current context; they appear in every event's ``extra``."""
    if fields:
        trace_id, span_id, current = _ctx.get()
        merged = dict(current)
        merged.update(fields)
        _ctx.set((trace_id, span_id, MappingProxyType(merged)))


def unbind(*keys: str) -> None:
    """Remove ``keys`` from the fields bound in the current context (missing keys are ignored)."""
    trace_id, span_id, current = _ctx.get()
    if any(key in current for key in keys):
        kept = MappingProxyType({k: v for k, v in current.items() if k not in keys})
        _ctx.set((trace_id, span_id, kept))


@contextmanager
def bound(**fields: Any) -> Iterator[Mapping[str, Any]]:
    """Bind ``fields`` for the duration of a ``with`` block, then restore the previous fields.

    Only the bound fields are restored: a trace id set inside the block stays set.
    """
    trace_id, span_id, previous = _ctx.get()
    merged = dict(previous)
    merged.update(fields)
    view = MappingProxyType(merged)
    _ctx.set((trace_id, span_id, view))
    try:
        yield view
    finally:
        trace_id, span_id, _ = _ctx.get()
        _ctx.set((trace_id, span_id, previous))


class trace:  # noqa: N801 - used like a function: ``with tblog.trace():`` / ``@tblog.trace()``
    """Run a block, a function or a coroutine function inside a trace.

    ``trace_id`` defaults to a new random id; ``span_id`` defaults to a new span id.
    The previous trace and span ids are restored on exit, also when the block raises.
    As a decorator, every call gets its own trace (a new id per call unless one is given).
    """

    __slots__ = ("_span_arg", "_tokens", "_trace_arg", "span_id", "trace_id")

    def __init__(self, trace_id: str | None = None, span_id: str | None = None) -> None:
        self._trace_arg = _as_id(trace_id, "trace_id")
        self._span_arg = _as_id(span_id, "span_id")
        self.trace_id = self._trace_arg
        self.span_id = self._span_arg
        self._tokens: list[tuple[str, str]] = []  # the ids to restore, one pair per entry

    def __enter__(self) -> trace:
        self.trace_id = self._trace_arg or new_trace_id()
        self.span_id = self._span_arg or new_span_id()
        previous_trace, previous_span, fields = _ctx.get()
        self._tokens.append((previous_trace, previous_span))
        _ctx.set((self.trace_id, self.span_id, fields))
        return self

    def __exit__(self, *exc_info: object) -> None:
        previous_trace, previous_span = self._tokens.pop()
        _ctx.set((previous_trace, previous_span, _ctx.get()[2]))  # fields bound inside stay

    def __call__(self, func: F) -> F:
        trace_arg, span_arg = self._trace_arg, self._span_arg
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with trace(trace_arg, span_arg):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with trace(trace_arg, span_arg):
                return func(*args, **kwargs)

        return cast(F, wrapper)

    def __repr__(self) -> str:
        return f"trace(trace_id={self.trace_id!r}, span_id={self.span_id!r})"


def _as_id(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    return value


#: ``(trace_id, span_id, bound_fields)`` of the current context, without the OpenTelemetry
#: check of ``capture`` (internal, hot path: callers check that OpenTelemetry is not imported).
current: Callable[[], Context] = _ctx.get


def capture() -> tuple[str, str, Mapping[str, Any]]:
    """Return ``(trace_id, span_id, bound_fields)`` of the current context (internal, hot path).

    When OpenTelemetry is in use (its ``opentelemetry.trace`` module is imported)
    and a valid span is current, that span's ids are the event's.
    """
    otel = sys.modules.get(OTEL_MODULE)
    if otel is not None and _otel_span_may_be_current():
        ids = _otel_ids(otel)
        if ids is not None:
            return ids[0], ids[1], _ctx.get()[2]
    return _ctx.get()


#: ``(ContextVar, key)`` where OpenTelemetry's default runtime context keeps the current span,
#: found once; False when it keeps it elsewhere (then the public API is asked every time).
_otel_slot: tuple[ContextVar[Any], str] | bool | None = None


def _otel_span_may_be_current() -> bool:
    """False only when OpenTelemetry's context surely holds no span (a quick contextvar read).

    ``get_current_span()`` goes through several layers of OpenTelemetry's API, a cost every
    logging call would pay in any process that merely imports OpenTelemetry.
    """
    global _otel_slot  # resolved once, then read on the hot path
    slot = _otel_slot
    if slot is None:
        slot = _otel_slot = _find_otel_slot()
    if not isinstance(slot, tuple):
        return True
    var, key = slot
    try:
        return var.get().get(key) is not None
    except Exception:  # noqa: BLE001 - an unexpected context object: ask the public API
        return True


def _find_otel_slot() -> tuple[ContextVar[Any], str] | bool:
    try:
        from opentelemetry import context as otel_context  # noqa: PLC0415
        from opentelemetry.trace.propagation import _SPAN_KEY  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        return False
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if isinstance(var, ContextVar) and isinstance(_SPAN_KEY, str):
        return var, _SPAN_KEY
    return False


def otel_ids() -> tuple[str, str] | None:
    """The current OpenTelemetry span's ``(trace_id, span_id)`` as hex, or None (internal).

    Never imports OpenTelemetry: without it this is one dictionary lookup.
    """
    otel = sys.modules.get(OTEL_MODULE)
    return _otel_ids(otel) if otel is not None else None


def _otel_ids(otel: Any) -> tuple[str, str] | None:
    try:
        ctx = otel.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    except Exception:  # noqa: BLE001 - a broken tracer must not break logging
        return None
