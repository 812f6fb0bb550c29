"""tblog's own diagnostics: the ``tblog`` logger, rate-limited per kind of message.

tblog never ships what it logs here (handlers ignore the ``tblog`` logger), and it
never calls ``basicConfig``: a ``NullHandler`` is attached so nothing is printed
unless the application configures logging.  Each diagnostic has a key; a key is
logged at most once per ``interval`` seconds, and the number of suppressed
repeats is reported with the next one.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("tblog")
logger.addHandler(logging.NullHandler())

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


def reset_after_fork() -> None:
    """Give a forked child fresh locks (the parent's may have been held at fork time)."""
    global _lock
    _lock = threading.Lock()
