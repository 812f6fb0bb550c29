"""Delivery is never silent, and one bad destination never stalls another.

Against the loopback Events API (``tests/eventsapi.py``): ``api_url`` spellings from
Tinybird's docs, epoch ``X-RateLimit-Reset`` values, 200 answers that are not the Events
API's (an HTML proxy page), one stderr line per (process, destination, cause) for a permanent
refusal or a loss at exit, and a total deadline per request so a trickling or silent endpoint
holds up only its own datasource.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tblog._config import resolve_api_url, resolve_target
from tblog._delivery import transport as _transport
from tblog._delivery.sender import get_sender
from tests.eventsapi import BlackHole, EventsAPI, Fault, Request, free_port_refusing

ROOT = Path(__file__).resolve().parent.parent

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


# -- api_url: the spellings Tinybird's docs print ------------------------------------------


@pytest.mark.parametrize("suffix", ["/v0", "/v0/", "/v0/events", "/v0/events/", "//"])
def test_an_api_url_with_the_events_path_is_normalised_and_delivers(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, suffix: str
) -> None:
    handler = make_handler(api_url=events_api.url + suffix)
    assert handler.api_url == events_api.url
    logger.addHandler(handler)
    logger.info("to the right path")
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["to the right path"]
    assert {r.path for r in events_api.requests} == {"/v0/events"}


def test_an_api_url_path_prefix_is_kept() -> None:
    assert resolve_api_url("https://proxy.example/tinybird/") == "https://proxy.example/tinybird"
    assert resolve_api_url("https://proxy.example/tinybird/v0/events") == (
        "https://proxy.example/tinybird"
    )
    assert resolve_api_url("HTTPS://api.tinybird.co/V0") == "HTTPS://api.tinybird.co"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://api.tinybird.co", "http:// or https://"),
        ("api.tinybird.co", "http:// or https://"),
        ("https://user:p.secret-token-0123456789@api.tinybird.co", "credentials"),
        ("https://api.tinybird.co/v0/events?token=p.secret-token-0123456789", "query"),
        ("https://api.tinybird.co/#p.secret-token-0123456789", "fragment"),
        ("https://", "host"),
    ],
)
def test_a_bad_api_url_is_refused_clearly_without_echoing_a_secret(url: str, words: str) -> None:
    with pytest.raises(ValueError) as info:  # what the handler's constructor calls
        resolve_target(url, "p.test-token-0123456789abcdef", "app", "tb_logs", None)
    assert words in str(info.value)
    assert "secret-token" not in str(info.value)


# -- X-RateLimit-Reset holding an epoch time -----------------------------------------------


@pytest.mark.parametrize("unit", [1, 1000])  # epoch seconds, epoch milliseconds
def test_an_epoch_ratelimit_reset_holds_only_until_that_time(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, unit: int
) -> None:
    def fault(req: Request) -> Fault:  # accepted; the window is empty until 1 s from now
        reset = str(int((time.time() + 1) * unit))
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        return Fault(status=202, headers=headers, body={"successful_rows": 1}, accept=True)

    events_api.fault = fault
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("paced by an epoch")
    assert handler.flush(5)
    hold = get_sender().pacer.holds[handler._channel.key] - time.monotonic()
    assert 0 < hold < 2.5, hold  # about a second, not the 60 s cap
    assert handler.stats()["paced"] == 1


def test_a_429_with_an_epoch_reset_retries_promptly(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    reset = str(int(time.time() + 2))  # 1 to 2 s from now
    events_api.fail_next(1, status=429, headers={"X-RateLimit-Reset": reset})
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("rate limited by an epoch")
    assert handler.flush(0.5) is False  # the 429 arrived; the retry waits its turn
    wait = handler._channel.retry_at - time.monotonic()
    assert wait < 2 * 1.5 + 0.5, wait  # at most the hint and its spread, not 60 s and more
    assert handler.flush(5)
    assert handler.stats()["rate_limited"] == 1 and len(events_api.rows()) == 1


# -- a 200 that is not the Events API's answer ---------------------------------------------

PORTAL = "<html><body>Please sign in to the guest network</body></html>"


def test_an_html_200_is_retried_not_counted_as_sent(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    events_api.fail_next(2, status=200, body=PORTAL, content_type="text/html")
    handler = make_handler(**FAST)
    logger.addHandler(handler)
    logger.info("past the portal")
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["past the portal"]
    stats = handler.stats()
    assert stats["retries"] == 2 and stats["sent"] == 1 and stats["dropped_total"] == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(PORTAL, "text/html"), ("<html>ok</html>", "application/json"), ("[1]", "application/json")],
)
def test_a_200_that_never_becomes_the_events_api_drops_as_bad_response(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, body: str, content_type: str
) -> None:
    events_api.fault = lambda req: Fault(status=200, body=body, content_type=content_type)
    handler = make_handler(max_retries=1, **FAST)
    logger.addHandler(handler)
    logger.info("never arrives")
    assert handler.flush(5) is False
    stats = handler.stats()
    assert stats["dropped"] == {"bad_response": 1} and stats["sent"] == 0, stats
    assert "not an Events API answer" in stats["last_error"]
    assert events_api.token not in stats["last_error"]


# -- never silent: one stderr line per (process, destination, cause) -----------------------

CHILD = """
import logging, sys
import tblog

handler = tblog.TinybirdLoggingHandler(
    sys.argv[1], sys.argv[2], "child", ds_name="tb_logs", shutdown_timeout=float(sys.argv[3]),
    retry_base_delay=0.01, retry_max_delay=0.05, **eval(sys.argv[4]),
)
logging.getLogger().addHandler(handler)  # the README's set-up: no logging configured
for i in range(int(sys.argv[5])):
    logging.warning("event %d", i)
    if sys.argv[6] == "flush":
        handler.flush(10)
"""


def _child(
    url: str,
    token: str,
    *,
    shutdown: float = 5.0,
    options: str = "{}",
    events: int = 3,
    flush_each: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[int, list[str]]:
    """Run the README's set-up in a fresh process; its exit code and its stderr lines."""
    environ = {k: v for k, v in os.environ.items() if k != "TBLOG_QUIET"}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, token, str(shutdown), options, str(events),
         "flush" if flush_each else "-"],
        check=False, capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT,
    )  # fmt: skip
    return done.returncode, done.stderr.splitlines()


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "APPEND"), (403, "APPEND"), (404, "check api_url")]
)
def test_a_permanent_refusal_is_told_once_on_stderr(
    events_api: EventsAPI, status: int, hint: str
) -> None:
    events_api.fault = lambda req: Fault(status=status, body={"error": f"refused {status}"})
    code, lines = _child(events_api.url, events_api.token, options="{'batch_size': 1}")
    assert code == 0
    assert len(events_api.requests) == 3  # three batches, each refused
    assert len(lines) == 1, lines  # told once, not once per batch
    [line] = lines
    assert line.startswith("tblog: ") and f"HTTP {status}" in line and hint in line
    assert "tb_logs" in line and f"refused {status}" in line
    assert events_api.token not in line


def test_an_unreachable_host_is_told_once_at_exit() -> None:
    url = free_port_refusing()
    code, lines = _child(url, "p.test-token-0123456789abcdef", shutdown=0.3)
    assert code == 0
    assert len(lines) == 1, lines
    assert "3 events" in lines[0] and "not delivered" in lines[0] and url in lines[0]
    assert "Connection refused" in lines[0]


def test_a_200_that_is_not_the_events_api_is_told_once(events_api: EventsAPI) -> None:
    events_api.fault = lambda req: Fault(status=200, body=PORTAL, content_type="text/html")
    code, lines = _child(events_api.url, events_api.token, shutdown=0.5)
    assert code == 0
    assert len(lines) == 2, lines  # what answered, then what it cost at exit
    assert "not an Events API answer" in lines[0] and "text/html" in lines[0]
    assert "not delivered" in lines[1]


@pytest.mark.parametrize("how", ["env", "option"])
def test_the_stderr_line_can_be_silenced(events_api: EventsAPI, how: str) -> None:
    events_api.fault = lambda req: Fault(status=403)
    if how == "env":
        code, lines = _child(events_api.url, events_api.token, env={"TBLOG_QUIET": "1"})
    else:
        code, lines = _child(events_api.url, events_api.token, options="{'warn_stderr': False}")
    assert code == 0 and lines == []
    assert len(events_api.requests) == 1


def test_an_endpoint_that_recovers_prints_nothing(events_api: EventsAPI) -> None:
    events_api.fail_next(3, status=503)
    events_api.fail_next(2, reset=True)
    code, lines = _child(events_api.url, events_api.token, events=5, flush_each=True)
    assert code == 0 and lines == []
    assert len(events_api.rows()) == 5


# -- one slow destination never stalls another -----------------------------------------------


@pytest.mark.slow
def test_a_trickling_endpoint_holds_up_only_its_own_datasource(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    out, ended = threading.Event(), threading.Event()

    def fault(req: Request) -> Fault | None:
        if req.params.get("name") != "slow_ds":
            return None
        out.set()  # answered at 5 bytes a second: no single read ever waits `timeout`
        return Fault(status=202, body={"successful_rows": 1}, trickle=0.2, on_end=ended.set)

    events_api.fault = fault
    slow = make_handler(ds_name="slow_ds", timeout=3.0, max_retries=0, shutdown_timeout=0.1)
    healthy = make_handler(ds_name="healthy_ds")
    slow_log, healthy_log = logging.getLogger(f"{logger.name}.a"), logger
    slow_log.addHandler(slow)
    slow_log.info("to the slow one")
    slow.flush(0.01)  # sends it now
    assert out.wait(10)
    expected = _log_to(healthy_log, healthy, 3500)
    assert healthy.flush(10)  # delivered while the slow request is still out
    assert not ended.is_set()
    assert sorted(r["message"] for r in events_api.rows("healthy_ds")) == sorted(expected)
    assert ended.wait(10)  # the slow request is cut at its total deadline (3 s), not at 150 s
    slow.flush(10)  # False, unless the drop came before this flush began
    stats = slow.stats()
    assert stats["dropped"] == {"timeout": 1} and stats["last_error"].startswith("timed out")
    slow_log.removeHandler(slow)


def test_a_black_hole_holds_up_only_its_own_datasource(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    hole = BlackHole()
    try:
        lost = make_handler(api_url=hole.url, timeout=5.0, shutdown_timeout=0.1)
        healthy = make_handler(ds_name="healthy_ds")
        lost_log = logging.getLogger(f"{logger.name}.a")
        lost_log.addHandler(lost)
        lost_log.info("into the void")
        lost.flush(0.01)
        deadline = time.monotonic() + 10
        while not hole.conns and time.monotonic() < deadline:
            hole.accepted.wait(0.1)
        assert hole.conns
        expected = _log_to(logger, healthy, 100)
        assert healthy.flush(10)  # delivered while the black hole holds the other request
        assert lost.stats()["last_error"] == ""  # still out: no answer, no timeout yet
        assert sorted(r["message"] for r in events_api.rows("healthy_ds")) == sorted(expected)
        lost_log.removeHandler(lost)
    finally:
        hole.close()


def _log_to(log: logging.Logger, handler: logging.Handler, n: int) -> list[str]:
    log.addHandler(handler)
    messages = [f"healthy {i}" for i in range(n)]
    for m in messages:
        log.info(m)
    return messages


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_a_request_is_out_starts_the_child_clean(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    out = threading.Event()

    def fault(req: Request) -> Fault | None:
        if req.params.get("name") != "slow_ds" or out.is_set():
            return None
        out.set()
        return Fault(status=202, body={"successful_rows": 1}, trickle=0.02, accept=True)

    events_api.fault = fault
    slow = make_handler(ds_name="slow_ds", timeout=30.0)
    logger.addHandler(slow)
    logger.info("parent's, on its way")
    slow.flush(0.01)
    assert out.wait(10) and slow._channel.inflight is not None
    pid = os.fork()
    if pid == 0:  # child: no request of the parent's, its own delivered on a thread of its own
        code = 1
        try:
            clean = slow._channel.inflight is None and not _transport._watched
            logger.info("child's")
            code = 0 if clean and slow.flush(10) and slow.stats()["sent"] == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert slow.flush(20)  # the parent's trickled answer completes (about 2 s)
    assert sorted(r["message"] for r in events_api.rows("slow_ds")) == [
        "child's", "parent's, on its way"
    ]  # fmt: skip


@pytest.mark.parametrize("content_type", ["text/html", "text/plain"])
def test_an_answer_that_echoes_the_token_never_shows_a_piece_of_it(
    make_handler: Any, logger: logging.Logger, events_api: EventsAPI, content_type: str
) -> None:
    # A proxy's error page that echoes the request's headers, the token cut by the length
    # cap: the part that is shown must not hold a prefix of it either.
    for pad in (250, 290, 90, 110):  # the 300- and 120-character caps fall inside the token
        page = "x" * pad + f" Authorization: Bearer {events_api.token} and more"
        events_api.fail_next(1, status=401, body=page, content_type=content_type)
        events_api.fail_next(1, status=200, body=page, content_type=content_type)
    handler = make_handler(max_retries=0, retry_base_delay=0.01)
    logger.addHandler(handler)
    for i in range(8):
        logger.info("record %d", i)
        handler.flush(5)
        error = handler.stats()["last_error"]
        assert events_api.token[:12] not in error, error
