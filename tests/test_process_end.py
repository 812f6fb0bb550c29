"""Nothing lost at process end: multiprocessing queues at exit, child processes, pools, Celery.

Each test runs real processes the way users write them: no ``close()``, no ``flush()``, a
normal exit (or the ``os._exit`` that multiprocessing children end with).  ``flush_interval``
is an hour, so nothing is delivered by the timer: every row counted arrived through an end
of process hook.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tblog
from tests.eventsapi import EventsAPI

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
METHODS = [
    m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()
]
pytestmark = [  # fork() in a process with threads (3.12+), or after eventlet was imported
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Using fork\\(\\) is a bad idea:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test() -> Iterator[None]:
    """A child a failed test leaves running would hang pytest's own exit (multiprocessing
    joins its children there): kill what is left."""
    yield
    for child in multiprocessing.active_children():
        child.kill()
        child.join(5)


POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX start methods and signals")


def _run(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=ENV, timeout=timeout, check=False, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


# -- 1. the Tinybird SDK README's queue snippet, at a normal exit --------------------------

SDK_SNIPPET = textwrap.dedent(
    """
    import sys
    if sys.argv[3] == "tblog-first":
        import tblog
    import logging
    from multiprocessing import Queue
    queue = Queue(-1)  # multiprocessing registers its exit hook here
    from tblog import TinybirdLoggingQueueHandler

    url, token = sys.argv[1], sys.argv[2]
    logger = logging.getLogger("your-logger-name")
    logger.setLevel(logging.INFO)
    handler = TinybirdLoggingQueueHandler(queue, url, token, "your-app-name",
                                          ds_name="tb_logs")
    formatter = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    for i in range(201):
        logger.info("record %d", i)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["tblog-first", "multiprocessing-first"])
def test_the_sdk_queue_snippet_delivers_every_record_at_exit(order: str) -> None:
    for _ in range(5):  # it lost a different share on each run
        api = EventsAPI()
        try:
            proc = _run(SDK_SNIPPET, api.url, api.token, order)
            rows = api.rows()
        finally:
            api.close()
        assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
        assert sorted(int(r["message"].split()[1]) for r in rows) == list(range(201))


LATE_THREAD = textwrap.dedent(
    """
    import logging, sys, threading
    import tblog

    log = logging.getLogger("late")
    log.setLevel(logging.INFO)
    log.addHandler(tblog.TinybirdLoggingHandler(sys.argv[1], sys.argv[2], "late",
                                                flush_interval=3600))

    def after_main() -> None:
        threading.main_thread().join()  # returns once the interpreter began its shutdown
        for i in range(100):
            log.info("late %d", i)

    threading.Thread(target=after_main).start()  # not a daemon: the exit waits for it
    for i in range(100):
        log.info("early %d", i)
    """
)


@pytest.mark.slow
def test_records_of_non_daemon_threads_after_the_first_pass_arrive() -> None:
    api = EventsAPI()
    try:
        _run(LATE_THREAD, api.url, api.token)
        messages = sorted(r["message"] for r in api.rows())
    finally:
        api.close()
    assert messages == sorted(
        [f"early {i}" for i in range(100)] + [f"late {i}" for i in range(100)]
    )


# -- 2. child processes that end through os._exit -----------------------------------------


def _child_with_its_own_handler(url: str, token: str, n: int) -> None:
    """A child that sets up logging itself (what spawn and forkserver children must do)."""
    log = logging.getLogger("child.own")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(tblog.TinybirdLoggingHandler(url, token, "children", flush_interval=3600))
    for i in range(n):
        log.info("child record %d", i)


def _child_inheriting(name: str, n: int) -> None:
    log = logging.getLogger(name)
    for i in range(n):
        log.info("child record %d", i)


@POSIX_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_child_process_delivers_what_it_logged(events_api: EventsAPI, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    p = ctx.Process(
        target=_child_with_its_own_handler, args=(events_api.url, events_api.token, 5000)
    )
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert len(events_api.rows()) == 5000


@POSIX_ONLY
@pytest.mark.skipif("fork" not in METHODS, reason="needs fork")
def test_a_forked_child_delivers_through_the_handler_it_inherited(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler(flush_interval=3600))
    logger.info("parent record")
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_child_inheriting, args=(logger.name, 5000))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    rows = events_api.rows()
    assert len(rows) == 5000  # the child's, and never the parent's buffered record
    assert {r["process_id"] for r in rows} == {p.pid}
    assert tblog.flush(5)
    assert [r["message"] for r in events_api.rows()[5000:]] == ["parent record"]


# -- 3. pools --------------------------------------------------------------------------------


def _pool_setup(url: str, token: str) -> None:
    log = logging.getLogger("pool.worker")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(tblog.TinybirdLoggingHandler(url, token, "pool", flush_interval=3600))


def _pool_task(i: int) -> int:
    log = logging.getLogger("pool.worker")
    for j in range(50):
        log.info("task %d record %d", i, j)
    return i


def _delivered(events_api: EventsAPI) -> list[tuple[int, int]]:
    return sorted(
        (int(m.split()[1]), int(m.split()[3])) for m in (r["message"] for r in events_api.rows())
    )


EVERY_TASK = [(i, j) for i in range(10) for j in range(50)]


@POSIX_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "maxtasksperchild", [1, None], ids=["retiring after each task", "long-lived"]
)
def test_pool_workers_deliver_when_they_retire_and_when_the_pool_closes(
    events_api: EventsAPI, method: str, maxtasksperchild: int | None
) -> None:
    # Workers that retire (maxtasksperchild) end after each task; long-lived ones end at
    # close()/join() with their last flush_interval of records still buffered.
    ctx = multiprocessing.get_context(method)
    setup = (events_api.url, events_api.token)
    pool = ctx.Pool(2, _pool_setup, setup, maxtasksperchild=maxtasksperchild)
    assert pool.map(_pool_task, range(10)) == list(range(10))
    pool.close()
    pool.join()
    assert _delivered(events_api) == EVERY_TASK


@POSIX_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_pool_used_as_a_context_manager_delivers(events_api: EventsAPI, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2, _pool_setup, (events_api.url, events_api.token)) as pool:
        assert pool.map(_pool_task, range(10)) == list(range(10))
    # __exit__ called terminate(): each worker ended on the sentinel or on SIGTERM, racing
    assert _delivered(events_api) == EVERY_TASK


_started: Any = None


def _pool_setup_signalling(url: str, token: str, started: Any) -> None:
    global _started
    _started = started
    _pool_setup(url, token)


def _pool_task_that_hangs(i: int) -> None:
    _pool_task(i)
    _started.set()
    time.sleep(60)  # still running when terminate() sends SIGTERM


@POSIX_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_pool_worker_terminated_mid_task_delivers_and_still_dies_of_sigterm(
    events_api: EventsAPI, method: str
) -> None:
    ctx = multiprocessing.get_context(method)
    started = ctx.Event()
    setup = (events_api.url, events_api.token, started)
    with ctx.Pool(1, _pool_setup_signalling, setup) as pool:
        pool.apply_async(_pool_task_that_hangs, (7,))
        assert started.wait(20)
        (worker,) = pool._pool  # type: ignore[attr-defined]
        begun = time.monotonic()
    # __exit__: terminate() sent SIGTERM and joined the worker
    assert time.monotonic() - begun < 5  # within the exit budget, not the task's 60 s
    # killed by SIGTERM (the watchdog's 128 + SIGTERM when the signal came just before sleep)
    assert worker.exitcode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert _delivered(events_api) == [(7, j) for j in range(50)]


def _tell_when_main_sleeps(blocked: threading.Event) -> None:
    blocked.wait(30)  # the main thread blocks SIGTERM first: only this thread can take it
    time.sleep(0.2)  # and is in its sleep by then (it has nothing else to do)
    _started.set()
    time.sleep(60)


def _pool_task_whose_main_thread_cannot_take_sigterm(i: int) -> None:
    _pool_task(i)
    # A thread of the application, started after tblog hooked SIGTERM, is the only one that
    # can take the signal: the main thread blocks it and sleeps, as a main thread does that
    # the signal reached just before it entered a blocking call (the handler never runs).
    blocked = threading.Event()
    threading.Thread(target=_tell_when_main_sleeps, args=(blocked,), daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # (the thread kept its mask)
    blocked.set()
    time.sleep(60)


@POSIX_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_pool_worker_whose_handler_cannot_run_still_delivers_and_ends(
    events_api: EventsAPI, method: str
) -> None:
    ctx = multiprocessing.get_context(method)
    started = ctx.Event()
    setup = (events_api.url, events_api.token, started)
    pool = ctx.Pool(1, _pool_setup_signalling, setup)
    (worker,) = pool._pool  # type: ignore[attr-defined]
    try:
        pool.apply_async(_pool_task_whose_main_thread_cannot_take_sigterm, (3,))
        assert started.wait(20)
        begun = time.monotonic()
        pool.terminate()  # what leaving ``with Pool()`` does
        assert time.monotonic() - begun < 5
    finally:
        if worker.is_alive():  # never leave a worker that SIGTERM cannot end behind
            os.kill(worker.pid, signal.SIGKILL)
            worker.join(5)
    # os._exit from tblog's watchdog (or, had the main thread run Python code after all, the
    # handler's re-sent SIGTERM): without the watchdog, the worker and terminate() hang
    assert worker.exitcode in (128 + signal.SIGTERM, -signal.SIGTERM)
    assert _delivered(events_api) == [(3, j) for j in range(50)]


# -- Celery prefork ------------------------------------------------------------------------

CELERY_APP = textwrap.dedent(
    """
    import logging, os, sys
    from celery import Celery
    import tblog

    folder = os.environ["BROKER_DIR"]
    app = Celery("tasksapp", broker="filesystem://", set_as_current=True)
    app.conf.update(
        broker_transport_options={"data_folder_in": folder, "data_folder_out": folder},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    log = logging.getLogger("tasks")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(tblog.TinybirdLoggingHandler(
        os.environ["API_URL"], os.environ["API_TOKEN"], "celery", flush_interval=3600))

    @app.task(name="work")
    def work(i):
        for j in range(50):
            log.info("task %d record %d", i, j)
    """
)

CELERY_WORKER = textwrap.dedent(
    """
    from tasksapp import app, work
    for i in range(5):
        work.delay(i)
    app.worker_main(["worker", "--pool=prefork", "--concurrency=2", "--max-tasks-per-child=1",
                     "--without-heartbeat", "--without-mingle", "--without-gossip",
                     "--loglevel=WARNING"])
    """
)


@POSIX_ONLY
@pytest.mark.slow
def test_celery_prefork_children_deliver_before_they_retire(
    events_api: EventsAPI, tmp_path: Path
) -> None:
    pytest.importorskip("celery")
    (tmp_path / "broker").mkdir()
    (tmp_path / "tasksapp.py").write_text(CELERY_APP)
    env = dict(
        ENV,
        PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}",
        BROKER_DIR=str(tmp_path / "broker"),
        API_URL=events_api.url,
        API_TOKEN=events_api.token,
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", CELERY_WORKER], cwd=str(tmp_path), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(events_api.rows()) < 250 and time.monotonic() < deadline:
            if worker.poll() is not None:
                break
            time.sleep(0.1)  # polling the server for a real condition, bounded
        delivered = _delivered(events_api)
    finally:
        worker.terminate()  # a warm shutdown
        try:
            output, _ = worker.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            output, _ = worker.communicate()
    assert delivered == [(i, j) for i in range(5) for j in range(50)], output


# -- the SIGTERM hook stays the pool worker's own --------------------------------------------


def _task_that_forks_and_terminates_its_child(i: int) -> int:
    _pool_task(i)  # the sender starts: tblog hooks SIGTERM in this pool worker
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child inherits the hook, not the watchdog: SIGTERM must end only it
        os.write(ready_w, b"x")  # (its at-fork hooks have run)
        time.sleep(30)
        os._exit(0)
    os.read(ready_r, 1)
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    time.sleep(1.0)  # the watchdog's grace, four times over: the worker is still here
    return os.getpid()


_app_sigterms: list[int] = []


def _setup_then_the_app_takes_sigterm(url: str, token: str) -> None:
    _pool_setup(url, token)
    logging.getLogger("pool.worker").info("task 0 record 0")  # tblog hooks SIGTERM here
    signal.signal(signal.SIGTERM, lambda signum, frame: _app_sigterms.append(signum))


def _task_that_signals_itself(i: int) -> list[int]:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)
    return list(_app_sigterms)


@POSIX_ONLY
@pytest.mark.skipif("fork" not in METHODS, reason="needs the fork start method")
def test_a_child_forked_by_a_pool_worker_is_terminated_alone(events_api: EventsAPI) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1, _pool_setup, (events_api.url, events_api.token)) as pool:
        worker = pool.apply_async(_task_that_forks_and_terminates_its_child, (1,)).get(20)
        assert worker == pool._pool[0].pid  # type: ignore[attr-defined]
        pool.close()
        pool.join()
    assert _delivered(events_api) == [(1, j) for j in range(50)]


@POSIX_ONLY
@pytest.mark.skipif("fork" not in METHODS, reason="needs the fork start method")
def test_a_sigterm_handler_the_application_set_later_is_left_to_decide(
    events_api: EventsAPI,
) -> None:
    ctx = multiprocessing.get_context("fork")
    setup = (events_api.url, events_api.token)
    with ctx.Pool(1, _setup_then_the_app_takes_sigterm, setup) as pool:
        assert pool.apply_async(_task_that_signals_itself, (1,)).get(20) == [signal.SIGTERM]
        pool.close()
        pool.join()
