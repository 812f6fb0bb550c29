"""``Retry-After`` as an HTTP-date: the parser, and the wait the handler computes from it.

The end-to-end cases answer from the loopback Events API with ``Retry-After: <HTTP-date>``
and read the channel's next-attempt time; the wall clock the parser compares the date with
is patched, so the hint is exact (the delay then adds up to half of it as spread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any

import pytest

from tblog._delivery import transport
from tblog._delivery.transport import parse_retry_after
from tests.eventsapi import EventsAPI

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT (RFC 7231's example date)
HINT_SPREAD_MAX = 1.5  # the sender waits the hint plus up to half of it


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Sun, 06 Nov 1994 08:50:37 GMT", 60.0),  # IMF-fixdate, a minute ahead
        ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),  # obsolete RFC 850 form
        ("Sun, 06 Nov 1994 10:50:37 +0200", 60.0),  # a numeric zone is honoured
        ("  Sun, 06 Nov 1994 08:49:47 GMT  ", 10.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # now
        ("Sun, 06 Nov 1994 08:40:00 GMT", 0.0),  # past: at once, never negative
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("120", 120.0),  # delay-seconds still work
        (" 2.5 ", 2.5),
        ("-5", 0.0),
    ],
)
def test_http_dates_and_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
     "Sun, 06 Nov", "08:49:37 GMT", "1994-11-06T08:49:37Z", "\x00"],
)  # fmt: skip
def test_garbage_is_no_hint(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_the_wall_clock_is_the_default_now() -> None:
    ahead = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert ahead is not None and 28.0 <= ahead <= 30.0
    assert parse_retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0


@pytest.fixture
def tz_new_york() -> Iterator[None]:
    """A process whose local time is not UTC (as on most developers' machines)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


@pytest.mark.parametrize("value", ["Sun Nov  6 08:50:37 1994", "Sun, 06 Nov 1994 08:50:37 -0000"])
def test_an_http_date_without_a_zone_is_gmt(tz_new_york: None, value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 60.0


# -- end to end ----------------------------------------------------------------------------


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """The transport's wall clock stands at NOW (its monotonic clock and the rest are real)."""
    fake = SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
    fake.time = lambda: NOW
    monkeypatch.setattr(transport, "time", fake)
    return NOW


def _next_attempt(handler: Any) -> float:
    """When the handler's channel will next send (monotonic time)."""
    channel = handler._channel
    return float(channel.ready_at(time.monotonic()))


def _one_answer_then_wait(
    events_api: EventsAPI,
    make_handler: Any,
    logger: logging.Logger,
    status: int,
    header: str,
    **options: Any,
) -> tuple[Any, float, float]:
    """Log one event; the server answers it ``status`` with ``Retry-After: header``.  Returns
    the handler and the monotonic times before the first request and after its answer."""
    handler = make_handler(**options)
    logger.addHandler(handler)
    events_api.fail_next(1, status=status, headers={"Retry-After": header})
    logger.info("told to wait")
    before = time.monotonic()
    assert handler.flush(1.0) is False  # the answer came; the retry waits
    after = time.monotonic()
    assert [r.status for r in events_api.requests] == [status]
    return handler, before, after


@pytest.mark.parametrize("status", [503, 429])
def test_a_future_http_date_is_waited_for(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, wall_clock: float,
    status: int,
) -> None:  # fmt: skip
    # Backoff alone would retry within 10 ms: the date 20 s ahead is what holds it.
    handler, before, after = _one_answer_then_wait(
        events_api, make_handler, logger, status, formatdate(wall_clock + 20, usegmt=True),
        retry_base_delay=0.01, retry_max_delay=60.0,
    )  # fmt: skip
    due = _next_attempt(handler)
    assert before + 20.0 <= due <= after + 20.0 * HINT_SPREAD_MAX
    stats = handler.stats()
    assert stats["retries"] == 1 and stats["queue_depth"] == 1
    assert stats["rate_limited"] == (1 if status == 429 else 0)
    assert stats["last_error"].startswith(f"HTTP {status}")
    # flush() ends the wait: delivered, once.
    assert handler.flush(5)
    assert [r.status for r in events_api.requests] == [status, 202]
    assert [r["message"] for r in events_api.rows()] == ["told to wait"]


def test_a_far_future_date_is_bounded_by_retry_max_delay(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, wall_clock: float
) -> None:
    handler, before, after = _one_answer_then_wait(
        events_api, make_handler, logger, 503, formatdate(wall_clock + 86400, usegmt=True),
        retry_base_delay=0.01, retry_max_delay=5.0,
    )  # fmt: skip
    due = _next_attempt(handler)
    assert before + 10.0 <= due <= after + 10.0 * HINT_SPREAD_MAX  # the hint is capped at 2x


def test_a_past_http_date_retries_at_once(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, wall_clock: float
) -> None:
    # Backoff would wait 15-30 s here: the date already passed says "now".
    handler = make_handler(retry_base_delay=30.0, retry_max_delay=60.0)
    logger.addHandler(handler)
    events_api.fail_next(
        1, status=503, headers={"Retry-After": formatdate(wall_clock - 3600, usegmt=True)}
    )
    logger.info("retried at once")
    assert handler.flush(5)
    assert [r.status for r in events_api.requests] == [503, 202]
    assert [r["message"] for r in events_api.rows()] == ["retried at once"]
    assert handler.stats()["retries"] == 1


def test_a_garbage_retry_after_falls_back_to_backoff(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, wall_clock: float
) -> None:
    handler, before, after = _one_answer_then_wait(
        events_api, make_handler, logger, 503, "after lunch",
        retry_base_delay=8.0, retry_max_delay=60.0,
    )  # fmt: skip
    due = _next_attempt(handler)
    assert before + 4.0 <= due <= after + 8.0  # the first backoff: 4-8 s (equal jitter)
    assert handler.flush(5)
    assert [r.status for r in events_api.requests] == [503, 202]
