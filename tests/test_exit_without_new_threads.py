"""Exit stays bounded and reported where the interpreter refuses new threads at shutdown.

CPython 3.12.0 to 3.12.2 raise ``RuntimeError("can't create new thread at interpreter
shutdown")`` from ``Thread.start()`` as soon as ``threading._shutdown`` runs (gh-104690;
allowed again in 3.12.3 and 3.13, gh-113964), so the sender cannot put the exit's request on
a thread of its own and sends it from the sender thread instead.  That request must still end
within the exit budget (``shutdown_timeout``), and what it could not deliver must be reported.
The child below refuses new threads from the first exit pass on, on every Python, so this is
tested everywhere and not only on the 3.12 builds that behave so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.eventsapi import BlackHole

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import logging, sys, threading, time
    import tblog

    def refuse_new_threads():  # what 3.12.0-3.12.2 do once threading._shutdown runs
        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        threading.Thread.start = start

    if sys.argv[3] == "refuse":
        threading._register_atexit(refuse_new_threads)  # runs before tblog's: last in, first
    url, token = sys.argv[1], sys.argv[2]
    handler = tblog.TinybirdLoggingHandler(url, token, "exit-test", shutdown_timeout=1.0,
                                           flush_interval=3600, batch_size=1000)
    log = logging.getLogger("exit")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(200):
        log.info("record %d", i)
    print(time.time(), flush=True)
    """
)


@pytest.mark.parametrize("threads", ["refuse", "allow"])
def test_exit_to_a_black_hole_is_bounded_and_reported(threads: str) -> None:
    hole = BlackHole()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, hole.url, "p.token-xxxxxxxxxxxxxxxxxxxx", threads],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=60, check=False,
        )  # fmt: skip
        ended = time.time()
    finally:
        hole.close()
    assert proc.returncode == 0, proc.stderr
    # shutdown_timeout (1 s) plus interpreter teardown; far below the request timeout (10 s)
    assert ended - float(proc.stdout.split()[0]) < 3.0, proc.stderr
    assert "200 events" in proc.stderr, proc.stderr
    assert "not delivered within shutdown_timeout" in proc.stderr, proc.stderr
