"""Celery: a prefork pool child delivers what it logged before billiard ends it with ``os._exit``.

Celery's prefork pool (billiard) retires a child (``--max-tasks-per-child``,
``--max-memory-per-child``, a pool shrink, a warm shutdown) by calling ``os._exit``:
no ``atexit`` hook runs there, so records still buffered would be lost.  Billiard sends
Celery's ``worker_process_shutdown`` signal in the child just before; tblog's receiver runs
the last exit pass (``tblog._delivery.lifecycle.last_pass``): delivery within the handlers'
``shutdown_timeout``, the rest counted as dropped.

Nothing to configure: tblog calls ``connect()`` itself when its sender starts in a process
that has imported Celery (the worker, or a pool child it forked).  Calling it yourself (e.g.
in a ``worker_process_init`` receiver) is harmless.  This module never imports Celery: it
uses ``celery.signals`` only when the process already did.
"""

from __future__ import annotations

import sys
from typing import Any

from tblog._delivery import lifecycle as _lifecycle

__all__ = ["connect"]

_UID = "tblog.last_pass"


def connect() -> bool:
    """Connect the receiver to ``worker_process_shutdown``; False when Celery is not loaded."""
    signals = sys.modules.get("celery.signals")
    if signals is None:
        return False
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False, dispatch_uid=_UID)
    return True


def _on_process_shutdown(**_: Any) -> None:
    _lifecycle.last_pass()
