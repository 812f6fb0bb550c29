"""Shared fixtures: the loopback Events API server and a clean tblog state per test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

import tblog
from tblog import _diag
from tblog._delivery.sender import get_sender
from tests.eventsapi import EventsAPI

for _var in ("TB_API_URL", "TB_HOST", "TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN"):
    os.environ.pop(_var, None)


@pytest.fixture
def events_api() -> Iterator[EventsAPI]:
    api = EventsAPI()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def make_handler(events_api: EventsAPI) -> Iterator[Any]:
    """Build handlers on the loopback server; each is closed after the test."""
    made: list[logging.Handler] = []

    def make(**options: Any) -> tblog.TinybirdLoggingHandler:
        options.setdefault("app_name", "tests")
        handler = tblog.TinybirdLoggingHandler(
            api_url=options.pop("api_url", events_api.url),
            token=options.pop("token", events_api.token),
            **options,
        )
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close()


@pytest.fixture
def logger(make_handler: Any) -> Iterator[logging.Logger]:
    """A fresh non-propagating logger at DEBUG with no handlers."""
    name = f"test.{os.urandom(4).hex()}"
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)


@pytest.fixture(autouse=True)
def _fresh_diagnostics(monkeypatch: pytest.MonkeyPatch) -> None:
    """One-time warnings are once per process; give each test its own process-like state."""
    monkeypatch.setattr(_diag, "_last", {})
    monkeypatch.setattr(_diag, "_suppressed", {})


@pytest.fixture(autouse=True)
def _no_leftover_channels() -> Iterator[None]:
    yield
    # Closed handlers leave the shared sender once they are idle; make sure none leaks
    # buffered events into the next test.
    sender = get_sender()
    for channel in list(sender.channels):
        channel.drop_remaining("test_teardown")
        channel.closed = True
        sender.unregister(channel)
