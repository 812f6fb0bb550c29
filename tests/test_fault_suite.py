"""The fault suite: what each failure of the Events API does to delivery, against a real server.

For each fault: events logged vs arrived, no duplicates where a retry is not ambiguous, every
loss counted by reason, and the circuit breaker, pacing and retry bounds doing their part.
Delivery is driven by ``flush()``; waits are made short by the options, never by sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tblog import _diag
from tblog._delivery.batch import Batch
from tblog._delivery.sender import get_sender
from tests.eventsapi import BlackHole, EventsAPI, Fault, Request

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


def _log(logger: logging.Logger, n: int, prefix: str = "event") -> list[str]:
    messages = [f"{prefix} {i}" for i in range(n)]
    for m in messages:
        logger.info(m)
    return messages


def _arrived_once(api: EventsAPI, expected: list[str], ds: str = "tb_logs") -> None:
    rows = api.rows(ds)
    assert sorted(r["message"] for r in rows) == sorted(expected)
    assert len({r["event_id"] for r in rows}) == len(rows)  # no duplicates


def test_a_503_burst_is_ridden_out_and_the_circuit_closes_again(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(batch_size=10, circuit_breaker_reset=0.05, **FAST)
    logger.addHandler(handler)
    events_api.fail_next(5, status=503)  # five in a row open the circuit; the probe succeeds
    expected = _log(logger, 25)
    assert handler.flush(10)
    _arrived_once(events_api, expected)
    stats = handler.stats()
    assert stats["retries"] == 5 and stats["dropped_total"] == 0
    assert stats["circuit_trips"] == 1 and stats["circuit_state"] == "closed"


def test_an_open_circuit_sends_nothing_until_its_probe(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(circuit_breaker_threshold=3, circuit_breaker_reset=3600, **FAST)
    logger.addHandler(handler)
    events_api.fault = lambda req: Fault(status=502)
    expected = _log(logger, 3)
    assert handler.flush(2) is False
    assert handler.stats()["circuit_state"] == "open"
    seen = len(events_api.requests)
    assert seen == 3  # three failures opened the circuit; the reset is an hour away
    expected += _log(logger, 2, "while open")
    assert handler.flush(0.3) is False  # a flush lets exactly one probe through...
    assert len(events_api.requests) == seen + 1  # ...which failed: open again, no hammering
    stats = handler.stats()
    assert stats["circuit_state"] == "open" and stats["circuit_trips"] == 2
    assert stats["queue_depth"] == 5 and stats["dropped_total"] == 0  # still buffered
    events_api.fault = None  # the endpoint recovers
    assert handler.flush(5)
    _arrived_once(events_api, expected)
    assert handler.stats()["circuit_state"] == "closed"


def test_a_429_storm_waits_as_told_and_never_counts_as_a_failure(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # max_retries=1, yet eight 429s lose nothing: a 429 is the server pacing us, not failing.
    handler = make_handler(max_retries=1, circuit_breaker_threshold=2, **FAST)
    logger.addHandler(handler)
    events_api.fail_next(4, status=429, headers={"Retry-After": "0.02"})
    events_api.fail_next(
        4, status=429, headers={"X-RateLimit-Reset": "0.02", "X-RateLimit-Remaining": "0"}
    )
    expected = _log(logger, 5)
    assert handler.flush(10)
    _arrived_once(events_api, expected)
    stats = handler.stats()
    assert stats["rate_limited"] == 8 and stats["circuit_trips"] == 0
    assert stats["dropped_total"] == 0


def test_ratelimit_remaining_zero_holds_the_next_request_until_the_reset(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    times: list[float] = []

    def fault(req: Request) -> Fault | None:
        times.append(time.monotonic())
        if len(times) == 1:  # accepted, and the window is now empty for 0.3 s
            body = {"successful_rows": 1, "quarantined_rows": 0}
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0.3"}
            return Fault(status=202, headers=headers, body=body, accept=True)
        return None

    events_api.fault = fault
    handler = make_handler(batch_size=1)
    logger.addHandler(handler)
    expected = _log(logger, 2)
    assert handler.flush(5)
    _arrived_once(events_api, expected)
    assert handler.stats()["paced"] == 1 and handler.stats()["rate_limited"] == 0
    assert times[1] - times[0] >= 0.3  # paced ahead of the limit: no 429 needed


def test_connection_resets_and_slow_answers_are_retried_without_loss(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(timeout=0.3, **FAST)
    logger.addHandler(handler)
    events_api.fail_next(3, reset=True)
    events_api.fail_next(1, delay=0.6, status=503)  # slower than the timeout
    expected = _log(logger, 10)
    assert handler.flush(10)
    _arrived_once(events_api, expected)
    stats = handler.stats()
    assert stats["dropped_total"] == 0 and stats["retries"] >= 2


def test_a_connection_closed_without_an_answer_is_resent_at_once_and_only_once(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # What a stale pooled keep-alive connection looks like from the client: the server
    # closes it without answering.  One immediate resend, not counted as a failed attempt.
    handler = make_handler(retry_base_delay=3600, retry_max_delay=3600)
    logger.addHandler(handler)
    logger.info("first")
    assert handler.flush(5)
    stale_before = get_sender().transport.stale_retries
    events_api.fail_next(1, reset=True)
    logger.info("second")
    assert handler.flush(5)  # no backoff (an hour here) was needed
    _arrived_once(events_api, ["first", "second"])
    stats = handler.stats()
    assert stats["retries"] == 0 and stats["circuit_state"] == "closed"
    assert get_sender().transport.stale_retries == stale_before + 1
    events_api.fail_next(2, reset=True)  # twice in a row: the second is a real failure
    logger.info("third")
    assert handler.flush(0.5) is False
    assert handler.stats()["retries"] == 1
    assert get_sender().transport.stale_retries == stale_before + 2
    # After a failure no connection is kept: a reset now is a failure at once, not resent
    # (a reset storm costs one request per attempt, not two).
    events_api.fail_next(1, reset=True)
    assert handler.flush(0.5) is False
    assert handler.stats()["retries"] == 2
    assert get_sender().transport.stale_retries == stale_before + 2
    assert handler.flush(5)
    _arrived_once(events_api, ["first", "second", "third"])


def test_a_dropped_keep_alive_connection_is_not_a_failure(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(retry_base_delay=3600, retry_max_delay=3600)
    logger.addHandler(handler)
    events_api.fail_next(1, close_after=True)  # answers, then drops the kept-alive socket
    logger.info("first")
    assert handler.flush(5)
    logger.info("second")
    assert handler.flush(5)
    _arrived_once(events_api, ["first", "second"])
    assert handler.stats()["retries"] == 0


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "not retried"),
        (401, "DATASOURCE:APPEND"),
        (403, "DATASOURCE:APPEND"),
        (404, "has no datasource 'tb_logs'"),  # a tinybird.co host: tests/test_404_hint.py
    ],
)
def test_refused_batches_are_dropped_counted_and_explained_once(
    events_api: EventsAPI,
    make_handler: Any,
    logger: logging.Logger,
    status: int,
    hint: str,
) -> None:
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    collector = Collect(level=logging.WARNING)
    _diag.logger.addHandler(collector)
    try:
        handler = make_handler(batch_size=1)
        logger.addHandler(handler)
        events_api.fail_next(3, status=status, body={"error": f"tinybird says {status}"})
        _log(logger, 3)
        assert handler.flush(5) is False
    finally:
        _diag.logger.removeHandler(collector)
    stats = handler.stats()
    assert stats["dropped"] == {f"http_{status}": 3}
    assert len(events_api.requests) == 3  # one request per batch: nothing retried
    assert len(messages) == 1  # one diagnostic, not one per batch
    [text] = messages
    assert f"HTTP {status}" in text and "tb_logs" in text and f"tinybird says {status}" in text
    if status != 400:
        assert hint in text
    assert events_api.token not in text


def test_a_422_is_counted_not_retried(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    body = {"error": "partially ingested", "successful_rows": 2, "quarantined_rows": 1}
    events_api.fail_next(1, status=422, body=body)
    _log(logger, 3)
    assert handler.flush(5) is False
    stats = handler.stats()
    assert stats["dropped"] == {"http_422": 3} and len(events_api.requests) == 1
    assert stats["successful_rows"] == 2 and stats["quarantined_rows"] == 1


def test_retries_are_bounded_by_attempts_and_by_time(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    events_api.fault = lambda req: Fault(status=500)
    by_attempts = make_handler(ds_name="by_attempts", max_retries=2, **FAST)
    logger.addHandler(by_attempts)
    logger.info("gives up after three attempts")
    assert by_attempts.flush(5) is False
    assert by_attempts.stats()["dropped"] == {"http_500": 1}
    assert Counter(r.params["name"] for r in events_api.requests)["by_attempts"] == 3
    logger.removeHandler(by_attempts)

    by_time = make_handler(
        ds_name="by_time", max_retries=1000, max_retry_time=0.3, circuit_breaker_threshold=1000,
        retry_base_delay=0.05, retry_max_delay=0.05,
    )  # fmt: skip
    logger.addHandler(by_time)
    started = time.monotonic()
    logger.info("gives up after 0.3 s")
    while by_time.stats()["dropped_total"] == 0 and time.monotonic() - started < 10:
        by_time.flush(0.5)
    assert by_time.stats()["dropped"] == {"http_500": 1}
    tries = Counter(r.params["name"] for r in events_api.requests)["by_time"]
    assert 3 <= tries < 1000


def test_wait_true_counts_a_202_as_unconfirmed(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(wait=True)
    logger.addHandler(handler)
    logger.info("written")  # the server answers 200 to wait=true
    assert handler.flush(5)
    events_api.fail_next(1, status=202, accept=True, body={"successful_rows": 1})
    logger.info("only accepted")
    assert handler.flush(5)
    stats = handler.stats()
    assert stats["sent"] == 2 and stats["unconfirmed"] == 1
    assert all(r.params.get("wait") == "true" for r in events_api.requests)


def test_a_black_hole_costs_the_caller_nothing_and_flush_stays_bounded(
    make_handler: Any, logger: logging.Logger
) -> None:
    hole = BlackHole()
    try:
        # A request into the hole takes its whole timeout (1 s): one sent on the caller's
        # thread would cost that logging call at least that long.
        handler = make_handler(
            api_url=hole.url, timeout=1.0, batch_size=20, circuit_breaker_threshold=1,
            circuit_breaker_reset=3600, **FAST,
        )  # fmt: skip
        logger.addHandler(handler)
        logger.info("into the void first")
        assert handler.flush(0.3) is False
        assert hole.accepted.wait(5)  # a request hangs in the hole now
        worst = 0.0
        for i in range(200):  # ten batches' worth while it hangs
            started = time.perf_counter()
            logger.info("into the void %d", i)
            worst = max(worst, time.perf_counter() - started)
        print(f"black hole: worst caller latency {worst * 1e6:.0f} us")
        assert worst < 0.5  # half the timeout: no call waited for a request
        started = time.monotonic()
        assert handler.flush(1.0) is False
        assert time.monotonic() - started < 3
        # The timeout opens the circuit (after the probe the waiting flush() asked for).
        deadline = time.monotonic() + 10
        while handler.stats()["circuit_state"] != "open" and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the request threads; no flush() (it would probe)
        stats = handler.stats()
        assert stats["circuit_state"] == "open" and stats["queue_depth"] == 201, stats
        assert stats["last_error"].startswith("timed out")
    finally:
        hole.close()


def test_one_destination_failing_never_delays_another(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    events_api.fault = lambda req: (
        Fault(status=503) if req.params.get("name") == "broken_ds" else None
    )
    broken = make_handler(
        ds_name="broken_ds", circuit_breaker_threshold=1, shutdown_timeout=0.2, **FAST
    )
    healthy = make_handler(ds_name="healthy_ds")
    logger.addHandler(broken)
    logger.addHandler(healthy)
    logger.info("first to both")
    assert broken.flush(0.3) is False
    assert broken.stats()["circuit_state"] == "open"
    for i in range(50):
        logger.info("both %d", i)
    started = time.monotonic()
    assert healthy.flush(5)
    assert time.monotonic() - started < 2
    assert len(events_api.rows("healthy_ds")) == 51
    assert broken.stats()["queue_depth"] == 51 and broken.stats()["dropped_total"] == 0


def test_a_circuit_that_opens_while_flush_waits_is_probed_again(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # The request that opens the circuit is answered only once flush() has begun (it ended
    # every wait at its start): the flush must probe again, not sit out the hour-long reset.
    handler = make_handler(batch_size=1, circuit_breaker_reset=3600, **FAST)
    logger.addHandler(handler)
    out, began, arrived = threading.Event(), threading.Event(), []

    def fault(req: Request) -> Fault | None:
        arrived.append(req)
        if len(arrived) < 5:
            return Fault(status=503)
        if len(arrived) == 5:  # the fifth failure opens the circuit
            out.set()
            assert began.wait(10)
            return Fault(status=503)
        return None  # the endpoint is back

    events_api.fault = fault
    logger.info("through the storm")
    assert out.wait(10)  # the fifth request is out when the flush begins
    channel = handler._channel  # flush() ends every wait first (hurry), then waits
    hurry = channel.hurry

    def hurry_then_answer() -> None:
        hurry()
        began.set()

    channel.hurry = hurry_then_answer
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["through the storm"]
    stats = handler.stats()
    assert stats["circuit_trips"] == 1 and stats["circuit_state"] == "closed"


def test_dropping_a_chunks_last_line_leaves_no_empty_line_behind() -> None:
    # Two lines are asked for, but the bytes need the third, the chunk's last: the chunk goes.
    batch = Batch([b"aa", b"bb", b"cc"])
    batch.add([b"dd"])
    assert batch.drop_oldest(2, 8) == (3, 9)
    assert (batch.count, batch.size, batch.lines, batch.body(False)) == (1, 3, [b"dd"], b"dd\n")
    assert batch.drop_oldest(1, 0) == (1, 3) and batch.count == 0 and batch.lines == []


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    chunks=st.lists(st.lists(st.binary(max_size=5).filter(lambda b: b"\n" not in b), min_size=1)),
    items=st.integers(0, 40),
    memory=st.integers(0, 150),
)
def test_dropping_the_oldest_keeps_count_size_and_lines_in_step(
    chunks: list[list[bytes]], items: int, memory: int
) -> None:
    batch = Batch()
    for lines in chunks:
        batch.add(lines)
    every = [line for lines in chunks for line in lines]
    events, freed = batch.drop_oldest(items, memory)
    kept = every[events:]
    assert (batch.lines if batch.chunks else []) == kept  # no chunk left empty: it reads as a line
    assert freed == sum(len(line) + 1 for line in every[:events])
    assert (batch.count, batch.size) == (len(kept), sum(len(line) + 1 for line in kept))
    assert events == len(every) or (events >= items and freed >= memory)  # enough, or all


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_an_outage_keeps_what_the_bound_allows_by_drop_policy(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, policy: str
) -> None:
    # During the outage the sender keeps encoding what arrives (so records do not stay alive
    # on the application's side); the bound covers what waits encoded and what waits buffered.
    cap = 400_000
    handler = make_handler(
        max_buffer_bytes=cap, batch_size=100, drop_policy=policy, circuit_breaker_threshold=10**6,
        retry_base_delay=0.05, retry_max_delay=0.05,
    )  # fmt: skip
    logger.addHandler(handler)
    events_api.fault = lambda req: Fault(status=503)
    n = 3000
    for i in range(n):
        logger.info("event %05d %s", i, "p" * 200)
        if i % 20 == 19:  # whatever the sender is doing, each event is counted in one place
            stats = handler.stats()
            assert stats["queue_depth"] + stats["dropped_total"] + stats["sent"] == i + 1
        if i % 500 == 499:
            assert handler.flush(0.05) is False  # the sender encodes and retries meanwhile
    stats = handler.stats()
    kept, dropped = stats["queue_depth"], stats["dropped"]["buffer_full"]
    assert kept + dropped == n and 100 < kept < n // 2
    assert stats["queue_bytes"] <= cap
    events_api.fault = None
    assert handler.flush(10)
    messages = [r["message"][:11] for r in events_api.rows()]
    assert len(set(messages)) == len(messages) == kept  # once each
    assert messages == sorted(messages)  # in order
    first, last = f"event {0:05d}", f"event {n - 1:05d}"
    if policy == "oldest":
        assert messages[-1] == last and messages[0] != first  # the newest stayed
    else:
        assert messages[0] == first and messages[-1] != last  # the oldest stayed
