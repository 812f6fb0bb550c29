"""What the core sender already does under faults (the base the resilience work builds on)."""

from __future__ import annotations

import logging
import time
from typing import Any

from tests.eventsapi import EventsAPI, Fault, Request


def test_a_503_is_retried_and_nothing_is_lost(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    events_api.fail_next(2, status=503)
    logger.info("survives two 503s")
    assert handler.flush(10)
    assert [r["message"] for r in events_api.rows()] == ["survives two 503s"]
    stats = handler.stats()
    assert stats["retries"] == 2 and stats["dropped_total"] == 0 and stats["sent"] == 1


def test_flush_ends_a_retry_after_wait_early(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    events_api.fail_next(1, status=429, headers={"Retry-After": "3600"})
    logger.info("rate limited once")
    assert handler.flush(0.5) is False  # the 429 started a long backoff; nothing dropped
    assert handler.stats()["queue_depth"] == 1
    started = time.monotonic()
    assert handler.flush(10)  # a flush() cuts the running backoff short
    assert time.monotonic() - started < 5
    assert len(events_api.rows()) == 1 and handler.stats()["retries"] == 1


def test_one_datasource_in_backoff_does_not_delay_another(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    def fault(req: Request) -> Fault | None:
        if req.params.get("name") == "slow_ds":
            return Fault(status=503, headers={"Retry-After": "3600"})
        return None

    events_api.fault = fault
    stuck = make_handler(ds_name="slow_ds", max_retries=100, shutdown_timeout=0.2)
    healthy = make_handler(ds_name="fast_ds")
    logger.addHandler(stuck)
    logger.addHandler(healthy)
    logger.info("to both")
    assert stuck.flush(0.5) is False  # in backoff: still buffered, nothing dropped
    started = time.monotonic()
    assert healthy.flush(5)
    assert time.monotonic() - started < 2
    assert len(events_api.rows("fast_ds")) == 1
    assert stuck.stats()["queue_depth"] == 1 and stuck.stats()["dropped_total"] == 0


def test_a_413_splits_the_batch(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    def fault(req: Request) -> Fault | None:
        return Fault(status=413, body={"error": "too large"}) if req.body.count(b"\n") > 2 else None

    events_api.fault = fault
    handler = make_handler(gzip=False, flush_interval=3600)
    logger.addHandler(handler)
    for i in range(8):
        logger.info("row %d", i)
    assert handler.flush(10)
    assert sorted(r["message"] for r in events_api.rows()) == sorted(f"row {i}" for i in range(8))
    assert handler.stats()["dropped_total"] == 0


def test_client_errors_are_dropped_once_with_a_clear_reason(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(token="p.wrong-token-0123456789abcdef")
    logger.addHandler(handler)
    logger.info("refused")
    assert handler.flush(5) is False
    stats = handler.stats()
    assert stats["dropped"] == {"http_403": 1} and stats["retries"] == 0
    assert "DATASOURCE:APPEND" in stats["last_error"]
    assert "p.wrong-token" not in stats["last_error"]
    assert len(events_api.requests) == 1
