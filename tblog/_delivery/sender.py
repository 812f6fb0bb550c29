"""The one shared sender: one thread per process serving every channel; flush, exit, fork.

Every producer in the process (each handler, each integration) owns a ``Channel``
(``tblog._delivery.channel``): a bounded FIFO of cheap snapshots plus its delivery state.
One daemon thread per process (``Sender``) serves all channels: they turn buffered items
into NDJSON batches (``batch``), gzip them, and retry, split or drop each batch by what the
response says (``policy``).  It never waits on the network: each request runs on a
short-lived thread of its own (at most one per channel, see ``batch.InFlight``) through one
pooled ``requests.Session``, and is cut at its total deadline (``timeout``).  A channel
waiting out a backoff, or an endpoint that answers slowly or never, never holds up another.

Guarantees, and where they live:

* ``Channel.put`` (the caller's side) never blocks, never does I/O and never raises;
  when the buffer is full it drops by ``drop_policy`` and counts the drop.  On CPython
  with the GIL it takes no lock at all (see ``channel.ATOMIC``): a producer preempted
  inside a lock would make every other producer thread queue up behind it.
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
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tblog import _diag
from tblog._delivery import lifecycle as _lifecycle
from tblog._delivery import runtime as _runtime
from tblog._delivery.breaker import Pacer
from tblog._delivery.transport import Transport

if TYPE_CHECKING:
    from tblog._delivery.channel import Channel

IDLE_WAKE = 1.0  # the thread re-checks its channels at least this often
#: How long the sender's loop may have stood still, while a producer sees the buffer far past
#: the wake-up mark (see ``channel.WAKE_AT``), before that is told on stderr (uWSGI without
#: threads, a blocked event loop).
STARVED_AFTER = 10.0
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


class Sender:
    """The process's delivery thread, serving every channel."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        #: Called with ``time.monotonic()`` at the start of every pass (at least every
        #: ``IDLE_WAKE``): trace holds that ran out, periodic drop reports.  Never raise.
        self.ticks: list[Callable[[float], None]] = []
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

    def on_tick(self, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` on every pass of the sender (see ``ticks``)."""
        self.ticks.append(callback)

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
                delay = min(due - time.monotonic(), IDLE_WAKE)
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
        for tick in self.ticks:
            with contextlib.suppress(Exception):  # a tick never stops the sender
                tick(now)
        due = now + IDLE_WAKE
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
                        # wakes itself when a wait ends (or in IDLE_WAKE), poke it only
                        # when no pass came for that long.
                        if not self.progress.wait(min(remaining, IDLE_WAKE)):
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
    ``flush(None)`` waits without a limit.  Dedup summaries held back ("repeated K
    times", ``tblog._event.gate``) are shipped first.
    """
    from tblog._event.gate import drain_all  # noqa: PLC0415 - _event sits above _delivery

    drain_all()
    return _sender.flush(timeout)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=busy_threads.clear)
    os.register_at_fork(after_in_child=_sender.after_fork_in_child)
_lifecycle.install(_sender)
