"""One producer's channel: its bounded buffer, its batches, its requests, its delivery state.

Every producer in the process (each handler, each integration) owns a ``Channel``; the one
sender thread (``tblog._delivery.sender``) serves them all through ``Channel.service``.

* The caller's side: ``put`` buffers a cheap snapshot.  It never blocks, never does I/O and
  never raises; when the buffer is full it drops by ``drop_policy`` and counts the drop.  On
  CPython with the GIL it takes no lock at all (see ``ATOMIC``): a producer preempted inside
  a lock would make every other producer thread queue up behind it.
* The sender's side: ``_fill`` encodes what is buffered into the draft ``Batch`` (evicting
  the oldest encoded events past the bounds), ``_close_draft`` queues it, ``_attempt`` sends
  the first pending batch on a request thread of its own (one ``InFlight`` at most), and
  ``_collect`` takes its answer (or aborts it at its deadline).  ``_finish`` applies what
  ``policy.decide`` makes of the answer.
* Its counters and messages are ``accounting.Accounting``'s, its use of the spool
  ``spooling.Spooling``'s (the bases of ``Channel``).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tblog import _diag
from tblog._config import Options
from tblog._delivery import lifecycle as _lifecycle
from tblog._delivery import runtime as _runtime
from tblog._delivery import transport as _transport
from tblog._delivery.batch import BYTES_OVERHEAD, Batch, InFlight, line_size
from tblog._delivery.breaker import OPEN, CircuitBreaker
from tblog._delivery.policy import (
    DELIVERED,
    DROP,
    GIVE_UP,
    RELEASE,
    SPLIT_HALVES,
    SPOOL,
    TOO_LARGE,
    BatchState,
    Decision,
    decide,
)
from tblog._delivery.sender import IDLE_WAKE, busy_threads
from tblog._delivery.spool import Spool
from tblog._delivery.spooling import Spooling
from tblog._delivery.transport import RETRY, Result, Transport
from tblog._event.encode import join_lines

if TYPE_CHECKING:
    from tblog._delivery.sender import Sender

Encoder = Callable[[Any], "bytes | None"]
Measure = Callable[[Any], int]
#: ``sum(map(measure, items))`` of a list of items, when the producer has a faster way.
MeasureMany = Callable[[list[Any]], int]

#: CPython with the GIL: a deque append is atomic, and so is a statement such as
#: ``self.count += n`` that calls nothing (the interpreter only switches threads at calls and
#: loop edges).  Producers then put without the channel's lock; elsewhere they take it.
ATOMIC = platform.python_implementation() == "CPython" and bool(
    getattr(sys, "_is_gil_enabled", lambda: True)()
)

#: Encodes many items at once: their NDJSON lines in chunks of lines joined by newlines, and
#: how many lines there are (an item that cannot be encoded has none; the channel counts it).
BatchEncoder = Callable[[Sequence[Any]], "tuple[list[bytes], int]"]

WAKE_AT = 512  # buffered items that wake the sender thread (at most batch_size)
#: Buffered items, as a multiple of the wake-up mark, past which a producer asks whether the
#: sender thread still runs (every ``_STARVED_EVERY`` puts; see ``Sender.check_starved``).
_STARVED_FACTOR = 8
_STARVED_EVERY = 1024


class Channel(Spooling):
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
        measure_many: MeasureMany | None = None,
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
        self.measure_many: MeasureMany = measure_many or self._measure_each
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

    def _measure_each(self, items: list[Any]) -> int:
        return sum(map(self.measure, items))

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
        taken = self.measure_many(items)
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
        out = InFlight(batch, body, now + timeout, self.flushes)
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
            self._finish(batch, body, out.result, out.finished, out.flushes)
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
            self._finish(out.batch, out.body, out.result, out.finished, out.flushes)
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
        return min(out.deadline, now + IDLE_WAKE)

    def abandon_request(self, wait: float) -> None:
        """At exit: abort the request in flight and give its thread ``wait`` seconds to end."""
        out = self.inflight
        if out is None or out.result is not None:
            return
        _transport.abort(out.ident)
        for thread in threading.enumerate():
            if thread.ident == out.ident:
                thread.join(wait)

    def _finish(
        self, batch: Batch, body: bytes, result: Result, after: float, flushes: int
    ) -> None:
        """Apply what the answer to ``batch`` (answered at ``after``) means: ``policy.decide``
        says what; here are its side effects (counters, spool, breaker, warnings)."""
        opts = self.options
        if self.sender.pacer.observe(self.key, after, result.rate_remaining, result.rate_reset):
            self.paced += 1
        state = BatchState(batch.count, batch.attempts, batch.first_try, batch.segment is not None)
        interval, failures = self.interval, self.breaker.failures
        decision = decide(state, result, after, opts, interval, failures, self.spool is not None)
        self.interval = decision.interval
        with self.lock:
            self.last_status = result.status
        if decision.kind == DELIVERED:
            self._delivered(batch, body, result)
            return
        with self.lock:
            self.last_error = result.error
        if result.action == RETRY:
            self._count_attempt(batch, result, decision, after)
            if decision.kind == SPOOL and not self._to_spool(batch):  # the disk refused it
                decision = decide(state, result, after, opts, interval, failures, False)
            self._retry_later(batch, result, decision)
            if self.flushes != flushes and self.flush_waiters and self.breaker.state == OPEN:
                # A flush began while this request was out: it ended the waits it found, but
                # this failure opened the circuit after that.  Its probe is still owed.
                self.breaker.probe_now()
            return
        self.breaker.success()  # the server answered: it is up, this batch is what it refuses
        self.pending.popleft()
        if decision.kind == SPLIT_HALVES:
            if batch.segment is not None and batch.count > 1:
                self._split_segment(batch)
            else:
                first, second = batch.halves()
                self.pending.appendleft(second)
                self.pending.appendleft(first)
            return
        if batch.segment is not None:
            self._segment_settled(batch, delivered=False, reason=decision.reason)
        else:
            self._settle(batch.count, lost=True, reason=decision.reason)
        if decision.kind == TOO_LARGE:
            self._warn(result, "a single event is too large for Tinybird; dropped")
            self._tell("too_large", f"{result.error}; a single event is too large; dropped")
            return
        assert decision.kind == DROP
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

    def _delivered(self, batch: Batch, body: bytes, result: Result) -> None:
        """The first pending batch was taken: count it sent."""
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
            if self.options.wait and result.status == 202:
                self.unconfirmed += batch.count
            if result.successful_rows is not None:
                self.successful_rows += result.successful_rows
            if result.quarantined_rows:
                self.quarantined_rows += result.quarantined_rows
        if result.quarantined_rows:
            self._warn_quarantine(result.quarantined_rows)

    def _count_attempt(
        self, batch: Batch, result: Result, decision: Decision, after: float
    ) -> None:
        """A retryable answer: a 429 (the server is up: not a failure) or a failed attempt."""
        if not decision.failed:
            self.breaker.success()
            with self.lock:
                self.rate_limited += 1
            return
        batch.attempts = decision.attempts
        if self.breaker.failure(after):
            _diag.diag(
                logging.WARNING, f"circuit:{self.label}",
                "tblog: %d consecutive failed requests to %s (%s); pausing delivery for "
                "%.0fs, events keep buffering", self.breaker.failures, self.datasource,
                result.error, self.options.circuit_breaker_reset,
            )  # fmt: skip

    def _retry_later(self, batch: Batch, result: Result, decision: Decision) -> None:
        """Wait (in memory, or on disk: spooled or a segment released) or give up, as decided."""
        if decision.kind in {SPOOL, RELEASE}:  # it waits on disk, not in memory
            self.pending.popleft()
            if decision.kind == RELEASE:
                assert self.spool is not None
                assert batch.segment is not None
                self.spool.release(batch.segment)
        elif decision.kind == GIVE_UP:
            self.pending.popleft()
            self._settle(batch.count, lost=True, reason=decision.reason)
            gave_up = (
                f"gave up after {batch.attempts} failed attempts in {decision.elapsed:.0f}s; "
                f"dropped {batch.count} events"
            )
            self._warn(result, gave_up)
            self._tell(decision.reason, f"{result.error}; {gave_up}")
            return
        with self.lock:
            self.retries += 1
        self.retry_at = decision.retry_at
        if result.reason == "bad_response":  # not Tinybird answering: say so at once
            self._warn(result, "will retry")
            self._tell(result.reason, f"{result.error}; will retry")
        else:
            self._warn(result, "will retry", level=logging.INFO)

    def drop_remaining(self, reason: str) -> int:
        """Count everything still buffered or pending as dropped (at the end of shutdown)."""
        with self.lock:
            popleft = self.buf.popleft
            gone = [popleft() for _ in range(len(self.buf))]
            n = len(gone) + self.draft.count + sum(b.count for b in self.pending)
            self.draft = Batch()
            self.pending.clear()
        self._recount()
        gone_bytes = self.measure_many(gone)
        self.buf_bytes -= gone_bytes
        if n:
            self._settle(n, lost=True, reason=reason)
        return n

    def reset_after_fork(self) -> None:
        self._init_state()
