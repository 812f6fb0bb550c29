"""No feedback loops; delivery at normal exit; bounded exit with the endpoint down."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import tblog
from tests.eventsapi import BlackHole, EventsAPI, free_port_refusing

ROOT = Path(__file__).resolve().parent.parent


def test_root_handler_at_debug_with_urllib3_debug_does_not_loop(
    events_api: EventsAPI, make_handler: Any
) -> None:
    root = logging.getLogger()
    old_level = root.level
    urllib3_logger = logging.getLogger("urllib3")
    old_urllib3 = urllib3_logger.level
    handler = make_handler(batch_size=5)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    urllib3_logger.setLevel(logging.DEBUG)
    try:
        for i in range(20):
            logging.getLogger("app").debug("record %d", i)
        logging.getLogger("requests.custom").info("never shipped")
        logging.getLogger("tblog").warning("never shipped either")
        assert handler.flush(5)
        assert tblog.flush(5)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        urllib3_logger.setLevel(old_urllib3)
    rows = events_api.rows()
    assert [r["message"] for r in rows] == [f"record {i}" for i in range(20)]
    assert {r["logger"] for r in rows} == {"app"}
    assert len(events_api.requests) == 4
    assert handler.stats()["ignored"] >= 2


CHILD = textwrap.dedent(
    """
    import logging, sys, time
    import tblog
    url, token, n, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    handler = tblog.TinybirdLoggingHandler(url, token, "exit-test", shutdown_timeout=timeout,
                                           flush_interval=3600, batch_size=1000)
    log = logging.getLogger("exit")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(n):
        log.info("record %d", i, extra={"i": i})
    print(time.time(), flush=True)
    # no close(), no flush(): a normal exit
    """
)


def _run_child(
    url: str, token: str, n: int, timeout: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, url, token, str(n), str(timeout)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    ended = time.time()
    assert proc.returncode == 0, proc.stderr
    return ended - float(proc.stdout.split()[0]), proc


@pytest.mark.slow
def test_every_record_arrives_at_normal_exit(events_api: EventsAPI) -> None:
    _run_child(events_api.url, events_api.token, 5000, 10.0)
    rows = events_api.rows()
    assert len(rows) == 5000
    assert sorted(r["extra"]["i"] for r in rows) == list(range(5000))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["refused", "black hole"])
def test_exit_is_bounded_when_the_endpoint_is_down(kind: str) -> None:
    hole = BlackHole() if kind == "black hole" else None
    url = hole.url if hole else free_port_refusing()
    try:
        exit_time, _ = _run_child(url, "p.token-xxxxxxxxxxxxxxxxxxxx", 200, 1.0)
    finally:
        if hole:
            hole.close()
    # shutdown_timeout (1 s) plus interpreter teardown; far below the request timeout (10 s)
    assert exit_time < 3.0


@pytest.mark.parametrize("kind", ["refused", "black hole"])
def test_close_is_bounded_by_shutdown_timeout(kind: str, make_handler: Any) -> None:
    hole = BlackHole() if kind == "black hole" else None
    url = hole.url if hole else free_port_refusing()
    try:
        handler = make_handler(api_url=url, shutdown_timeout=0.5, timeout=30.0)
        log = logging.getLogger("bounded.close")
        log.propagate = False
        log.addHandler(handler)
        log.error("cannot be delivered")
        started = time.monotonic()
        handler.close()
        elapsed = time.monotonic() - started
        handler.close()  # idempotent, immediate
        log.removeHandler(handler)
    finally:
        if hole:
            hole.close()
    assert elapsed < 2.0
    assert handler.stats()["queue_depth"] == 1  # still owned by the sender, never lost silently


def test_a_str_that_logs_does_not_reenter_emit(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)

    class Chatty:
        def __str__(self) -> str:
            logger.warning("logged from inside __str__")
            return "chatty"

    logger.info("value: %s", Chatty())
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["value: chatty"]
    assert handler.stats()["ignored"] == 1


REDIRECTED = textwrap.dedent(
    """
    import json, logging, sys
    import tblog
    from tblog._delivery import lifecycle as _lifecycle

    class StderrIntoLogging:  # what Celery's worker_redirect_stdouts makes of sys.stderr
        def write(self, text):
            if text.strip():
                logging.getLogger("celery.redirected").warning(text.strip())
            return len(text)

        def flush(self):
            pass

    handler = tblog.TinybirdLoggingHandler(sys.argv[1], "p.tok", "loop", shutdown_timeout=0.3)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("app").info("never delivered: the port is closed")
    real, sys.stderr = sys.stderr, StderrIntoLogging()
    _lifecycle.last_pass()  # Celery's worker_process_shutdown, on the main thread
    sys.stderr = real
    stats = handler.stats()
    print(json.dumps([stats["enqueued"], stats["dropped"], stats["queue_depth"]]))
    """
)


def test_tblogs_stderr_line_redirected_into_logging_is_not_shipped_by_tblog() -> None:
    # tblog tells a loss at exit on stderr; where stderr is a logging proxy, that line came
    # back to the handler as a record after the last delivery: never sent, never counted.
    done = subprocess.run(
        [sys.executable, "-c", REDIRECTED, free_port_refusing()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    enqueued, dropped, queue_depth = json.loads(done.stdout.splitlines()[-1])
    assert (enqueued, dropped, queue_depth) == (1, {"shutdown": 1}, 0)
