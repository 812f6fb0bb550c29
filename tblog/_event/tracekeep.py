"""Trace-aware keep: a trace's DEBUG/INFO records ship only if that trace later logs an ERROR.

``TraceKeep`` is the post-snapshot hook of ``TinybirdLoggingHandler.emit`` (``handler._hold``,
None unless ``keep_trace_on_error=True``).  On the caller's thread, for each snapshot:

* no trace id (the context captured in the snapshot's ``exc_text`` slot, see
  ``_event.snapshot.Snapshot``): not held, it ships as usual;
* ERROR or above: the records held for its trace are released to the channel first, in the
  order they were logged, then the error itself ships; later records of that trace ship
  directly for ``trace_hold_seconds`` (the trace is "kept");
* WARNING: ships as usual (it neither waits nor releases what waits);
* DEBUG and INFO (below WARNING), in a trace that is not kept: held (the hook returns True).

What is held is bounded: ``trace_hold_max`` records per trace (past it, that trace's oldest
goes), ``trace_hold_max_events`` records and ``trace_hold_max_bytes`` (snapshot estimates)
in all (past them, the oldest held record of the oldest trace goes), and each trace's hold
lasts ``trace_hold_seconds`` from its first held record (checked lazily on emits, by the
sender's periodic tick, and on ``flush()``); then its records go.  Whatever goes without
being shipped is counted as dropped with reason ``trace_discarded`` on the handler's channel,
also at ``close()`` and at exit, where the records of traces that logged no error are
discarded.  Nothing held is ever uncounted: ``held`` is ``stats()["trace_held"]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from tblog._delivery import lifecycle as _lifecycle
from tblog._delivery.sender import get_sender

__all__ = ["DISCARDED", "TraceKeep", "discard_all"]

DISCARDED = "trace_discarded"
_ERROR = logging.ERROR
_WARNING = logging.WARNING
#: Kept (errored) traces remembered at most; past it the oldest are forgotten (their later
#: records are held again, never lost uncounted).
_KEPT_MAX = 10_000
#: How often (seconds) the emit path looks for expired holds.
_CHECK_EVERY = 0.25

Put = Callable[[Any, int, "int | None"], bool]
Held = tuple[Any, int, "int | None"]  # (snapshot, size, pid hint)


class _Trace:
    __slots__ = ("bytes", "items", "until")

    def __init__(self, until: float) -> None:
        self.items: deque[Held] = deque()
        self.bytes = 0
        self.until = until


class TraceKeep:
    """Holds trace records until their trace errors (see the module docstring)."""

    def __init__(
        self,
        put: Put,
        count_drop: Callable[[str, int], None],
        *,
        hold_seconds: float,
        hold_max: int,
        max_events: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._put = put
        self._count_drop = count_drop
        self.hold_seconds = hold_seconds
        self.hold_max = hold_max
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, _Trace] = OrderedDict()  # by first held record
        self._kept: dict[str, float] = {}  # errored trace -> until when it ships directly
        self.held = 0
        self.held_bytes = 0
        self._next_check = 0.0
        self.closed = False
        _live.add(self)

    def __call__(self, snap: Any, size: int, pid: int | None) -> bool:
        """True when ``snap`` was taken here (held, or shipped with its trace); never raises."""
        ctx = snap.get("exc_text")
        trace_id = ctx[0] if type(ctx) is tuple and ctx else None
        if not trace_id:
            return False
        try:
            return self._take(trace_id, snap, size, pid)
        except Exception:  # noqa: BLE001 - the record ships as usual rather than be lost
            return False

    def _take(self, trace_id: str, snap: Any, size: int, pid: int | None) -> bool:
        now = self._clock()
        gone = 0
        with self._lock:
            if now >= self._next_check:
                gone += self._expire(now)
            if self.closed:
                return False  # after close(): the handler counts what it refuses
            level = snap.get("levelno", 0)
            if level >= _WARNING:
                if level < _ERROR:
                    return False
                self._keep(trace_id, now)
                trace = self._traces.pop(trace_id, None)
                if trace is not None:
                    self.held -= len(trace.items)
                    self.held_bytes -= trace.bytes
                    put = self._put
                    for item in trace.items:  # in order, before the error (still locked:
                        put(*item)  # another thread's record of this trace waits)
                return False
            until = self._kept.get(trace_id)
            if until is not None:
                if now < until:
                    return False
                del self._kept[trace_id]
            trace = self._traces.get(trace_id)
            if trace is None:
                trace = self._traces[trace_id] = _Trace(now + self.hold_seconds)
            trace.items.append((snap, size, pid))
            trace.bytes += size
            self.held += 1
            self.held_bytes += size
            if len(trace.items) > self.hold_max:
                _, lost, _ = trace.items.popleft()
                trace.bytes -= lost
                self.held -= 1
                self.held_bytes -= lost
                gone += 1
            while self.held > self.max_events or self.held_bytes > self.max_bytes:
                gone += self._evict_oldest()
        if gone:
            self._count_drop(DISCARDED, gone)
        return True

    def _keep(self, trace_id: str, now: float) -> None:
        kept = self._kept
        kept.pop(trace_id, None)  # re-inserted last: the dict stays in order of expiry
        kept[trace_id] = now + self.hold_seconds
        if len(kept) > _KEPT_MAX:
            del kept[next(iter(kept))]

    def _evict_oldest(self) -> int:
        """Lock held: drop the oldest held record of the oldest trace; how many went."""
        if not self._traces:
            self.held = self.held_bytes = 0  # (never: the totals follow the traces)
            return 0
        trace_id, trace = next(iter(self._traces.items()))
        _, lost, _ = trace.items.popleft()
        trace.bytes -= lost
        self.held -= 1
        self.held_bytes -= lost
        if not trace.items:
            del self._traces[trace_id]
        return 1

    def _expire(self, now: float) -> int:
        """Lock held: discard the holds that ran out; how many records went."""
        self._next_check = now + _CHECK_EVERY
        gone = 0
        traces = self._traces
        while traces:
            trace_id, trace = next(iter(traces.items()))
            if trace.until > now:
                break
            del traces[trace_id]
            gone += len(trace.items)
            self.held -= len(trace.items)
            self.held_bytes -= trace.bytes
        kept = self._kept
        while kept:
            trace_id = next(iter(kept))
            if kept[trace_id] > now:
                break
            del kept[trace_id]
        return gone

    def expire(self) -> int:
        """Discard (and count) the holds that ran out; the tick, ``flush()``.  Never raises."""
        try:
            with self._lock:
                gone = self._expire(self._clock())
            if gone:
                self._count_drop(DISCARDED, gone)
        except Exception:  # noqa: BLE001
            return 0
        return gone

    def discard(self, *, close: bool = False) -> int:
        """Discard (and count) everything held: ``close()`` and exit.  Never raises."""
        try:
            with self._lock:
                gone = self.held
                self._traces.clear()
                self._kept.clear()
                self.held = self.held_bytes = 0
                if close:
                    self.closed = True
            if gone:
                self._count_drop(DISCARDED, gone)
        except Exception:  # noqa: BLE001
            return 0
        return gone

    def after_fork(self) -> None:
        """A forked child: the parent's held records are the parent's to ship or count."""
        self._lock = threading.Lock()
        self._traces = OrderedDict()
        self._kept = {}
        self.held = self.held_bytes = 0


_live: weakref.WeakSet[TraceKeep] = weakref.WeakSet()


def _tick(now: float) -> None:
    for keep in list(_live):
        keep.expire()


def discard_all(seconds: float = 0.0) -> None:
    """At exit (the last pass, before the final delivery and report): held traces never
    logged an error; their records are discarded and counted."""
    for keep in list(_live):
        with contextlib.suppress(Exception):
            keep.discard()


def _after_fork() -> None:
    for keep in list(_live):
        keep.after_fork()


_lifecycle.on_last_pass(discard_all)
get_sender().on_tick(_tick)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
