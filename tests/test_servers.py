"""Deployment servers: gevent/eventlet monkey-patching, forks that skip the at-fork hooks
(uWSGI), gunicorn and uWSGI driven for real, serverless flushing.

Servers and patched interpreters run in subprocesses on loopback, each with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import tblog
from tblog._delivery import runtime as _runtime
from tests.eventsapi import BlackHole, EventsAPI

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def _green(api: EventsAPI, lib: str, order: str, n: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(APPS / "green_logging.py"), api.url, api.token, lib, order, str(n)],
        capture_output=True, text=True, env=_env(), timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("lib", ["gevent", "eventlet"])
@pytest.mark.parametrize("order", ["before", "running", "after"])
def test_monkey_patched_greenlets_deliver_every_record(
    events_api: EventsAPI, lib: str, order: str
) -> None:
    """tblog imported before (``gunicorn --preload -k gevent``) or after patching: many
    greenlets log, one sender delivers every record exactly once."""
    pytest.importorskip(lib)
    n = 5000
    try:
        result = _green(events_api, lib, order, n)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{lib} ({order} patching) froze: {len(events_api.rows())} of {n} delivered")
    rows = events_api.rows()
    assert result["flushed"] is True, result
    assert sorted(r["extra"]["i"] for r in rows) == list(range(n + (order == "running")))
    assert result["stats"]["dropped_total"] == 0


@pytest.mark.parametrize("race", [False, True])
def test_fork_without_at_fork_hooks_gives_unique_ids_and_accepts_reused_idents(
    events_api: EventsAPI, race: bool
) -> None:
    """uWSGI forks its workers without ``--py-call-osafterfork`` running no at-fork hook:
    each child must still draw its own event ids, a child thread that gets the ident of the
    parent's sender thread must not have its records refused, and when the child's first
    records come from many threads at once (``--threads``) none is lost to the reset."""
    n, children = 100, 3
    proc = subprocess.run(
        [sys.executable, str(APPS / "cfork.py"), events_api.url, events_api.token,
         str(children), str(n), *(["race"] if race else [])],
        capture_output=True, text=True, env=_env(), timeout=30, check=False,
    )  # fmt: skip
    rows = events_api.rows()
    whos: dict[str, int] = {}
    for r in rows:
        whos[r["extra"]["who"]] = whos.get(r["extra"]["who"], 0) + 1
    expected = {"parent-pre": n, "parent-post": n}
    for c in range(children):
        expected |= {f"child{c}-reused": n, f"child{c}-thread": n}
        expected |= {f"child{c}-racer{k}": n for k in range(8 if race else 0)}
    assert whos == expected, proc.stderr[-2000:]
    ids = [r["event_id"] for r in rows]
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} repeated event ids"
    tids = [r["extra"]["tid"] for r in rows]  # tblog.new_trace_id() in each process
    assert len(set(tids)) == len(tids), f"{len(tids) - len(set(tids))} repeated trace ids"
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- real servers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(condition: Any, timeout: float) -> bool:
    """Poll a real condition (a port that answers, rows that arrived) until ``timeout``."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _serving(
    cmd: list[str], port: int, api: EventsAPI, tmp: Path, **env_extra: str
) -> Iterator[Path]:
    """Run a server; yields the path of its output.  SIGTERM at the end, SIGKILL if stuck."""
    out = tmp / "server.log"
    env = _env(TBLOG_TEST_URL=api.url, TBLOG_TEST_TOKEN=api.token, **env_extra)
    with out.open("wb") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=APPS, start_new_session=True
        )
    try:
        if not _wait(lambda: _answers(port) or proc.poll() is not None, 15):
            pytest.fail(f"server did not start: {out.read_text()[-3000:]}")
        assert proc.poll() is None, out.read_text()[-3000:]
        yield out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its workers too (stuck ones outlive it)
            proc.wait(5)
            pytest.fail(f"server did not stop on SIGTERM: {out.read_text()[-3000:]}")
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its master
            os.killpg(proc.pid, signal.SIGKILL)


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        return body
    finally:
        conn.close()


def _drive(port: int, n: int, clients: int = 1) -> None:
    """``n`` requests ``/?req=K``, from ``clients`` concurrent clients."""
    with ThreadPoolExecutor(clients) as pool:
        for body in pool.map(lambda k: _get(port, f"/?req={k}"), range(n)):
            assert body == "ok"


def _requests(api: EventsAPI) -> list[dict[str, Any]]:
    return [r for r in api.rows() if r["extra"].get("who") == "request"]


def _assert_each_once(api: EventsAPI, n: int) -> None:
    rows = _requests(api)
    reqs = sorted(int(r["extra"]["req"]) for r in rows)
    assert reqs == list(range(n)), f"{len(rows)} rows for {n} requests"
    ids = [r["event_id"] for r in api.rows()]
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} repeated event ids"


UWSGI = BIN / "uwsgi"


@pytest.mark.slow
@pytest.mark.skipif(not UWSGI.exists(), reason="uwsgi not installed")
@pytest.mark.parametrize("threads", [[], ["--threads", "2"], ["--enable-threads"]])
def test_uwsgi_prefork_delivers_every_request_with_unique_ids(
    events_api: EventsAPI, tmp_path: Path, threads: list[str]
) -> None:
    """uWSGI's default prefork (no ``--py-call-osafterfork``: no at-fork hook runs), the app
    loaded in the master: every request's record arrives once, no event id repeats."""
    n, port = 400, _free_port()
    cmd = [str(UWSGI), "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", "wsgi_app.py",
           "--processes", "2", "--master", "--die-on-term", *threads]  # fmt: skip
    with _serving(cmd, port, events_api, tmp_path, TBLOG_TEST_FLUSH_AT_IMPORT="1") as out:
        _drive(port, n, clients=8)
        arrived = _wait(lambda: len(_requests(events_api)) >= n, 10)
    log = out.read_text()
    assert arrived, f"{len(_requests(events_api))} of {n} arrived: {log[-2000:]}"
    _assert_each_once(events_api, n)
    # the master started no sender thread (the workers would hang), said why once, and
    # delivered its own record when the module flushed
    assert log.count("tblog: uWSGI forks its workers") == 1, log[-3000:]
    assert [r["extra"]["who"] for r in events_api.rows()].count("boot") == 1, log[-3000:]


GUNICORN = BIN / "gunicorn"


@pytest.mark.slow
@pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn not installed")
@pytest.mark.parametrize(
    ("worker", "preload"), [("sync", True), ("gevent", True), ("gevent", False)]
)
def test_gunicorn_delivers_every_request_once_through_sigterm(
    events_api: EventsAPI, tmp_path: Path, worker: str, preload: bool
) -> None:
    """gunicorn, sync or gevent workers, the app preloaded in the master (tblog imported
    before gevent patches the worker) or not: every request's record arrives exactly once,
    also the ones still buffered when SIGTERM's graceful shutdown ends the workers."""
    if worker == "gevent":
        pytest.importorskip("gevent")
    n, port = 200, _free_port()
    preloading = ["--preload"] if preload else []
    cmd = [str(GUNICORN), "-b", f"127.0.0.1:{port}", "-w", "2", "-k", worker,
           "--graceful-timeout", "10", *preloading, "wsgi_app:app"]  # fmt: skip
    with _serving(cmd, port, events_api, tmp_path) as out:
        _drive(port, n, clients=20)
    log = out.read_text()
    # stopped: what the workers buffered was delivered by their exit paths before they ended
    assert len(_requests(events_api)) == n, log[-3000:]
    _assert_each_once(events_api, n)
    boots = [r for r in events_api.rows() if r["extra"]["who"] == "boot"]
    assert len(boots) == (1 if preload else 2), log[-3000:]
    assert "WORKER TIMEOUT" not in log


# -- serverless: flushing per invocation -------------------------------------------------


def test_flushing_delivers_each_invocation_on_return_and_on_raise(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    """A frozen-between-invocations process (AWS Lambda): ``@tblog.flushing()`` delivers
    what the invocation logged before it returns, and before its exception propagates."""
    logger.addHandler(make_handler(flush_interval=3600))  # nothing goes out by itself
    seen: list[int] = []

    @tblog.flushing(timeout=10)
    def handler(event: dict[str, Any], context: object) -> str:
        for i in range(3):
            logger.info("invocation", extra={"inv": event["inv"], "i": i})
        seen.append(len(events_api.rows()))  # not delivered yet inside the call
        if event.get("fail"):
            raise ValueError("handler failed")
        return "done"

    assert handler({"inv": 1}, None) == "done"
    assert [r["extra"]["inv"] for r in events_api.rows()] == [1, 1, 1]
    with pytest.raises(ValueError, match="handler failed"):
        handler({"inv": 2, "fail": True}, None)
    assert [r["extra"]["inv"] for r in events_api.rows()] == [1, 1, 1, 2, 2, 2]
    assert seen == [0, 3]

    with tblog.flushing(timeout=10) as f:
        logger.info("block")
    assert f.ok is True
    assert events_api.rows()[-1]["message"] == "block"


def test_flushing_an_async_handler(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler(flush_interval=3600))

    @tblog.flushing(timeout=10)
    async def handler(inv: int) -> int:
        logger.info("async invocation", extra={"inv": inv})
        return inv

    assert asyncio.run(handler(7)) == 7
    assert [r["extra"]["inv"] for r in events_api.rows()] == [7]


LAMBDA_CHILD = """
import logging, sys
import tblog
log = logging.getLogger("fn")
log.addHandler(tblog.TinybirdLoggingHandler(api_url=sys.argv[1], token=sys.argv[2]))
log.setLevel(logging.INFO)
if sys.argv[3] == "decorated":
    @tblog.flushing(timeout=10)
    def handler(event, context):
        log.info("invocation")
else:
    def handler(event, context):
        log.info("invocation")
for _ in range(3):
    handler({}, None)
print(tblog.flush(10))
"""


@pytest.mark.parametrize("style", ["decorated", "plain"])
def test_lambda_hint_once_unless_the_handler_flushes(events_api: EventsAPI, style: str) -> None:
    """On AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) a handler that does not flush is
    told once on stderr how to; a ``@tblog.flushing()`` one is not."""
    proc = subprocess.run(
        [sys.executable, "-c", LAMBDA_CHILD, events_api.url, events_api.token, style],
        capture_output=True, text=True, timeout=30, check=False,
        env=_env(AWS_LAMBDA_FUNCTION_NAME="fn"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert len(events_api.rows()) == 3
    hints = proc.stderr.count("tblog: running on AWS Lambda")
    assert hints == (0 if style == "decorated" else 1), proc.stderr


class _FakeUwsgi:
    """What tblog reads of uWSGI's embedded ``uwsgi`` module: ``opt`` and the process's ids."""

    def __init__(self, worker: int = 0, mule: int = 0, **opt: Any) -> None:
        self.opt = {k.replace("_", "-"): v for k, v in opt.items()}
        self._worker, self._mule = worker, mule

    def worker_id(self) -> int:
        return self._worker

    def mule_id(self) -> int:
        return self._mule


@pytest.mark.parametrize(
    ("fake", "allowed"),
    [
        (_FakeUwsgi(master=True, processes=b"2"), False),  # the master, before or after fork
        (_FakeUwsgi(processes=b"4"), False),  # no master: the first process forks the rest
        (_FakeUwsgi(master=True, processes=b"2", py_call_osafterfork=True), True),
        (_FakeUwsgi(master=True, processes=b"2", lazy_apps=True), True),
        (_FakeUwsgi(worker=1, master=True, processes=b"2"), True),
        (_FakeUwsgi(mule=1, master=True), True),
        (_FakeUwsgi(processes=b"1"), True),  # one process, no master: nothing forks
    ],
)
def test_uwsgi_set_ups_that_forbid_a_thread(fake: _FakeUwsgi, allowed: bool) -> None:
    assert _runtime.uwsgi_allows_thread(fake) is allowed


def test_a_uwsgi_master_starts_no_thread_and_says_why_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uwsgi", _FakeUwsgi(master=True, processes=b"2"))
    monkeypatch.delenv("TBLOG_QUIET", raising=False)
    _runtime.reset()
    try:
        assert _runtime.thread_allowed() is False
        assert _runtime.thread_allowed() is False  # decided once per process
        assert capsys.readouterr().err.count("tblog: uWSGI forks its workers") == 1
    finally:
        monkeypatch.delitem(sys.modules, "uwsgi")
        _runtime.reset()
    assert _runtime.thread_allowed() is True


UWSGI_MASTER_FLUSH = textwrap.dedent(
    """
    import logging, sys, threading, types
    uwsgi = types.ModuleType("uwsgi")  # a uWSGI master that forks without at-fork hooks
    uwsgi.opt = {"master": True, "processes": b"4"}
    uwsgi.worker_id = lambda: 0
    uwsgi.mule_id = lambda: 0
    sys.modules["uwsgi"] = uwsgi
    import tblog
    handler = tblog.TinybirdLoggingHandler(
        sys.argv[1], "p.tok", "master", timeout=0.5, shutdown_timeout=1
    )
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("app").info("from the master, at import")
    tblog.flush(0.2)  # what the README asks for at the end of the WSGI module
    print(sorted(t.name for t in threading.enumerate()))  # uWSGI forks its workers now
    """
)


def test_a_flush_in_a_uwsgi_master_leaves_no_thread_running() -> None:
    # A thread running when uWSGI forks left the workers stuck: not the sender's, and not a
    # request's either (the flush sends from the calling thread, within the request timeout).
    hole = BlackHole()
    try:
        done = subprocess.run(
            [sys.executable, "-c", UWSGI_MASTER_FLUSH, hole.url],
            capture_output=True, text=True, timeout=60, check=False, env=_env(),
        )  # fmt: skip
    finally:
        hole.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MainThread']", done.stdout
