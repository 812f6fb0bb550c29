"""The queue path (in-process and multiprocessing) and fork safety."""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import queue
import sys
import threading
from typing import Any

import pytest

import tblog
from tblog._delivery.sender import get_sender
from tests.eventsapi import EventsAPI

fork_only = pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs os.fork",
)


def _queue_handler(
    events_api: EventsAPI, q: Any, **options: Any
) -> tblog.TinybirdLoggingQueueHandler:
    return tblog.TinybirdLoggingQueueHandler(
        q, events_api.url, events_api.token, "queued", **options
    )


def test_queue_handler_ships_with_context(events_api: EventsAPI, logger: logging.Logger) -> None:
    handler = _queue_handler(events_api, queue.Queue(-1))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        with tblog.trace("tq", "sq"), tblog.bound(k="v"):
            logger.info("hi %s", "there", extra={"n": 1})
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("oops")
        handler.close()
        handler.close()  # idempotent
    finally:
        logger.removeHandler(handler)
    rows = events_api.rows()
    assert [r["message"] for r in rows] == ["hi there", "oops"]
    assert (rows[0]["trace_id"], rows[0]["span_id"]) == ("tq", "sq")
    assert rows[0]["extra"] == {"k": "v", "n": 1}
    assert rows[0]["formatted_message"] == "INFO hi there"
    assert rows[1]["exception"]["type"] == "KeyError"
    assert handler.stats()["sent"] == 2


def test_the_sdk_argument_order_works_for_the_queue_handler(events_api: EventsAPI) -> None:
    with pytest.warns(UserWarning):
        handler = tblog.TinybirdLoggingQueueHandler(
            queue.Queue(-1), events_api.token, events_api.url, "sdk-order"
        )
    handler.close()
    assert handler.handler.api_url == events_api.url


def test_a_full_bounded_queue_counts_drops(events_api: EventsAPI, logger: logging.Logger) -> None:
    q: queue.Queue[Any] = queue.Queue(maxsize=1)
    handler = _queue_handler(events_api, q)
    handler.listener.stop()  # nobody drains the queue now
    logger.addHandler(handler)
    try:
        logger.info("a")
        logger.info("b")
        logger.info("c")
    finally:
        logger.removeHandler(handler)
    assert handler.stats()["dropped"] == {"queue_full": 2}
    handler.close()


def _child_logs(name: str, trace_id: str) -> None:
    log = logging.getLogger(name)
    with tblog.trace(trace_id):
        log.warning("from child %d", os.getpid(), extra={"weird": object()})


def _in_children(ctx: Any, target: Any, name: str, trace_ids: list[str]) -> set[int | None]:
    """Run ``target(name, trace_id)`` in a child process per trace id; each must exit cleanly.
    Returns the children's pids."""
    procs = [ctx.Process(target=target, args=(name, trace_id)) for trace_id in trace_ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return {p.pid for p in procs}


@fork_only
def test_multiprocessing_queue_children_records_arrive(
    events_api: EventsAPI, logger: logging.Logger
) -> None:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue(-1)
    handler = _queue_handler(events_api, q)
    logger.addHandler(handler)
    try:
        pids = _in_children(ctx, _child_logs, logger.name, ["child-0", "child-1", "child-2"])
        handler.close()
    finally:
        logger.removeHandler(handler)
    rows = events_api.rows()
    assert sorted(r["trace_id"] for r in rows) == ["child-0", "child-1", "child-2"]
    assert all(r["message"].startswith("from child") for r in rows)
    assert {r["process_id"] for r in rows} == pids
    assert all(r["extra"]["weird"].startswith("<object object") for r in rows)


@fork_only
def test_fork_child_ships_its_own_records_and_not_the_parents(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(flush_interval=3600)
    logger.addHandler(handler)
    logger.info("parent before fork")  # buffered, not yet sent
    assert get_sender().thread is not None
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            logger.info("child record")
            code = 0 if handler.flush(10) and handler.stats()["sent"] == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    logger.info("parent after fork")
    assert handler.flush(5)
    messages = sorted(r["message"] for r in events_api.rows())
    assert messages == ["child record", "parent after fork", "parent before fork"]


@fork_only
def test_pid_check_covers_a_fork_without_hooks(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(flush_interval=3600)
    logger.addHandler(handler)
    logger.info("parent buffered")
    sender = get_sender()
    channel = handler._channel
    parent_state = (list(channel.buf), channel.enqueued, sender.thread)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # Undo what the at-fork hook did, as if fork() had bypassed os.register_at_fork:
            # the parent's buffer, counters, thread object and pid are back.
            buffered, channel.enqueued, sender.thread = parent_state
            channel.buf.extend(buffered)
            sender.pid = os.getppid()
            logger.info("child after raw fork")
            code = 0 if handler.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert handler.flush(5)
    assert sorted(r["message"] for r in events_api.rows()) == [
        "child after raw fork",
        "parent buffered",
    ]


@fork_only
def test_a_forked_child_never_repeats_its_parents_event_ids() -> None:
    from tblog._event.tb_logs import new_event_id

    parent = [new_event_id() for _ in range(3)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, " ".join(new_event_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with os.fdopen(read_end) as f:
        child = f.read().split()
    later = [new_event_id() for _ in range(3)]
    assert len(set(parent + child + later)) == 9
    # the child drew its own random part: not merely the parent's counter run on
    assert {i.rsplit("-", 1)[0] for i in child}.isdisjoint(i.rsplit("-", 1)[0] for i in parent)


class _GatedQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue whose listener gets nothing until a flush() puts its mark."""

    def __init__(self) -> None:
        super().__init__(-1)
        self.gate = threading.Event()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        self.gate.wait()
        return super().get(block, timeout)

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        if isinstance(item, dict) and "_tblog_flush" in item:
            self.gate.set()


def test_flush_covers_the_records_still_in_the_queue(
    events_api: EventsAPI, logger: logging.Logger
) -> None:
    q = _GatedQueue()
    handler = _queue_handler(events_api, q)
    logger.addHandler(handler)
    try:
        for i in range(50):
            logger.info("queued %d", i)
        assert q.qsize() == 50 and events_api.rows() == []
        assert handler.flush(5)  # the listener only starts on the flush's mark
        assert [r["message"] for r in events_api.rows()] == [f"queued {i}" for i in range(50)]
    finally:
        q.gate.set()
        handler.close()
        logger.removeHandler(handler)


@pytest.mark.parametrize("kind", ["direct", "queue"])
def test_filters_apply_and_the_handler_lock_is_never_taken(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, kind: str
) -> None:
    handler: Any = (
        make_handler() if kind == "direct" else _queue_handler(events_api, queue.Queue(-1))
    )
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    if sys.version_info >= (3, 12):  # a filter may hand back a new record

        def relabel(record: logging.LogRecord) -> logging.LogRecord:
            copy = logging.makeLogRecord(record.__dict__)
            copy.msg, copy.args = f"[{kind}] {record.getMessage()}", None
            return copy

        handler.addFilter(relabel)
    logger.addHandler(handler)
    holder_has_it, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another thread holds the handler's lock meanwhile
        with handler.lock:
            holder_has_it.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holder_has_it.wait()
    done = threading.Event()

    def log() -> None:
        logger.info("kept %d", 1)
        logger.info("a secret")
        logger.info("kept %d", 2)
        done.set()

    try:
        threading.Thread(target=log, daemon=True).start()
        assert done.wait(10), "a logging call waited for the handler's lock"
    finally:
        release.set()
        holder.join()
    assert handler.flush(5)
    handler.close()
    prefix = f"[{kind}] " if sys.version_info >= (3, 12) else ""
    assert [r["message"] for r in events_api.rows()] == [f"{prefix}kept 1", f"{prefix}kept 2"]


def test_a_stdlib_queue_handler_carries_the_callers_context_to_the_listener(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # The dictConfig form of 3.12+ (a standard QueueHandler, tblog's listener): the context
    # is read on the caller's thread, not on the listener's, and the caller's record is
    # left as it was.
    q: queue.Queue[Any] = queue.Queue()
    listener = tblog.TinybirdQueueListener(q, make_handler())
    logger.addHandler(logging.handlers.QueueHandler(q))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Keep())
    with tblog.trace("t-queued", "s-queued"), tblog.bound(user="u-7"):
        logger.info("through a stdlib queue %d", 1)
    logger.info("outside any trace")
    listener.stop()
    assert tblog.flush(5)
    rows = events_api.rows()
    assert [(r["message"], r["trace_id"], r["span_id"]) for r in rows] == [
        ("through a stdlib queue 1", "t-queued", "s-queued"),
        ("outside any trace", "", ""),
    ]
    assert rows[0]["extra"] == {"user": "u-7"} and rows[1]["extra"] == {}
    assert all(set(r.__dict__) == set(seen[-1].__dict__) for r in seen)
    assert not any(k.startswith("_tblog") for r in seen for k in r.__dict__)


def _child_logs_bound(name: str, trace_id: str) -> None:
    with tblog.trace(trace_id), tblog.bound(lock=threading.Lock()):  # a lock cannot be pickled
        logging.getLogger(name).warning("from child %d", os.getpid())


@fork_only
def test_a_stdlib_queue_handler_across_processes_carries_context_as_json(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue(-1)
    listener = tblog.TinybirdQueueListener(q, make_handler())
    logger.addHandler(logging.handlers.QueueHandler(q))
    _in_children(ctx, _child_logs_bound, logger.name, ["c-0", "c-1"])
    listener.stop()
    assert tblog.flush(5)
    rows = events_api.rows()
    assert sorted(r["trace_id"] for r in rows) == ["c-0", "c-1"]
    assert all(r["extra"]["lock"].startswith("<unlocked _thread.lock") for r in rows)
