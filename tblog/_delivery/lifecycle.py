"""What runs at process end and after fork: the exit passes, and hooks for ends ``atexit`` misses.

One exit budget per process: the largest ``shutdown_timeout``, counted from the first
pass that runs.  Every later pass gets what is left of it, so however many hooks fire,
tblog never holds up the end of a process for longer than that.

The ends of a process, and what delivers its buffered records there:

* A normal interpreter exit.  ``threading._shutdown`` runs the *first pass* before any
  ``atexit`` hook and before non-daemon threads are joined (``threading._register_atexit``,
  3.9+; what ``concurrent.futures`` uses): queue listeners drain their queues (``early``
  callbacks), then the sender delivers what is buffered.  This comes before
  ``multiprocessing``'s exit function, which closes every ``multiprocessing.Queue``, whichever
  of tblog and ``multiprocessing`` was imported first (``atexit`` alone runs hooks last-in,
  first-out: the queue was closed under its listener).  The ``atexit`` hook is the *last
  pass*: what non-daemon threads and later ``atexit`` hooks logged is delivered or counted
  as dropped (reason ``shutdown``), and the sender thread stops.
* A ``multiprocessing`` child (fork, forkserver or spawn; ``Pool`` workers too), which ends
  with ``os._exit``: ``Process._bootstrap`` calls ``threading._shutdown`` first (3.10-3.13),
  so the first pass runs there, and in a child it is the last pass as well.
* ``Process.terminate()`` and ``Pool.terminate()`` (``with Pool() as pool:``): SIGTERM.  In a
  ``multiprocessing`` child whose SIGTERM is still the default, tblog's handler delivers
  within the exit budget on a helper thread (the interrupted main thread may hold a lock
  the delivery needs: then the wait ends at the budget, and what is left is reported), then
  restores the default and re-sends SIGTERM, so the process still ends as killed by it.
* A Celery prefork child (billiard ends it with ``os._exit``): the ``worker_process_shutdown``
  signal runs the last pass (``tblog.integrations.celery``), connected by itself once the
  process has imported Celery.
* A bare ``os.fork()`` child that ends with ``os._exit``: nothing runs.  tblog does not patch
  ``os._exit``: it is the call that means "skip all cleanup" (after a failed exec, in a
  crashed child, in servers that kill a worker on purpose), and delivering there could
  hang a process that asked not to wait.  Such a child calls ``tblog.flush()`` first.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from tblog import _diag

if TYPE_CHECKING:
    from tblog._delivery.sender import Sender

_sender: Sender | None = None
_deadline: float | None = None  # monotonic end of the exit budget, while its clock runs
_left: float | None = None  # the budget left between passes (None: none started yet)
_early: list[Callable[[float], None]] = []  # first-pass callbacks, given the budget left
_late: list[Callable[[float], None]] = []  # last-pass callbacks, before the final delivery
_sigterm_pid = 0  # the process whose SIGTERM handler is tblog's
_in_pass = False  # the main thread is in an exit pass (where SIGTERM handlers run)
_sigterm_waits = False  # a SIGTERM came during that pass: it ends the process after it
_handler_began = threading.Event()  # the main thread runs the SIGTERM handler
_claim = threading.Lock()  # taken by whichever of the handler and the watchdog ends the process
_wakeup: list[socket.socket] = []  # the wakeup fd's socket
_HANDLER_GRACE = 0.25  # seconds the watchdog gives the main thread to begin the handler


def install(sender: Sender) -> None:
    """Hook the ends of the process for ``sender`` (once, when ``tblog._delivery.sender`` loads)."""
    global _sender
    _sender = sender
    atexit.register(last_pass)
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # imported while the interpreter shuts down
            register(first_pass)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def on_first_pass(callback: Callable[[float], None]) -> None:
    """Run ``callback(seconds_left)`` at the start of the first pass, before delivery."""
    _early.append(callback)


def on_last_pass(callback: Callable[[float], None]) -> None:
    """Run ``callback(seconds_left)`` at the start of the last pass, before delivery."""
    _late.append(callback)


def budget() -> float:
    """Seconds left of this process's exit budget (its clock runs during the passes only:
    the application's own time between them, joining its threads, is not tblog's)."""
    global _deadline
    if _deadline is None:
        left = _left
        if left is None:
            channels = list(_sender.channels) if _sender is not None else []
            left = max((ch.options.shutdown_timeout for ch in channels), default=0.0)
        _deadline = time.monotonic() + left
    return max(0.0, _deadline - time.monotonic())


def in_multiprocessing_child() -> bool:
    """A ``multiprocessing`` child: it ends with ``os._exit``, after ``threading._shutdown``."""
    process = sys.modules.get("multiprocessing.process")
    parent_process = getattr(process, "parent_process", None)
    try:
        return parent_process is not None and parent_process() is not None
    except Exception:  # noqa: BLE001
        return False


def first_pass() -> None:
    """Before ``atexit`` hooks and non-daemon threads are joined (see the module docstring)."""
    with _pass():
        _first_pass()


def _first_pass() -> None:
    with contextlib.suppress(Exception):  # never make exit fail
        for callback in list(_early):
            with contextlib.suppress(Exception):
                callback(budget())
        if in_multiprocessing_child():
            last_pass()  # os._exit follows: no atexit hook runs
        elif _sender is not None and _sender.channels:
            _sender.flush(budget())


def last_pass() -> None:
    """Deliver within what is left of the budget, count the rest, stop the sender thread."""
    with _pass(), contextlib.suppress(Exception):  # never make exit fail
        for callback in list(_late):
            with contextlib.suppress(Exception):
                callback(budget())
        if _sender is not None and _sender.channels:
            _sender.shutdown(budget())


@contextlib.contextmanager
def _pass() -> Iterator[None]:
    """One exit pass: the budget's clock stops when it ends.  On the main thread it is
    marked: a SIGTERM that came meanwhile ends the process once the (bounded) pass is over,
    rather than starting a second one next to it."""
    global _in_pass, _deadline, _left
    outer = not _in_pass
    marks = outer and threading.current_thread() is threading.main_thread()
    if marks:
        _in_pass = True
    try:
        yield
    finally:
        if outer and _deadline is not None:
            _left, _deadline = max(0.0, _deadline - time.monotonic()), None
        if marks:
            _in_pass = False
            if _sigterm_waits:
                _die_of_sigterm()


def _after_fork_in_child() -> None:
    global _deadline, _left, _in_pass, _sigterm_waits, _handler_began, _claim, _sigterm_pid
    _deadline = _left = None
    _in_pass = _sigterm_waits = False
    _handler_began, _claim = threading.Event(), threading.Lock()
    if _wakeup:
        # A child forked by a pool worker (its task ran os.fork()) inherits the worker's
        # SIGTERM hook, but not its watchdog thread: its SIGTERM would wake the parent's
        # watchdog through the shared socket, which would end the parent.  The child starts
        # with SIGTERM as it was before tblog (it hooks again if it becomes a pool worker).
        # (A SIGTERM that reaches the child in the microseconds before this hook runs still
        # wakes the parent's watchdog.)
        with contextlib.suppress(Exception):
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
        for sock in _wakeup:
            with contextlib.suppress(Exception):
                sock.close()
        _wakeup.clear()
        _sigterm_pid = 0


def on_sender_start() -> None:
    """The sender thread started in this process: hook the ends that only now are known."""
    with contextlib.suppress(Exception):
        if in_multiprocessing_child():
            _hook_sigterm()
        if "celery.signals" in sys.modules:
            from tblog.integrations import celery  # noqa: PLC0415 - only with Celery loaded

            celery.connect()


@contextlib.contextmanager
def sigterm_blocked() -> Iterator[None]:
    """Start tblog's threads inside this: they are born with SIGTERM blocked (a new thread
    takes its creator's signal mask), so the kernel never picks one of them for SIGTERM.

    A Python signal handler only runs on the main thread: had a tblog thread taken the
    signal, a main thread blocked in a system call (a pool worker waiting for its next
    task) would not notice it, and the process would not end.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    old = None
    if mask is not None:
        with contextlib.suppress(Exception):
            old = mask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if mask is not None and old is not None and signal.SIGTERM not in old:
            mask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _hook_sigterm() -> None:
    """Deliver on SIGTERM in a ``multiprocessing.Pool`` worker (``Pool.terminate()``, which
    ``with Pool() as pool:`` calls), unless SIGTERM is the application's.

    Only in a pool worker whose other threads are all tblog's: a Python handler runs on the
    main thread, and a thread of the application could take the signal while the main
    thread waits in a system call, which would keep the worker (and ``terminate()``) from
    ending.  A plain ``Process.terminate()`` is an explicit kill, and stays one.
    """
    global _sigterm_pid
    pid = os.getpid()
    if _sigterm_pid == pid or threading.current_thread() is not threading.main_thread():
        return
    process = sys.modules.get("multiprocessing.process")
    name = process.current_process().name if process is not None else ""
    if "PoolWorker" not in name or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    main = threading.main_thread()
    if any(t is not main and not t.name.startswith("tblog-") for t in threading.enumerate()):
        return
    # The watchdog: a signal can land just before the main thread enters a blocking call,
    # which then does not return to run the handler.  The wakeup fd tells a tblog thread.
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        old = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if old != -1:  # the application's (an event loop): leave it, and SIGTERM, alone
            signal.set_wakeup_fd(old)
            raise ValueError("wakeup fd in use")
        signal.signal(signal.SIGTERM, _on_sigterm)
        with sigterm_blocked():
            threading.Thread(
                target=_watch, args=(reader,), name="tblog-sigterm-watch", daemon=True
            ).start()
    except (ValueError, OSError, RuntimeError):
        with contextlib.suppress(Exception):
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
        reader.close()
        writer.close()
        return
    _wakeup.extend((writer, reader))  # open for as long as CPython writes to it
    _sigterm_pid = pid


def _watch(reader: socket.socket) -> None:
    """Hear SIGTERM through the wakeup fd; if the main thread's handler has not begun soon
    after, deliver here (within the exit budget) and end the process (status 128+SIGTERM)."""
    while True:
        try:
            data = reader.recv(64)
        except OSError:
            return
        if not data:
            return
        if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
            return  # the application's handler now: SIGTERM is its to decide, not ours
        if signal.SIGTERM not in data or _handler_began.wait(_HANDLER_GRACE) or _in_pass:
            continue
        if _claim.acquire(blocking=False):
            seconds = budget()
            deliver = threading.Thread(target=last_pass, name="tblog-sigterm", daemon=True)
            deliver.start()
            deliver.join(seconds + 0.5)
            if deliver.is_alive():
                _report_undelivered("SIGTERM")
            os._exit(128 + signal.SIGTERM)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _sigterm_waits
    _handler_began.set()
    if _in_pass:  # interrupted inside an exit pass, which holds what a second pass would need
        _sigterm_waits = True
        return
    if not _claim.acquire(blocking=False):
        return  # the watchdog is ending the process
    seconds = budget()
    done = threading.Event()

    def deliver() -> None:
        try:
            last_pass()
        finally:
            done.set()

    with contextlib.suppress(Exception):
        with sigterm_blocked():
            threading.Thread(target=deliver, name="tblog-sigterm", daemon=True).start()
        if not done.wait(seconds + 0.5):
            _report_undelivered("SIGTERM")
    _die_of_sigterm()


def _die_of_sigterm() -> None:
    """End as SIGTERM's default action would have (the exit status says so)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _report_undelivered(why: str) -> None:
    """The last pass could not finish: say how many events this process leaves behind."""
    sender = _sender
    if sender is None:
        return
    for ch in list(sender.channels):
        left = ch.enqueued - ch.settled
        if left > 0:
            _diag.diag(
                logging.WARNING, f"exit:{ch.label}",
                "tblog: %s: %d events for %s not delivered before the process ended",
                why, left, ch.datasource,
            )  # fmt: skip
