"""Both ends of a plain ``queue.Queue`` done inline (``tblog._queues``) keep the queue's semantics.

Waits are made certain, not likely: a thread's ``Condition.wait`` is wrapped to say when it
is about to wait, and the other side then needs the mutex that only that wait gives up.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import Any

import pytest

import tblog
from tblog._queues import fast_put, take_all


def _announce_waits(cond: threading.Condition) -> threading.Event:
    """An event set each time a thread is about to wait on ``cond`` (holding its lock)."""
    waiting = threading.Event()
    wait = cond.wait

    def announced(timeout: float | None = None) -> bool:
        waiting.set()
        return wait(timeout)

    cond.wait = announced  # type: ignore[method-assign]
    return waiting


class _Subclass(queue.Queue[Any]):
    """A subclass may change any step: it keeps its own methods."""


@pytest.mark.parametrize("maxsize", [0, 2])
def test_fast_put_does_what_put_nowait_does(maxsize: int) -> None:
    ours, theirs = queue.Queue[Any](maxsize), queue.Queue[Any](maxsize)
    put = fast_put(ours)
    assert put != ours.put_nowait  # the inline path is the one under test
    outcomes = []
    for q, p in ((ours, put), (theirs, theirs.put_nowait)):
        full = 0
        for i in range(3):
            try:
                p(i)
            except queue.Full:
                full += 1
        outcomes.append((list(q.queue), q.unfinished_tasks, full))
    expected = ([0, 1, 2], 3, 0) if not maxsize else ([0, 1], 2, 1)
    assert outcomes == [expected, expected]


def test_fast_put_wakes_a_reader_that_waits() -> None:
    q = queue.Queue[Any]()
    waiting = _announce_waits(q.not_empty)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
    reader.start()
    assert waiting.wait(5)  # the reader holds the mutex until its wait gives it up
    fast_put(q)("hello")
    reader.join(5)
    assert not reader.is_alive() and got == ["hello"]


def test_other_queues_keep_their_own_put() -> None:
    replaced = queue.Queue[Any]()
    replaced.put_nowait = lambda item: None  # type: ignore[method-assign]
    for q in (_Subclass(), queue.LifoQueue[Any](), queue.SimpleQueue[Any](), replaced):
        assert fast_put(q) == q.put_nowait
        assert q is replaced or take_all(q) is None


def test_take_all_takes_everything_in_order_and_done_ends_join() -> None:
    q = queue.Queue[Any]()
    bulk = take_all(q)
    assert bulk is not None
    take, done = bulk
    for i in range(5):
        q.put(i)
    assert list(take()) == [0, 1, 2, 3, 4] and q.empty()
    assert q.unfinished_tasks == 5
    done(5)
    assert q.unfinished_tasks == 0
    q.join()  # returns at once: nothing unfinished


def test_take_all_waits_for_an_item_and_frees_blocked_writers() -> None:
    q = queue.Queue[Any](maxsize=1)
    bulk = take_all(q)
    assert bulk is not None
    take, done = bulk
    q.put("first")
    writer_waits = _announce_waits(q.not_full)
    writer = threading.Thread(target=q.put, args=("second",), daemon=True)  # the queue is full
    writer.start()
    assert writer_waits.wait(5)
    assert list(take()) == ["first"]  # and a slot is free: the writer goes on
    writer.join(5)
    assert not writer.is_alive()
    reader_waits = _announce_waits(q.not_empty)
    taken: list[Any] = []
    reader = threading.Thread(target=lambda: taken.extend(take()), daemon=True)
    assert list(take()) == ["second"]
    reader.start()  # the queue is empty now: the reader waits for the next put
    assert reader_waits.wait(5)
    q.put("third")
    reader.join(5)
    assert not reader.is_alive() and taken == ["third"]
    done(3)
    assert q.unfinished_tasks == 0


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, None, None)


def test_the_listener_handles_what_it_took_after_the_sentinel_too() -> None:
    q = queue.Queue[Any]()
    keep = _Keep()
    q.put(_record("before"))
    q.put(None)  # QueueListener's sentinel
    q.put(_record("after"))  # taken in the same take as the sentinel: handled, not lost
    listener = tblog.TinybirdQueueListener(q, keep)
    thread = listener._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive() and keep.messages == ["before", "after"]
    assert q.unfinished_tasks == 0 and q.empty()
    listener.stop()


def test_an_item_the_listener_cannot_handle_does_not_stop_the_rest() -> None:
    class Fragile(tblog.TinybirdQueueListener):
        def handle(self, record: Any) -> None:
            if record.getMessage() == "bad":
                raise RuntimeError("cannot")
            super().handle(record)

    q = queue.Queue[Any]()
    keep = _Keep()
    for item in (_record("bad"), _record("good"), None):  # one take: all three
        q.put(item)
    listener = Fragile(q, keep)
    thread = listener._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive() and keep.messages == ["good"]
    assert q.unfinished_tasks == 0
    listener.stop()


@pytest.mark.parametrize("make", [queue.SimpleQueue, _Subclass])
def test_the_listener_uses_get_on_other_queues(make: Any) -> None:
    q = make()
    keep = _Keep()
    listener = tblog.TinybirdQueueListener(q, keep)
    q.put(_record("one"))
    listener.stop()  # the sentinel goes after the record: handled first
    assert keep.messages == ["one"]


@pytest.mark.skipif(sys.version_info < (3, 13), reason="queue.Queue.shutdown is 3.13+")
def test_a_queue_shut_down_ends_the_listener_and_put_raises() -> None:
    q = queue.Queue[Any]()
    keep = _Keep()
    listener = tblog.TinybirdQueueListener(q, keep)
    put = fast_put(q)
    put(_record("one"))
    q.shutdown()  # type: ignore[attr-defined]
    thread = listener._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive() and keep.messages == ["one"]
    with pytest.raises(queue.ShutDown):  # type: ignore[attr-defined]
        put(_record("two"))
