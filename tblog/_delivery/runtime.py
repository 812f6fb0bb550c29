"""Where tblog runs: uWSGI's master process, AWS Lambda; and flushing per invocation.

Owns the question the sender asks before it starts its thread (``thread_allowed``), the
once-only hints on stderr about set-ups that hang or lose records, and ``flushing``, the
public decorator and context manager that delivers at the end of each call (serverless
handlers, uWSGI without a sender thread, batch jobs).

* uWSGI forks its workers from the master with ``fork(2)`` and, unless started with
  ``--py-call-osafterfork``, runs none of Python's at-fork hooks: a thread that runs in
  the master at fork (or holds the GIL then) leaves workers stuck forever.  So in such a
  master (``uwsgi.worker_id() == 0``, no ``--lazy-apps``) tblog starts no thread; what the
  master logs waits for ``tblog.flush()`` (the master runs no Python exit hook).  Workers
  fix themselves up by the pid checks of the sender and the event ids.
* AWS Lambda freezes the process between invocations: what is buffered at the end of one
  waits for the next, or is lost with the environment.  ``flushing`` delivers it before
  the handler returns; without it, a hint is printed once.
* gevent and eventlet monkey-patching after ``import tblog`` is the sender's own concern
  (``Sender._make_primitives``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from tblog import _diag

F = TypeVar("F", bound=Callable[..., Any])

_checked_pid = 0
_allowed = True
_said: set[str] = set()
#: A ``flushing`` was made in this process (the Lambda hint is then not needed).
_flushing_made = False

UWSGI_MASTER_HINT = (
    "tblog: uWSGI forks its workers from this process without running Python's at-fork "
    "hooks (no --py-call-osafterfork): a thread running here at fork would leave the "
    "workers stuck, so tblog starts no sender thread in this process: what it logs is "
    "delivered only by tblog.flush() (uWSGI's master runs no Python exit hooks; call it at "
    "the end of the WSGI module). Workers deliver normally. To fix: run uWSGI with "
    "--py-call-osafterfork (or --lazy-apps)."
)
LAMBDA_HINT = (
    "tblog: running on AWS Lambda, which freezes the process between invocations: records "
    "still buffered when the handler returns wait for the next invocation or are lost. "
    "Decorate the handler with @tblog.flushing() (or call tblog.flush() before returning)."
)


def say_once(key: str, text: str) -> bool:
    """Write ``text`` to stderr the first time ``key`` is seen in this process; never raises.

    Through ``_diag.tell`` (one line, once per process, silenced by ``TBLOG_QUIET=1``).
    """
    if key in _said:
        return False
    _said.add(key)
    return _diag.tell(f"runtime:{key}", text)


def thread_allowed() -> bool:
    """May the sender start its thread in this process?  Decided once per process (pid)."""
    global _checked_pid, _allowed
    pid = os.getpid()
    if pid != _checked_pid:
        _checked_pid = pid
        _allowed = _check()
    return _allowed


def reset() -> None:
    """Forget what was decided and said (tests)."""
    global _checked_pid, _flushing_made
    _checked_pid = 0
    _flushing_made = False
    for key in _said:
        _diag._told.discard(f"runtime:{key}")
    _said.clear()


def _check() -> bool:
    try:
        uwsgi = sys.modules.get("uwsgi")
        if uwsgi is not None and hasattr(uwsgi, "opt") and not uwsgi_allows_thread(uwsgi):
            say_once("uwsgi-master", UWSGI_MASTER_HINT)
            return False
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and not _flushing_made:
            say_once("lambda", LAMBDA_HINT)
    except Exception:  # noqa: BLE001 - a check must never stop delivery
        return True
    return True


def _on(opt: dict[str, Any], name: str) -> bool:
    value = opt.get(name)
    return value is not None and value not in (False, b"false", b"0", "false", "0", b"", "")


def uwsgi_allows_thread(uwsgi: Any) -> bool:
    """False in a uWSGI process that will fork workers without the at-fork hooks."""
    opt = dict(uwsgi.opt)
    if uwsgi.worker_id() or getattr(uwsgi, "mule_id", lambda: 0)():
        return True  # a worker or a mule: forked already
    if _on(opt, "lazy-apps") or _on(opt, "lazy") or _on(opt, "py-call-osafterfork"):
        return True
    processes = opt.get("processes") or opt.get("workers") or b"1"
    return not _on(opt, "master") and int(processes) <= 1


class flushing(contextlib.ContextDecorator):  # noqa: N801 - used like a function
    """Deliver what was logged before the end of a call: a decorator or a context manager.

    For handlers whose process may be frozen or stopped as soon as they return (AWS
    Lambda, Google Cloud Functions, Azure Functions, a uWSGI master, a cron job)::

        @tblog.flushing()
        def handler(event, context): ...

        with tblog.flushing(timeout=2.0):
            ...

    On the way out (a return or an exception, which propagates unchanged) it calls
    ``tblog.flush(timeout)``: everything any tblog producer buffered is delivered, or the
    wait ends after ``timeout`` seconds (what is left stays buffered, and a later flush or
    the exit delivers or counts it).  ``ok`` is that flush's result.  Works on ``async def``
    functions too (the wait then runs on a worker thread).  Never raises by itself.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        global _flushing_made
        _flushing_made = True
        self.timeout = timeout
        self.ok: bool | None = None

    def __enter__(self) -> flushing:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._flush()

    def _flush(self) -> bool:
        from tblog._delivery.sender import get_sender  # noqa: PLC0415 - avoid an import cycle

        try:
            self.ok = get_sender().flush(self.timeout)
        except Exception:  # noqa: BLE001 - delivery trouble never replaces the call's outcome
            self.ok = False
        return self.ok

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                finally:
                    await asyncio.to_thread(self._flush)

            return run_async  # type: ignore[return-value]
        return super().__call__(func)
