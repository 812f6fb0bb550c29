"""tblog's own diagnostics: the ``tblog`` logger, rate-limited per kind of message.

tblog never ships what it logs here (handlers ignore the ``tblog`` logger), and it
never calls ``basicConfig``: a ``NullHandler`` is attached so nothing is printed
unless the application configures logging.  Each diagnostic has a key; a key is
logged at most once per ``interval`` seconds, and the number of suppressed
repeats is reported with the next one.

What costs the user data (a permanent refusal, a loss at exit, an endpoint that is not
Tinybird's) is also *told*: one line written straight to ``sys.stderr`` (not through
logging, so no handler can feed it back), once per process and key (destination and
cause), as ``warnings.warn`` would.  ``TBLOG_QUIET=1`` or a producer's ``warn_stderr=False``
silences it; the line never holds a token.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

logger = logging.getLogger("tblog")
logger.addHandler(logging.NullHandler())

#: Threads whose log records tblog refuses (the same dict as
#: ``tblog._delivery.sender.busy_threads``).
busy_threads: dict[int, bool] = {}

_lock = threading.Lock()
_last: dict[str, float] = {}
_suppressed: dict[str, int] = {}

DEFAULT_INTERVAL = 60.0


def diag(level: int, key: str, msg: str, *args: object, interval: float = DEFAULT_INTERVAL) -> bool:
    """Log ``msg % args`` to ``tblog`` unless ``key`` was logged in the last ``interval`` seconds.

    Never raises.  Returns True when the message was logged.
    """
    try:
        now = time.monotonic()
        with _lock:
            last = _last.get(key)
            if last is not None and now - last < interval:
                _suppressed[key] = _suppressed.get(key, 0) + 1
                return False
            _last[key] = now
            repeats = _suppressed.pop(key, 0)
        if repeats:
            msg += " (%d similar messages suppressed)"
            args = (*args, repeats)
        logger.log(level, msg, *args)
    except Exception:  # noqa: BLE001 - diagnostics must never break the sender
        return False
    return True


def warn_once(key: str, msg: str, *args: object) -> bool:
    """Log a warning the first time ``key`` is seen in this process, and never again."""
    return diag(logging.WARNING, key, msg, *args, interval=float("inf"))


#: Set to 1 (or true, yes, on) to silence ``tell``'s stderr lines in the whole process.
QUIET_ENV = "TBLOG_QUIET"
_told: set[str] = set()


def quiet() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def tell(key: str, line: str) -> bool:
    """Write ``line`` to ``sys.stderr`` the first time ``key`` is told in this process.

    One line (whitespace folded), straight to the stream: never through logging.  Never
    raises; returns True when the line was written.
    """
    try:
        if quiet():
            return False
        with _lock:
            if key in _told:
                return False
            _told.add(key)
        stream = sys.stderr
        if stream is None:  # pythonw, or a daemon that closed it
            return False
        ident = threading.get_ident()
        guard = ident not in busy_threads  # a stderr redirected into logging refuses it
        if guard:
            busy_threads[ident] = True
        try:
            stream.write(" ".join(line.split()) + "\n")
            stream.flush()
        finally:
            if guard:
                busy_threads.pop(ident, None)
    except Exception:  # noqa: BLE001 - a closed or broken stderr must never break the sender
        return False
    return True


def reset_after_fork() -> None:
    """Give a forked child fresh locks (the parent's may have been held at fork time).

    The child is a process of its own: what the parent told, it tells again once.
    """
    global _lock
    _lock = threading.Lock()
    _told.clear()
