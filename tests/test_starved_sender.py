"""A sender thread that exists but never runs is told once on stderr (uWSGI without threads).

uWSGI without ``--enable-threads`` (on versions where Python threads then get no time between
requests), or an event loop that never yields, leaves the sender thread alive but idle:
nothing is delivered, and nothing used to say so.  Here the thread is held outside its loop
by the test (its service lock), which is what such a host looks like from tblog's side.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tblog._delivery import sender as _sender
from tblog._delivery.sender import get_sender
from tests.eventsapi import EventsAPI


def _log(logger: logging.Logger, n: int) -> None:
    for i in range(n):
        logger.info("record %d", i)


def test_a_sender_thread_that_does_not_run_is_told_once(
    make_handler: Any,
    logger: logging.Logger,
    events_api: EventsAPI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = make_handler(flush_interval=3600)
    logger.addHandler(handler)
    logger.info("starts the thread")
    sender = get_sender()
    assert handler.flush(5)
    monkeypatch.setattr(_sender, "STARVED_AFTER", 0.5)
    with sender.service_lock:  # the thread waits here: alive, and getting nowhere
        sender.heartbeat -= 1.0  # its last pass was a second ago
        _log(logger, 10_000)
        _log(logger, 10_000)  # asked again: still one line
        assert handler.stats()["queue_depth"] >= 8 * 512
    told = [line for line in capsys.readouterr().err.splitlines() if "sender thread" in line]
    assert len(told) == 1, told
    assert "has not run for" in told[0] and "--enable-threads" in told[0]
    assert events_api.token not in told[0]
    assert handler.flush(10)  # once it runs, everything is delivered
    assert len(events_api.rows()) == 20_001


def test_a_running_sender_under_a_burst_is_not_told_about(
    make_handler: Any,
    logger: logging.Logger,
    events_api: EventsAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    _log(logger, 30_000)
    assert handler.flush(10)
    assert "sender thread" not in capsys.readouterr().err
    assert len(events_api.rows()) == 30_000
