"""Both ends of a plain ``queue.Queue`` without its chain of Python calls per item.

``queue.Queue.put_nowait`` is four Python-level calls (``put``, ``_qsize``, ``_put``,
``Condition.notify``, which itself checks the lock's ownership by trying to take it) around
one ``deque.append``, about 0.6 µs; the listener's ``get`` and ``task_done`` cost as much
again, per record.  ``fast_put`` does the put's steps in one function, under the same
mutex; ``take_all`` hands the listener everything queued at once and marks it done in one
step.  Both only for a queue whose type is exactly ``queue.Queue``; any other queue (a
subclass, a ``SimpleQueue``, a ``multiprocessing`` queue) keeps its own methods.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


def _plain(q: Any) -> bool:
    """A ``queue.Queue`` itself, with the attributes CPython's has (3.10 to 3.13)."""
    not_empty = getattr(q, "not_empty", None)
    return (
        type(q) is queue.Queue
        and type(not_empty) is threading.Condition
        and isinstance(getattr(not_empty, "_waiters", None), deque)
        and isinstance(getattr(q, "queue", None), deque)
    )


def fast_put(q: Any) -> Callable[[Any], None]:
    """``q.put_nowait``, or the same thing done inline for a plain ``queue.Queue``.

    The steps are ``queue.Queue.put(item, block=False)``'s: raise ``queue.Full`` at
    ``maxsize``, append, count an unfinished task (for ``join()``), and wake one reader if
    one waits.  A queue shut down (Python 3.13+) goes through ``put_nowait``, which raises
    ``queue.ShutDown`` as it should.
    """
    if not _plain(q) or "put_nowait" in vars(q):  # replaced on the instance: that one
        return q.put_nowait  # type: ignore[no-any-return]
    not_empty = q.not_empty
    mutex, waiters, notify, put_nowait = q.mutex, not_empty._waiters, not_empty.notify, q.put_nowait
    can_shut_down = hasattr(q, "is_shutdown")

    def put(item: Any) -> None:
        if can_shut_down and q.is_shutdown:
            put_nowait(item)
            return
        with mutex:
            items = q.queue
            if 0 < q.maxsize <= len(items):
                raise queue.Full
            items.append(item)
            q.unfinished_tasks += 1
            if waiters:
                notify()

    return put


def take_all(q: Any) -> tuple[Callable[[], deque[Any]], Callable[[int], None]] | None:
    """For a plain ``queue.Queue``: ``take()`` waits for an item and returns all that are
    queued (empty once the queue is shut down and drained, on 3.13+), and ``done(n)`` is
    ``task_done()`` for ``n`` of them.  None for any other queue."""
    if not _plain(q):
        return None
    not_empty, not_full, all_done = q.not_empty, q.not_full, q.all_tasks_done
    can_shut_down = hasattr(q, "is_shutdown")

    def take() -> deque[Any]:
        with not_empty:
            while not q.queue:
                if can_shut_down and q.is_shutdown:
                    return deque()
                not_empty.wait()
            items: deque[Any] = q.queue
            q.queue = deque()
            if q.maxsize > 0:
                not_full.notify(len(items))
            return items

    def done(n: int) -> None:
        with all_done:
            q.unfinished_tasks = max(0, q.unfinished_tasks - n)
            if not q.unfinished_tasks:
                all_done.notify_all()

    return take, done
