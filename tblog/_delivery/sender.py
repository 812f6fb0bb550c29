"""The one shared sender: bounded buffers, one thread, per-datasource batches, exit and fork.

Every producer in the process (each handler, each integration) owns a ``Channel``:
a bounded FIFO of cheap snapshots plus its delivery state.  One daemon thread per
process (``Sender``) serves all channels: it turns buffered items into NDJSON
batches, gzips them, and retries, splits or drops each batch by what the response
says.  It never waits on the network: each request runs on a short-lived thread of its
own (at most one per channel, see ``InFlight``) through one pooled ``requests.Session``,
and is cut at its total deadline (``timeout``).  A channel waiting out a backoff, or an
endpoint that answers slowly or never, never holds up another channel.

Guarantees, and where they live:

* ``Channel.put`` (the caller's side) never blocks, never does I/O and never raises;
  when the buffer is full it drops by ``drop_policy`` and counts the drop.  On CPython
  with the GIL it takes no lock at all (see ``ATOMIC``): a producer preempted inside a
  lock would make every other producer thread queue up behind it.
* ``Sender.flush`` returns True once everything put before the call was
  delivered; it ends backoff waits early.
* At the end of a process (a normal exit, a ``multiprocessing`` child or pool worker,
  ``Pool.terminate()``, a Celery prefork child; see ``tblog._delivery.lifecycle``) what is buffered
  is delivered within the largest ``shutdown_timeout`` (also when the endpoint is down),
  what could not be is counted, and the process ends.
* After ``fork`` the child starts with empty buffers, no thread and a fresh
  connection pool, so the parent's records are never sent twice; a pid check on
  the hot path covers forks that bypass ``os.register_at_fork``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import platform
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tblog import _diag
from tblog._config import Options
from tblog._delivery import lifecycle as _lifecycle
from tblog._delivery import runtime as _runtime
from tblog._delivery import transport as _transport
from tblog._delivery.breaker import OPEN, CircuitBreaker, Pacer
from tblog._delivery.retry import retry_delay
from tblog._delivery.spool import Segment, Spool
from tblog._delivery.transport import DROP, OK, RETRY, SPLIT, Result, Transport
from tblog._event.encode import gzip_lines, join_lines

Encoder = Callable[[Any], "bytes | None"]
Measure = Callable[[Any], int]

#: CPython with the GIL: a deque append is atomic, and so is a statement such as
#: ``self.count += n`` that calls nothing (the interpreter only switches threads at calls and
#: loop edges).  Producers then put without the channel's lock; elsewhere they take it.
ATOMIC = platform.python_implementation() == "CPython" and bool(
    getattr(sys, "_is_gil_enabled", lambda: True)()
)


#: What ``max_buffer_bytes`` counts for a bytes object beyond its length (its header and its
#: slot in a container).
BYTES_OVERHEAD = 64


def line_size(line: bytes) -> int:
    """The buffer-memory estimate of an already encoded line (the default ``measure``)."""
    return len(line) + BYTES_OVERHEAD


#: Encodes many items at once: their NDJSON lines in chunks of lines joined by newlines, and
#: how many lines there are (an item that cannot be encoded has none; the channel counts it).
BatchEncoder = Callable[[Sequence[Any]], "tuple[list[bytes], int]"]

_IDLE_WAKE = 1.0  # the thread re-checks its channels at least this often
WAKE_AT = 512  # buffered items that wake the sender thread (at most batch_size)
#: Buffered items, as a multiple of the wake-up mark, past which a producer asks whether the
#: sender thread still runs (every ``_STARVED_EVERY`` puts), and how long its loop may have
#: stood still before that is told on stderr (uWSGI without threads, a blocked event loop).
_STARVED_FACTOR = 8
_STARVED_EVERY = 1024
STARVED_AFTER = 10.0
HINT_SPREAD = 0.5  # up to half as long again on a server's Retry-After, so a fleet spreads out
#: The longest a flush waits while its thread holds logging's module lock (``dictConfig``
#: re-configuration closes the old handlers under it): the sender keeps delivering a closed
#: handler's records in the background and at exit, so there is nothing to wait for there.
LOCKED_WAIT = 0.25
#: ``close()`` right after a flush that ran out of time (``logging.shutdown`` calls
#: ``flush()`` then ``close()``) does not wait a second ``shutdown_timeout``.
RECENT_TIMEOUT = 1.0
#: At the end of shutdown, how long to wait for a pass of the sender thread still running
#: (after a 0.5 s join) before reporting what is left instead of counting it.
SHUTDOWN_LOCK_WAIT = 1.0


class _Default(enum.Enum):
    SHUTDOWN_TIMEOUT = "shutdown_timeout"


#: ``flush()`` with no argument: wait at most the channels' ``shutdown_timeout`` (the
#: ``logging.Handler.flush`` contract: it returns); ``flush(None)`` waits without a limit.
SHUTDOWN_TIMEOUT = _Default.SHUTDOWN_TIMEOUT


#: Threads whose log records tblog refuses: the sender thread (its HTTP stack must never feed
#: itself) and any thread inside a tblog producer right now (a ``__str__`` that logs while its
#: record is being snapshotted is refused, not looped on).  One mapping for both, so the hot
#: path asks one question; entering and leaving is a dict store and delete (cheaper than a
#: ``threading.local`` write or a set method call).  Emptied in a forked child.  (It lives in
#: ``_diag``, whose stderr line is written under it: a stderr that the application redirects
#: into logging, as Celery's workers do, must not feed tblog's own lines back to it.)
busy_threads = _diag.busy_threads


#: One lock per process for ``after_fork_in_child``, made in that process.
_fork_locks: dict[int, threading.Lock] = {}


def still_busy(ident: int) -> bool:
    """``ident`` is in ``busy_threads``: is its record refused?  (Asked only then: rare.)

    Yes, unless this is a forked child the at-fork hooks never ran in (uWSGI without
    ``--py-call-osafterfork``): there the parent's sender thread is no thread, and a thread
    of the child that reuses its ident must not be refused.  The pid check resets the child.
    """
    if _sender.pid == os.getpid():
        return True
    _sender.after_fork_in_child()
    return ident in busy_threads


def holds_logging_lock() -> bool:
    """True when this thread holds logging's module lock (inside dictConfig or logging.shutdown).

    Waiting for the sender there could deadlock with a diagnostic that needs the lock,
    so callers bound or skip their wait.
    """
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:  # noqa: BLE001
        return False


class Batch:
    """Encoded events for one request; retried as a unit (the body is built once).

    The lines are kept joined, a chunk per ``add`` (they hold no raw newline): no bytes
    object per event waits in memory, and the body is one more join away.  ``lines`` splits
    them again for the rarer paths (a split on 413, the spool, dropping the oldest).
    """

    __slots__ = ("_body", "attempts", "chunks", "count", "first_try", "segment", "size")

    def __init__(self, lines: list[bytes] | None = None, segment: Segment | None = None) -> None:
        self.chunks: list[bytes] = []
        self.count = 0  # events
        self.size = 0  # bytes of the body: the lines and their newlines
        self.segment = segment  # replayed from this spool segment
        self.attempts = 0  # failed attempts that count against max_retries (not 429s)
        self.first_try = 0.0  # monotonic time of the first attempt (0: not tried yet)
        self._body: bytes | None = None
        if lines:
            self.add(lines)

    def add(self, lines: list[bytes]) -> None:
        self.add_chunks([b"\n".join(lines)], len(lines))

    def add_chunks(self, chunks: list[bytes], count: int) -> None:
        """``count`` lines, in chunks of lines joined by newlines."""
        self.chunks += chunks
        self.count += count
        self.size += sum(map(len, chunks)) + len(chunks)
        self._body = None

    @property
    def memory(self) -> int:
        """Its estimate for ``max_buffer_bytes``."""
        return self.size + BYTES_OVERHEAD * len(self.chunks)

    @property
    def lines(self) -> list[bytes]:
        return [line for chunk in self.chunks for line in chunk.split(b"\n")]

    def drop_oldest(self, items: int, memory: int) -> tuple[int, int]:
        """Forget the oldest events, until ``items`` events and ``memory`` bytes are gone (or
        all of them).  Whole chunks where they are needed whole; returns (events, bytes)."""
        events = freed = 0
        while self.chunks and (events < items or freed < memory):
            chunk = self.chunks[0]
            k, b = chunk.count(b"\n") + 1, len(chunk) + 1
            if items - events >= k or memory - freed >= b:
                del self.chunks[0]
                events, freed = events + k, freed + b
                continue
            lines = chunk.split(b"\n")  # the last chunk to touch: part of it, or all
            n = 0
            while n < len(lines) and (events < items or freed < memory):
                events, freed, n = events + 1, freed + len(lines[n]) + 1, n + 1
            if n < len(lines):
                self.chunks[0] = b"\n".join(lines[n:])
            else:  # its last line was the one needed: no empty chunk stays (it reads as a line)
                del self.chunks[0]
        self.count -= events
        self.size -= freed
        self._body = None
        return events, freed

    def body(self, gzipped: bool) -> bytes:
        if self._body is None:
            if gzipped:
                self._body = gzip_lines(self.chunks)
            else:
                self._body = b"\n".join([*self.chunks, b""])  # newline-terminated
        return self._body

    def halves(self) -> tuple[Batch, Batch]:
        lines = self.lines
        mid = len(lines) // 2
        return Batch(lines[:mid]), Batch(lines[mid:])


class InFlight:
    """A request on its way, on a thread of its own; ``result`` is set when it is answered.

    One per channel at most: the sender thread never waits on the network, so a destination
    that answers slowly, a byte at a time or never delays only its own datasource.  The
    thread lives while the request does; the sender aborts the request at ``deadline``.
    """

    __slots__ = ("batch", "body", "deadline", "finished", "flushes", "ident", "result", "sent")

    def __init__(self, batch: Batch, body: bytes, sent: float, deadline: float, flushes: int):
        self.batch = batch
        self.body = body
        self.sent = sent  # monotonic time it was sent
        self.deadline = deadline  # its total deadline
        self.flushes = flushes  # the channel's flush count when it was sent
        self.ident = 0  # its thread
        self.finished = 0.0  # monotonic time of the answer
        self.result: Result | None = None


class Channel:
    """One producer's bounded buffer and the delivery state of its datasource."""

    def __init__(
        self,
        sender: Sender,
        *,
        api_url: str,
        token: str,
        datasource: str,
        options: Options,
        encode: Encoder,
        encode_batch: BatchEncoder | None = None,
        measure: Measure = line_size,
        label: str = "",
    ) -> None:
        self.sender = sender
        self.api_url = api_url
        self._token = token
        self.datasource = datasource
        self.options = options
        self.encode = encode
        self.encode_batch: BatchEncoder = encode_batch or self._encode_each
        # The memory estimate of an item: ``put`` is given it, and the sender thread recomputes
        # it for what it takes, so no per-item size has to be stored beside the item.
        self.measure = measure
        self.label = label or datasource
        self.key = (api_url, datasource)
        self.closed = False
        self._init_state()
        sender.register(self)
        if self.backlog:
            sender.start()

    def _init_state(self) -> None:
        # the options the producer's side reads on every put, as plain attributes
        self.max_items = self.options.max_buffer_size
        self.max_bytes = self.options.max_buffer_bytes
        # Wake the sender thread at this many buffered items: it encodes them into the draft
        # at once, so snapshots die young (each one the garbage collector finds alive costs
        # the application's threads), while requests still carry up to batch_size events.
        self.wake_at = min(self.options.batch_size, WAKE_AT)
        self.starved_at = self.wake_at * _STARVED_FACTOR
        # Reentrant, and asked whether this thread holds it: a signal handler that logs may
        # interrupt this thread inside it (see _put_locked).
        self.lock = threading.RLock()
        self.buf: deque[Any] = deque()
        self.buf_bytes = 0  # the sum of measure(item) over what is buffered
        self.draft = Batch()  # the batch being filled (sender thread)
        self.pending: deque[Batch] = deque()
        # What the sender holds encoded (the draft and the pending batches), as the producers
        # see it for the bounds: written by the sender thread, read by put().
        self.backlog_count = 0
        self.backlog_memory = 0
        self.enqueued = 0  # accepted by put()
        self.settled = 0  # accepted and then delivered or dropped
        self.lost = 0  # accepted and then dropped
        self.flush_upto = 0  # deliver now everything up to this enqueue count
        self.flush_waiters = 0  # flush() calls waiting for this channel now
        self.flushes = 0  # flush() calls ever made for this channel
        self.timed_out_at = float("-inf")  # when a flush of it last ran out of time
        self.interval = self.options.flush_interval  # stretched while rate limited
        self.next_flush = time.monotonic() + self.options.flush_interval
        self.retry_at = 0.0
        self.signaled = False
        self.inflight: InFlight | None = None  # the request out now (sender thread)
        self.sent = 0
        self.batches = 0
        self.bytes_sent = 0
        self.retries = 0
        self.dropped: dict[str, int] = {}
        self.successful_rows = 0
        self.quarantined_rows = 0
        self.rate_limited = 0  # 429 answers
        self.paced = 0  # times X-RateLimit-Remaining: 0 held the next request
        self.unconfirmed = 0  # wait=True, yet answered 202 (accepted, not confirmed written)
        self.last_error = ""
        self.last_status = 0
        self.breaker = CircuitBreaker(
            self.options.circuit_breaker_threshold, self.options.circuit_breaker_reset
        )
        opts = self.options
        self.spool = (
            Spool(opts.spool_dir, self.api_url, self.datasource, opts.max_spool_bytes)
            if opts.spool_dir
            else None
        )
        self.spooled = 0  # events this channel wrote to the spool
        self.spool_replayed = 0  # events delivered from the spool (any process's)
        self.on_disk = 0  # events this channel spooled that are not delivered yet
        self._own: dict[str, int] = {}  # this channel's segments on disk: name -> events
        self._own_checked = 0  # the spool's scan count when _own was last checked against it
        self.spool_elsewhere = 0  # events this channel spooled that another process replayed
        self.spool_undeletable = 0  # replayed, yet on disk still: a later process may resend
        self.spool_stranded = 0  # left on a spool this process cannot claim from (read-only)
        self.spool_risk = 0  # the two above: a flush() that saw them grow says False
        # Segments left by an earlier process (a crash, an exit during an outage): flush()
        # waits for them too, and the thread starts now to replay them.
        self.backlog = self.spool is not None and self.spool.may_have_segments()

    def __repr__(self) -> str:
        return f"<tblog Channel {self.label!r} -> {self.api_url} datasource={self.datasource!r}>"

    # -- the caller's side -------------------------------------------------------------

    def put(self, item: Any, size: int, pid_hint: int | None = None) -> bool:
        """Buffer ``item`` of ``size == measure(item)`` bytes. Never blocks, never raises.

        ``pid_hint`` is a pid the caller already has (a LogRecord's ``process``): when it
        matches, the fork check needs no ``getpid()`` system call; when it does not (a record
        forwarded from another process, or a fork), ``getpid()`` decides.  The bounds hold
        to within one item per producer thread putting at the same moment.
        """
        sender = self.sender
        if pid_hint != sender.pid and os.getpid() != sender.pid:
            sender.after_fork_in_child()
        buf = self.buf
        if (
            not ATOMIC  # or ``_full(size)``, inline: a call would cost every record
            or len(buf) + self.backlog_count >= self.max_items
            or self.buf_bytes + self.backlog_memory + size > self.max_bytes
        ):
            return self._put_locked(item, size)
        buf.append(item)
        self.buf_bytes += size  # one statement each: atomic under the GIL (see ATOMIC)
        self.enqueued += 1
        if sender.thread is None:
            sender.start()
        if len(buf) >= self.wake_at:
            if not self.signaled:
                self.signaled = True
                sender.wake.set()
            elif len(buf) >= self.starved_at and not self.enqueued % _STARVED_EVERY:
                sender.check_starved(len(buf))
        return True

    def _put_locked(self, item: Any, size: int) -> bool:
        """``put`` with the lock held: a full buffer, or no GIL to make a statement atomic.

        Re-entered on a thread that holds the lock already (a signal handler that logs,
        run between two bytecodes of this very method, or of ``stats()``), it must neither
        wait for itself nor change a state the interrupted code is in the middle of: the item
        is dropped and counted (``reentrant``).  No other thread holds the lock meanwhile.
        """
        owned = getattr(self.lock, "_is_owned", None)
        if owned is not None and owned():
            self.dropped["reentrant"] = self.dropped.get("reentrant", 0) + 1
            return False
        with self.lock:
            buf = self.buf
            if self._full(size) and not self._make_room(size):
                return False
            buf.append(item)
            self.buf_bytes += size
            self.enqueued += 1
            full = len(buf) >= self.wake_at
        if self.sender.thread is None:
            self.sender.start()
        if full and not self.signaled:
            self.signaled = True
            self.sender.wake.set()
        return True

    def _full(self, size: int) -> bool:
        return (
            len(self.buf) + self.backlog_count >= self.max_items
            or self.buf_bytes + self.backlog_memory + size > self.max_bytes
        )

    def _make_room(self, size: int) -> bool:
        """The buffer is full (lock held): drop by ``drop_policy``; False when ``item`` must go.

        The oldest events wait encoded on the sender's side, which drops them itself as it
        encodes newer ones (``_fill``); here only what is still in the deque can go.
        """
        opts, buf = self.options, self.buf
        if size > self.max_bytes or opts.drop_policy == "newest" or not buf:
            self.dropped["buffer_full"] = self.dropped.get("buffer_full", 0) + 1
            return False
        while buf and self._full(size):
            gone = self.measure(buf.popleft())
            self.buf_bytes -= gone  # computed first: the statement itself must call nothing
            self.settled += 1
            self.lost += 1
            self.dropped["buffer_full"] = self.dropped.get("buffer_full", 0) + 1
        return True

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` items a producer dropped before they reached the buffer."""
        with self.lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    # -- the sender's side -------------------------------------------------------------

    def _encode_each(self, items: Sequence[Any]) -> tuple[list[bytes], int]:
        return join_lines(map(self._encode_one, items))

    def idle(self) -> bool:
        return not self.buf and not self.draft.count and not self.pending

    def _fill(self) -> int:
        """Encode buffered items into the draft batch, up to ``batch_size`` lines in it.

        Called whenever the thread wakes, also while requests wait out a backoff or an
        outage: buffered records are released early (no container for the garbage collector
        to chase on the application's threads) and wait encoded, in less memory.  What the
        buffer bounds allow is shared by the deque and what waits encoded: over them, the
        oldest encoded events go (``drop_policy="oldest"``), or encoding stops and the
        producers drop the newest.  Returns how many items it took.
        """
        opts = self.options
        room = opts.batch_size - self.draft.count
        if room <= 0 or not self.buf:
            return 0
        # Leave the producers an eighth of the bounds for what arrives before the next wake.
        max_items, max_bytes = self.max_items * 7 // 8, self.max_bytes * 7 // 8
        newest = opts.drop_policy == "newest"
        if newest and (self.backlog_count >= max_items or self.backlog_memory >= max_bytes):
            return 0
        with self.lock:  # producers append on the right meanwhile, without it (see put)
            n = min(room, len(self.buf))
            popleft = self.buf.popleft
            items = [popleft() for _ in range(n)]
            self.signaled = False
        taken = sum(map(self.measure, items))
        self.buf_bytes -= taken
        try:
            chunks, count = self.encode_batch(items)
        except Exception:  # noqa: BLE001 - one bad item never stops the sender: one at a time
            chunks, count = self._encode_each(items)
        if count < n:
            self._settle(n - count, lost=True, reason="encode_error")
        del items  # the snapshots go now, on this thread
        if not count:
            self._recount()
            return n
        size = sum(map(len, chunks)) + len(chunks)
        if not newest:
            self._evict(
                count + len(self.buf) + self.backlog_count - max_items,
                size
                + BYTES_OVERHEAD * len(chunks)
                + self.buf_bytes
                + self.backlog_memory
                - max_bytes,
            )
        cap = opts.max_batch_bytes
        if self.draft.size + size > cap and self.draft.count:
            self.pending.append(self.draft)  # past max_batch_bytes: the draft goes first
            self.draft = Batch()
        if size <= cap:
            self.draft.add_chunks(chunks, count)
        else:  # one encode's worth is over max_batch_bytes itself: line by line
            lines = [line for chunk in chunks for line in chunk.split(b"\n")]
            start, used = 0, 0
            for i, line in enumerate(lines):
                if used + len(line) + 1 > cap and i > start:
                    self.draft.add(lines[start:i])
                    self.pending.append(self.draft)
                    self.draft, start, used = Batch(), i, 0
                used += len(line) + 1
            self.draft.add(lines[start:])
        self._recount()
        return n

    def _evict(self, items: int, memory: int) -> None:
        """Drop the oldest encoded events until ``items`` events and ``memory`` bytes are gone.

        Oldest first: the pending batches in order (a replayed spool segment is on disk, not
        in memory: left alone), then the draft.
        """
        lost = 0
        for batch in [*self.pending, self.draft]:
            if items <= 0 and memory <= 0:
                break
            if batch.segment is not None or not batch.count:
                continue
            if self.inflight is not None and batch is self.inflight.batch:
                continue  # on its way: its body is already built
            events, freed = batch.drop_oldest(items, memory)
            items, memory, lost = items - events, memory - freed, lost + events
        if lost:
            self.pending = deque(b for b in self.pending if b.count)
            self._settle(lost, lost=True, reason="buffer_full")

    def _recount(self) -> None:
        """Publish what waits encoded, for the producers' bound checks."""
        batches = [b for b in self.pending if b.segment is None]
        batches.append(self.draft)
        self.backlog_count = sum(b.count for b in batches)
        self.backlog_memory = sum(b.memory for b in batches)

    def _close_draft(self, now: float) -> None:
        """The draft becomes the next batch to send; the next one may fill for an interval."""
        if self.draft.count:  # (the backlog's totals stay as they are: no _recount)
            self.pending.append(self.draft)
            self.draft = Batch()
        self.next_flush = now + self.interval * random.uniform(0.9, 1.1)

    def _take(self, now: float) -> int:
        """What is buffered, up to a batch, into ``pending`` now; how many items it took."""
        took = self._fill()
        self._close_draft(now)
        return took

    def _unbatched(self) -> int:
        """Events put but in no batch yet: buffered or in the draft."""
        return len(self.buf) + self.draft.count

    def _encode_one(self, item: Any) -> bytes | None:
        try:
            return self.encode(item)
        except Exception as exc:  # noqa: BLE001 - one bad item never stops the sender
            _diag.diag(
                logging.WARNING, f"encode:{self.label}",
                "tblog: could not encode an event for %s (%s); dropped it",
                self.datasource, type(exc).__name__,
            )  # fmt: skip
            return None

    def _settle(self, n: int, *, lost: bool, reason: str = "") -> None:
        with self.lock:
            self.settled += n
            if lost:
                self.lost += n
                self.dropped[reason] = self.dropped.get(reason, 0) + n

    def service(self, now: float, transport: Transport, closing: bool, deadline: float) -> float:
        """Do at most one request for this channel; return when it next needs attention."""
        try:
            return self._service(now, transport, closing, deadline)
        finally:
            self._recount()

    def _service(self, now: float, transport: Transport, closing: bool, deadline: float) -> float:
        opts = self.options
        out = not self._collect()  # a request is still on its way
        if not self.pending and self.spool is not None and now >= self.ready_at(now):
            self._replay_next()
        took = self._fill()  # also while requests wait: see _fill
        unbatched = self._unbatched()
        flush_wants = bool(unbatched) and self.flush_upto > self.enqueued - unbatched
        if self.draft.count and (
            self.draft.count >= opts.batch_size
            or closing
            or flush_wants
            or (now >= self.next_flush and not self.pending)  # none waits ahead of it
        ):
            self._close_draft(now)
        elif now >= self.next_flush and not self.draft.count:
            self.next_flush = now + self.interval
        if self.pending:
            if out:  # one request at a time per channel; meanwhile, encode what arrives
                return now if took and len(self.buf) >= self.wake_at else self._inflight_due(now)
            ready = self.ready_at(now)
            if now < ready:
                if self.spool is not None and self.spool.enabled:
                    self._spool_while_waiting(now)
                # more to encode meanwhile: come back at once; else when the wait ends
                return now if took and len(self.buf) >= self.wake_at else ready
            self._attempt(now, transport, closing, deadline)
            if self.inflight is not None:
                return self._inflight_due(now)
            now = time.monotonic()
            if self.pending:
                return now
        unbatched = self._unbatched()
        if (took and len(self.buf) >= self.wake_at) or (
            unbatched and self.flush_upto > self.enqueued - unbatched
        ):
            return now
        if self.inflight is not None:  # one whose batch is gone (exit): still cut at its deadline
            return min(self.next_flush, self._inflight_due(now))
        return self.next_flush

    def ready_at(self, now: float) -> float:
        """When the next request may go: after a backoff, an open circuit, a rate-limit hold."""
        return max(
            self.retry_at, self.breaker.ready_at(now), self.sender.pacer.ready_at(self.key, now)
        )

    def hurry(self) -> None:
        """``flush()``/``close()``/exit: end a backoff or pacing wait, let an open circuit probe."""
        self.retry_at = 0.0
        self.breaker.probe_now()
        self.sender.pacer.release(self.key)
        if self.spool is not None:
            self.spool.rescan_soon()

    # -- the spool (sender thread) ------------------------------------------------------

    def _to_spool(self, batch: Batch) -> bool:
        """Write a batch to the spool; True when it is on disk (then it is off our hands)."""
        assert self.spool is not None
        name, evicted = self.spool.write(batch.lines)
        self._forget_segments(evicted, "spool_full")
        if name is None:
            return False
        with self.lock:
            self.settled += batch.count
            self.spooled += batch.count
            self.on_disk += batch.count
        self._own[name] = batch.count
        return True

    def _forget_segments(self, gone: list[tuple[str, int]], reason: str) -> None:
        """Segments deleted without delivery: count their events as dropped."""
        for name, count in gone:
            own = self._own.pop(name, None)
            with self.lock:
                self.dropped[reason] = self.dropped.get(reason, 0) + count
                self.lost += count
                if own is not None:
                    self.on_disk -= own

    def _spool_while_waiting(self, now: float) -> None:
        """In a backoff, an open circuit or a rate-limit hold: batches wait on disk, not in RAM.

        (What arrives meanwhile is encoded into the draft as usual, and goes to disk in its
        turn once it is a batch.)
        """
        kept: deque[Batch] = deque()
        while self.pending:
            batch = self.pending.popleft()
            if batch.segment is not None or not self._to_spool(batch):
                kept.append(batch)
        self.pending = kept

    def _replay_next(self) -> None:
        """Load the oldest spooled segment as the next batch to send."""
        assert self.spool is not None
        has = self.spool.may_have_segments()
        if self._own and self.spool.scans != self._own_checked:
            self._own_checked = self.spool.scans
            self._forget_vanished()
        if not has:
            self.backlog = False
            return
        segment, corrupt = self.spool.claim()
        self._forget_segments(corrupt, "spool_corrupt")
        if segment is not None:
            self.pending.append(Batch(segment.lines, segment))
        elif self.spool.stuck:
            self._strand_own()

    def _strand_own(self) -> None:
        """The spool cannot be claimed from (read-only): this process's segments stay on disk
        for a later one.  No longer owed here; ``flush()`` says False for them (not sent)."""
        stranded = sum(self._own.values())
        self._own.clear()
        self.backlog = False
        with self.lock:
            self.on_disk -= stranded
            self.spool_stranded += stranded
            self.spool_risk += stranded

    def _forget_vanished(self) -> None:
        """Segments this channel spooled that another process replayed: no longer owed here.

        (Delivered or dropped there, and counted by that process; this one cannot tell which.)
        """
        assert self.spool is not None
        for name in self.spool.vanished(list(self._own)):
            own = self._own.pop(name)
            with self.lock:
                self.on_disk -= own
                self.spool_elsewhere += own

    def _segment_settled(self, batch: Batch, *, delivered: bool, reason: str = "") -> None:
        """A replayed segment is off the disk: delivered, or refused for good."""
        assert self.spool is not None
        assert batch.segment is not None
        error = self.spool.done(batch.segment)
        own = self._own.pop(batch.segment.name, None)
        with self.lock:
            if own is not None:
                self.on_disk -= own
            if delivered:
                self.spool_replayed += batch.count
            else:
                self.dropped[reason] = self.dropped.get(reason, 0) + batch.count
                self.lost += batch.count
            if error is not None:  # still on disk: flush() says False for it
                self.spool_undeletable += batch.count
                self.spool_risk += batch.count
        if error is not None:
            what = (
                f"{'delivered' if delivered else 'dropped'} {batch.count} events of the spool "
                f"segment {batch.segment.path} but could not delete it "
                f"({type(error).__name__}: {error.strerror or error}); a later process may "
                "send them again"
            )
            _diag.warn_once(f"spool-undeletable:{self.label}", "tblog: %s", what)
            self._tell("spool_undeletable", what)

    def spool_remaining(self) -> None:
        """At exit: what could not be delivered in time goes to the spool (when there is one)."""
        if self.spool is None or not self.spool.enabled:
            return
        now = time.monotonic()
        self._close_draft(now)
        while True:
            for batch in list(self.pending):
                self.pending.popleft()
                if batch.segment is not None:
                    self.spool.release(batch.segment)
                elif not self._to_spool(batch):
                    self.pending.appendleft(batch)
                    self._recount()
                    return
            self._recount()
            if not (self.buf and self._take(now)):
                return

    def _attempt(self, now: float, transport: Transport, closing: bool, deadline: float) -> None:
        """Send the first pending batch on a request thread of its own (see ``InFlight``).

        The sender thread goes on serving the other channels; ``_collect`` takes the answer,
        or aborts the request once its total deadline (``timeout``) has passed.
        """
        opts = self.options
        batch = self.pending[0]
        timeout = opts.timeout
        if closing:
            timeout = max(0.05, min(timeout, deadline - now))
        body = batch.body(opts.gzip)
        if not batch.first_try:
            batch.first_try = now
        self.breaker.before_request(now)
        out = InFlight(batch, body, now, now + timeout, self.flushes)
        thread: threading.Thread | None = None
        if _runtime.thread_allowed():  # not in a uWSGI master that forks without hooks
            thread = threading.Thread(
                target=self._post, args=(out, transport, timeout), name="tblog-request",
                daemon=True,
            )  # fmt: skip
            self.inflight = out
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown: no new thread
                thread = None
        if thread is None:  # send from this thread (a flush() where no thread may run)
            self.inflight = None
            if _lifecycle._deadline is not None:  # in an exit pass (3.12.0-3.12.2 refuse
                # threads from threading._shutdown on): nothing aborts this request, so it
                # gets what is left of the exit budget, not the whole timeout
                timeout = max(0.05, min(timeout, _lifecycle.budget()))
            self._post(out, transport, timeout, watched=False)
            assert out.result is not None
            self._finish(batch, body, out.result, now, out.finished, out.flushes)
            return
        out.ident = thread.ident or 0

    def _post(
        self, out: InFlight, transport: Transport, timeout: float, watched: bool = True
    ) -> None:
        """The request (on its own thread): its answer goes into ``out``; wakes the sender."""
        ident = threading.get_ident()
        if watched:
            busy_threads[ident] = True  # its HTTP stack's log records are never shipped
            _transport.watch()
        result: Result | None = None
        try:
            opts = self.options
            result = transport.post(
                api_url=self.api_url,
                token=self._token,
                datasource=self.datasource,
                body=out.body,
                gzipped=opts.gzip,
                wait=opts.wait,
                timeout=timeout,
                verify=opts.ca_bundle or opts.verify,
            )
        except BaseException as exc:  # noqa: BLE001 - post never raises; this is a last resort
            result = Result(RETRY, reason="network", error=f"{type(exc).__name__}")
        finally:
            if watched:
                _transport.unwatch()
                busy_threads.pop(ident, None)
            out.finished = time.monotonic()
            out.result = result  # last: the sender reads it first
            if watched:
                self.sender.wake.set()

    def _collect(self) -> bool:
        """The request in flight: True once its answer is handled; aborts it past its deadline."""
        out = self.inflight
        if out is None:
            return True
        if out.result is None:
            if time.monotonic() >= out.deadline:
                _transport.abort(out.ident)  # its thread answers "timed out" at once
            return False
        self.inflight = None
        if self.pending and self.pending[0] is out.batch:  # (else settled meanwhile: exit)
            self._finish(out.batch, out.body, out.result, out.sent, out.finished, out.flushes)
        return True

    def _inflight_due(self, now: float) -> float:
        """When to look at the request in flight again (its thread wakes the sender sooner)."""
        out = self.inflight
        if out is None:
            return now
        if now >= out.deadline:
            return now + 0.02  # aborted: its answer is a moment away
        if threading.get_ident() != self.sender.thread_ident:  # the exit drain: it polls
            return min(out.deadline, now + 0.02)
        return min(out.deadline, now + _IDLE_WAKE)

    def abandon_request(self, wait: float) -> None:
        """At exit: abort the request in flight and give its thread ``wait`` seconds to end."""
        out = self.inflight
        if out is None or out.result is not None:
            return
        _transport.abort(out.ident)
        for thread in threading.enumerate():
            if thread.ident == out.ident:
                thread.join(wait)

    def _finish(  # noqa: PLR0917 - the request's parts, kept apart (no InFlight on the inline path)
        self, batch: Batch, body: bytes, result: Result, now: float, after: float, flushes: int
    ) -> None:
        """What the answer to ``batch`` (sent at ``now``, answered at ``after``) means."""
        opts = self.options
        if self.sender.pacer.observe(self.key, after, result.rate_remaining, result.rate_reset):
            self.paced += 1
        self._adapt_interval(result)
        with self.lock:
            self.last_status = result.status
        if result.action == OK:
            self.breaker.success()
            self.pending.popleft()
            if batch.segment is not None:
                self._segment_settled(batch, delivered=True)
            with self.lock:
                if batch.segment is None:
                    self.settled += batch.count
                self.sent += batch.count
                self.batches += 1
                self.bytes_sent += len(body)
                if opts.wait and result.status == 202:
                    self.unconfirmed += batch.count
                if result.successful_rows is not None:
                    self.successful_rows += result.successful_rows
                if result.quarantined_rows:
                    self.quarantined_rows += result.quarantined_rows
            if result.quarantined_rows:
                self._warn_quarantine(result.quarantined_rows)
            return
        with self.lock:
            self.last_error = result.error
        if result.action == RETRY:
            self._retry_later(batch, result, now, after)
            if self.flushes != flushes and self.flush_waiters and self.breaker.state == OPEN:
                # A flush began while this request was out: it ended the waits it found, but
                # this failure opened the circuit after that.  Its probe is still owed.
                self.breaker.probe_now()
            return
        if result.action == SPLIT:
            self.breaker.success()
            self.pending.popleft()
            if batch.segment is not None and batch.count > 1:
                assert self.spool is not None
                own = self._own.pop(batch.segment.name, None)
                halves = self.spool.split(batch.segment)
                if halves is not None and own is not None:
                    mid = batch.count // 2
                    self._own[halves[0]], self._own[halves[1]] = mid, batch.count - mid
                elif own is not None:
                    self._own[batch.segment.name] = own
                return
            if batch.count == 1:
                if batch.segment is not None:
                    self._segment_settled(batch, delivered=False, reason="too_large")
                else:
                    self._settle(1, lost=True, reason="too_large")
                self._warn(result, "a single event is too large for Tinybird; dropped")
                self._tell("too_large", f"{result.error}; a single event is too large; dropped")
                return
            first, second = batch.halves()
            self.pending.appendleft(second)
            self.pending.appendleft(first)
            return
        assert result.action == DROP
        self.breaker.success()  # the server answered: it is up, this batch is what it refuses
        self.pending.popleft()
        if batch.segment is not None:
            self._segment_settled(batch, delivered=False, reason=result.reason)
        else:
            self._settle(batch.count, lost=True, reason=result.reason)
        with self.lock:
            if result.successful_rows:  # a 422 says how much of the batch it did ingest
                self.successful_rows += result.successful_rows
            if result.quarantined_rows:
                self.quarantined_rows += result.quarantined_rows
        _diag.diag(
            logging.ERROR, f"drop:{self.label}:{result.status}",
            "tblog: %s; dropped %d events (not retried)", result.error, batch.count,
            interval=float("inf"),
        )  # fmt: skip
        _diag.diag(
            logging.DEBUG, f"drop-again:{self.label}:{result.status}",
            "tblog: HTTP %d again from %s; dropped %d more events", result.status,
            self.datasource, batch.count,
        )  # fmt: skip
        self._tell(result.reason, f"{result.error}; dropped {batch.count} events (not retried)")

    def _adapt_interval(self, result: Result) -> None:
        """Fewer, larger requests while the destination is rate limited; back to normal after.

        A 429, or a window spent to its last request, doubles the time a batch may wait to
        fill (up to 32 flush intervals, at most 30 s); each later success shortens it by 5%.
        A fleet of processes sharing one datasource's limit thus settles below it.
        """
        base = self.options.flush_interval
        if result.status == 429 or result.rate_remaining == 0:
            self.interval = min(self.interval * 2, max(base, min(base * 32, 30.0)))
        elif result.action == OK and self.interval > base:
            self.interval = max(base, self.interval * 0.95)

    def _retry_later(self, batch: Batch, result: Result, now: float, after: float) -> None:
        """A retryable answer: back off (or wait as told), or give up past the batch's bounds."""
        opts = self.options
        if result.status == 429:
            # Rate limited: the server is up. Wait as it says; not a failed attempt.
            self.breaker.success()
            with self.lock:
                self.rate_limited += 1
        else:
            batch.attempts += 1
            if self.breaker.failure(after):
                _diag.diag(
                    logging.WARNING, f"circuit:{self.label}",
                    "tblog: %d consecutive failed requests to %s (%s); pausing delivery for "
                    "%.0fs, events keep buffering", self.breaker.failures, self.datasource,
                    result.error, opts.circuit_breaker_reset,
                )  # fmt: skip
        in_memory = True
        if batch.segment is not None:  # a replayed segment waits on disk, not in memory
            assert self.spool is not None
            self.pending.popleft()
            self.spool.release(batch.segment)
            in_memory = False
        elif result.status != 429 and self.spool is not None and self._to_spool(batch):
            self.pending.popleft()  # failed once: it waits on disk for the endpoint to return
            in_memory = False
        elapsed = after - batch.first_try
        if in_memory and (batch.attempts > opts.max_retries or elapsed >= opts.max_retry_time):
            self.pending.popleft()
            self._settle(batch.count, lost=True, reason=result.reason or "retries_exhausted")
            gave_up = (
                f"gave up after {batch.attempts} failed attempts in {elapsed:.0f}s; dropped "
                f"{batch.count} events"
            )
            self._warn(result, gave_up)
            self._tell(result.reason or "retries_exhausted", f"{result.error}; {gave_up}")
            return
        with self.lock:
            self.retries += 1
        delay = retry_delay(
            max(1, batch.attempts, self.breaker.failures), result.retry_after,
            base=opts.retry_base_delay, cap=opts.retry_max_delay, spread=HINT_SPREAD,
        )  # fmt: skip
        self.retry_at = after + min(delay, max(0.0, opts.max_retry_time - elapsed))
        if result.reason == "bad_response":  # not Tinybird answering: say so at once
            self._warn(result, "will retry")
            self._tell(result.reason, f"{result.error}; will retry")
        else:
            self._warn(result, "will retry", level=logging.INFO)

    def _warn_quarantine(self, rows: int) -> None:
        _diag.warn_once(
            f"quarantine:{self.api_url}:{self.datasource}",
            "tblog: Tinybird quarantined %d rows of datasource %r; see the "
            "%s_quarantine datasource for the rows and the reason",
            rows, self.datasource, self.datasource,
        )  # fmt: skip

    def _warn(self, result: Result, what: str, level: int = logging.WARNING) -> None:
        _diag.diag(level, f"send:{self.label}:{result.reason}", "tblog: %s; %s", result.error, what)

    def _tell(self, cause: str, what: str) -> None:
        """Events were lost (or will be): one line on stderr per process, destination, cause.

        Besides the ``tblog`` logger, which shows nothing unless logging is configured; see
        ``_diag.tell``.  ``what`` is token-free (errors are built without it).
        """
        if self.options.warn_stderr:
            _diag.tell(
                f"{self.api_url}|{self.datasource}|{cause}",
                f"tblog: {what} [once per process; TBLOG_QUIET=1 or warn_stderr=False silences]",
            )

    def tell_lost_at_exit(self, lost: int) -> None:
        """Exit could not deliver ``lost`` events: say so on stderr (once, see ``_tell``)."""
        why = f" (last error: {self.last_error})" if self.last_error else ""
        self._tell(
            "exit",
            f"exit: {lost} events for datasource {self.datasource!r} at {self.api_url} not "
            f"delivered within shutdown_timeout ({self.options.shutdown_timeout:g}s){why}",
        )

    def report_unsettled_at_exit(self) -> None:
        """Shutdown could not wait for the sender thread's pass: report, change nothing."""
        with self.lock:
            left = self.enqueued - self.settled
        if left > 0:
            _diag.diag(
                logging.WARNING, f"shutdown-busy:{self.label}",
                "tblog: exit: %d events for %s were still being handled by the sender thread; "
                "their delivery is not confirmed", left, self.datasource,
            )  # fmt: skip

    def drop_remaining(self, reason: str) -> int:
        """Count everything still buffered or pending as dropped (at the end of shutdown)."""
        with self.lock:
            popleft = self.buf.popleft
            gone = [popleft() for _ in range(len(self.buf))]
            n = len(gone) + self.draft.count + sum(b.count for b in self.pending)
            self.draft = Batch()
            self.pending.clear()
        self._recount()
        gone_bytes = sum(map(self.measure, gone))
        self.buf_bytes -= gone_bytes
        if n:
            self._settle(n, lost=True, reason=reason)
        return n

    def reset_after_fork(self) -> None:
        self._init_state()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            dropped = dict(self.dropped)
            return {
                "datasource": self.datasource,
                "enqueued": self.enqueued,
                "sent": self.sent,
                "batches": self.batches,
                "bytes_sent": self.bytes_sent,
                "dropped": dropped,
                "dropped_total": sum(dropped.values()),
                "retries": self.retries,
                # Put and not yet delivered, dropped or spooled: buffered, being encoded, or
                # in a batch.  Every settling counts under this lock, so an event is in
                # exactly one of queue_depth, sent and dropped whenever stats() looks.
                "queue_depth": self.enqueued - self.settled,
                "queue_bytes": self.buf_bytes + self.backlog_memory,
                "successful_rows": self.successful_rows,
                "quarantined_rows": self.quarantined_rows,
                "rate_limited": self.rate_limited,
                "paced": self.paced,
                "unconfirmed": self.unconfirmed,
                "spooled": self.spooled,
                "spool_replayed": self.spool_replayed,
                "spool_replayed_elsewhere": self.spool_elsewhere,
                "spool_undeletable": self.spool_undeletable,
                "spool_stranded": self.spool_stranded,
                "spool_bytes": self.spool.bytes if self.spool is not None else 0,
                "spool_segments": self.spool.segments if self.spool is not None else 0,
                "circuit_state": self.breaker.state,
                "circuit_trips": self.breaker.trips,
                "last_status": self.last_status,
                "last_error": self.last_error,
            }


class Sender:
    """The process's delivery thread, serving every channel."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self.transport = Transport()
        self.pacer = Pacer()
        self._init_runtime()

    def _init_runtime(self) -> None:
        if getattr(self, "pid", None) is not None:
            # A fork: the parent's threads (its sender thread, its request threads) are no
            # threads here, and a thread of this process may get one of their idents (a
            # fork that skipped the at-fork hooks, e.g. uWSGI's).  Every mark is the parent's.
            busy_threads.clear()
        self.thread: threading.Thread | None = None
        self.thread_ident: int | None = None
        self._make_primitives()
        self.closing = False
        self.stopping = False
        self.deadline = float("inf")
        self.heartbeat = time.monotonic()  # the thread's last completed pass (or its start)
        self.pid = os.getpid()  # last: a thread that sees it finds the rest ready

    # -- registration ------------------------------------------------------------------

    def register(self, channel: Channel) -> None:
        with self.lock:
            self.channels.append(channel)

    def unregister(self, channel: Channel) -> None:
        with self.lock:
            if channel in self.channels:
                self.channels.remove(channel)

    # -- thread ------------------------------------------------------------------------

    def _make_primitives(self) -> None:
        """The thread's locks, events and conditions, made with today's ``threading``.

        Made again when ``threading`` was monkey-patched since (gevent's ``patch_all`` or
        eventlet's ``monkey_patch`` after ``import tblog``, as ``gunicorn --preload -k
        gevent`` does): an OS lock taken by one greenlet and waited for by another freezes
        every greenlet of the thread, and an OS ``RLock`` lets all of them in at once.
        """
        self.made_with: object = threading.Lock
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.progress = threading.Condition(threading.Lock())
        self.service_lock = threading.Lock()

    def _remake_if_patched(self) -> None:
        """``threading`` changed since the primitives were made (no thread yet): remake them."""
        if threading.Lock is self.made_with or self.thread is not None:
            return
        self._make_primitives()
        for ch in list(self.channels):
            ch.lock = threading.RLock()  # reentrant: see Channel._init_state

    def start(self) -> None:
        if not _runtime.thread_allowed():  # a uWSGI master that forks without at-fork hooks
            return
        self._remake_if_patched()
        with self.lock:
            if self.thread is not None or self.stopping:
                return
            thread = threading.Thread(target=self._run, name="tblog-sender", daemon=True)
            try:
                with _lifecycle.sigterm_blocked():  # the thread is born with it blocked
                    thread.start()
            except RuntimeError:  # interpreter shutdown: the atexit drain delivers instead
                return
            self.thread = thread
            self.thread_ident = thread.ident
            self.heartbeat = time.monotonic()
        _lifecycle.on_sender_start()  # SIGTERM in a multiprocessing child, Celery

    def check_starved(self, waiting: int) -> None:
        """A producer sees the buffer far past the wake-up mark: has the thread stopped running?

        Told once on stderr.  The thread exists but gets no time: uWSGI without
        ``--enable-threads`` (where Python threads run only while a request does), or an
        event loop that never yields.  Records still wait within the buffer's bounds.
        """
        thread = self.thread
        if thread is None or self.stopping:
            return
        stalled = time.monotonic() - self.heartbeat
        if stalled < STARVED_AFTER:
            return
        _diag.tell(
            "sender-starved",
            f"tblog: the sender thread has not run for {stalled:.0f}s while {waiting} events "
            "wait; nothing is delivered until it runs (under uWSGI, add --enable-threads; "
            "with gevent or eventlet, let the hub run). TBLOG_QUIET=1 silences this.",
        )

    def _alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        ident = threading.get_ident()
        busy_threads[ident] = True
        try:
            self._loop()
        finally:
            busy_threads.pop(ident, None)

    def _loop(self) -> None:
        while True:
            try:
                self.wake.clear()
                with self.service_lock:
                    due = self._service_all()
                    self.heartbeat = time.monotonic()  # a pass completed
                with self.progress:
                    self.progress.notify_all()
                if self.stopping:
                    return
                delay = min(due - time.monotonic(), _IDLE_WAKE)
                if delay > 0:
                    self.wake.wait(delay)
            except BaseException as exc:  # noqa: BLE001 - the thread must outlive any bug
                _diag.diag(
                    logging.ERROR, "sender-loop", "tblog: sender loop error: %s: %s",
                    type(exc).__name__, exc,
                )  # fmt: skip
                self.wake.wait(0.1)

    def _service_all(self) -> float:
        now = time.monotonic()
        due = now + _IDLE_WAKE
        with self.lock:
            channels = list(self.channels)
        for channel in channels:
            due = min(due, channel.service(now, self.transport, self.closing, self.deadline))
            now = time.monotonic()
            if channel.closed and channel.idle():
                self.unregister(channel)
        return due

    # -- flush, shutdown ---------------------------------------------------------------

    def flush(
        self, timeout: float | _Default | None = None, channels: Iterable[Channel] | None = None
    ) -> bool:
        """Deliver everything put before this call; True when all of it was delivered.

        ``timeout``: seconds, None (no limit) or ``SHUTDOWN_TIMEOUT`` (the largest
        ``shutdown_timeout`` of the channels).  Waiting sleeps (no CPU while the endpoint is
        down); with logging's module lock held it lasts at most ``LOCKED_WAIT``.
        """
        if self.pid != os.getpid():
            self.after_fork_in_child()
        with self.lock:
            targets = list(channels if channels is not None else self.channels)
        marks = []
        for ch in targets:
            with ch.lock:
                marks.append((ch, ch.enqueued, ch.lost + ch.spool_risk))
                ch.flush_upto = max(ch.flush_upto, ch.enqueued)
                ch.flush_waiters += 1
                ch.flushes += 1
            ch.hurry()  # end a backoff or pacing wait early; an open circuit may probe
        try:
            return self._wait_flushed(timeout, targets, marks)
        finally:
            for ch in targets:
                with ch.lock:
                    ch.flush_waiters -= 1

    def _wait_flushed(
        self,
        timeout: float | _Default | None,
        targets: list[Channel],
        marks: list[tuple[Channel, int, int]],
    ) -> bool:
        if timeout is SHUTDOWN_TIMEOUT or (timeout is None and self.stopping):
            # flush() without an argument, or logging.shutdown after our exit hook
            timeout = max((ch.options.shutdown_timeout for ch in targets), default=0.0)
        if holds_logging_lock():  # dictConfig: never hold logging's lock for long
            timeout = LOCKED_WAIT if timeout is None else min(timeout, LOCKED_WAIT)
        assert not isinstance(timeout, _Default)
        deadline = float("inf") if timeout is None else time.monotonic() + max(0.0, timeout)

        def done() -> bool:
            return all(
                ch.settled >= target and ch.on_disk <= 0 and not ch.backlog
                for ch, target, _ in marks
            )

        if not done():
            if self.thread is None:
                self.start()
            if self._alive() and threading.current_thread() is not self.thread:
                self.wake.set()
                with self.progress:
                    while not done():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not self._alive():
                            break
                        # Sleep until the thread made a pass.  Waking it after each of its
                        # passes would spin both threads while the endpoint is down: it
                        # wakes itself when a wait ends (or in _IDLE_WAKE), poke it only
                        # when no pass came for that long.
                        if not self.progress.wait(min(remaining, _IDLE_WAKE)):
                            self.wake.set()
            if not done() and not self._alive():
                self._drain(deadline, done)
        if not done():
            now = time.monotonic()
            for ch, target, _ in marks:
                if ch.settled < target or ch.on_disk > 0 or ch.backlog:
                    ch.timed_out_at = now
            return False
        return all(ch.lost + ch.spool_risk == lost for ch, _, lost in marks)

    def close_timeout(self, channel: Channel) -> float:
        """How long ``close()`` waits for ``channel``: its ``shutdown_timeout``, or nothing
        right after a flush of it ran out of time (``logging.shutdown`` calls ``flush()``,
        then ``close()``: one ``shutdown_timeout`` in all, not two)."""
        if time.monotonic() - channel.timed_out_at < RECENT_TIMEOUT:
            return 0.0
        return channel.options.shutdown_timeout

    def _drain(self, deadline: float, done: Callable[[], bool]) -> None:
        """Serve channels on the calling thread (no sender thread: exit, or a dead thread)."""
        if not self.service_lock.acquire(timeout=max(0.0, min(deadline - time.monotonic(), 5.0))):
            return
        try:
            while not done():
                now = time.monotonic()
                if now >= deadline:
                    return
                due = self._service_all()
                wait = min(due, deadline) - time.monotonic()
                if wait > 0 and not done():
                    time.sleep(min(wait, 0.5))
        finally:
            self.service_lock.release()

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is buffered within ``timeout`` seconds, count the rest, stop the thread."""
        if self.pid != os.getpid():
            self.after_fork_in_child()
        with self.lock:
            channels = list(self.channels)
        if timeout is None:
            timeout = max((ch.options.shutdown_timeout for ch in channels), default=0.0)
        self.deadline = time.monotonic() + timeout
        self.closing = True
        try:
            self.flush(timeout)
        finally:
            self.stopping = True
            self.wake.set()
            # What follows waits only for what is left of the budget (a little at least):
            # the exit stays within shutdown_timeout, give or take a few tens of ms.
            thread = self.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(min(0.5, self._slack()))
            # The thread may still be in a pass (a slow encode, a spool write): what is left
            # is counted once that pass is over, never while it moves batches around.
            served = self.service_lock.acquire(timeout=min(SHUTDOWN_LOCK_WAIT, self._slack()))
            try:
                for ch in channels:
                    if served:
                        self._settle_at_exit(ch, timeout)
                    else:
                        ch.report_unsettled_at_exit()
            finally:
                if served:
                    self.service_lock.release()
            self.transport.close()

    def _slack(self) -> float:
        """What is left of shutdown's deadline, and never less than a short wait."""
        return max(0.05, self.deadline - time.monotonic())

    def _settle_at_exit(self, ch: Channel, timeout: float) -> None:
        """The end of shutdown (service lock held): spool or count what is left of ``ch``."""
        with contextlib.suppress(Exception):  # a request still out ends now (bounded)
            ch.abandon_request(min(0.2, self._slack()))
            ch._collect()
        with contextlib.suppress(Exception):
            ch.spool_remaining()
        lost = ch.drop_remaining("shutdown")
        if lost:
            _diag.diag(
                logging.WARNING, f"shutdown:{ch.label}",
                "tblog: exit: %d events for %s not delivered within %.1fs",
                lost, ch.datasource, timeout,
            )  # fmt: skip
            ch.tell_lost_at_exit(lost)

    def after_fork_in_child(self) -> None:
        """Fresh locks, no thread, empty buffers and a new pool; the parent sends its own.

        Once per process, also when several threads of a child that ran no at-fork hook
        (uWSGI's ``--threads``) find the pid changed at once: the others wait for it, and
        ``pid`` is stamped last, so no thread buffers a record that a reset then forgets.
        """
        pid = os.getpid()
        with _fork_locks.setdefault(pid, threading.Lock()):  # made here: never held at fork
            if self.pid == pid:
                return
            self.transport.reset()
            self.pacer.reset()
            _diag.reset_after_fork()
            self.channels = [ch for ch in self.channels if not ch.closed]
            for ch in self.channels:
                ch.reset_after_fork()
            self._init_runtime()  # stamps ``pid``: last


_sender = Sender()


def get_sender() -> Sender:
    return _sender


def flush(timeout: float | _Default | None = SHUTDOWN_TIMEOUT) -> bool:
    """Deliver everything buffered by every tblog producer in this process.

    Returns True when all of it was delivered within ``timeout`` seconds.  Without an
    argument it waits at most the largest ``shutdown_timeout`` (like ``handler.flush()``);
    ``flush(None)`` waits without a limit.
    """
    return _sender.flush(timeout)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=busy_threads.clear)
    os.register_at_fork(after_in_child=_sender.after_fork_in_child)
_lifecycle.install(_sender)
