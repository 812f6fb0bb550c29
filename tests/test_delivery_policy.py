"""The delivery policy (``tblog._delivery.policy.decide``) as a pure function: no thread, no server.

Each row is a batch's state and an answer; the decision is what the channel then applies
(``Channel._finish``).  The retry delay's jitter comes from a seeded ``random.Random``, so
each delay is checked against its bounds and is reproducible.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tblog._config import Options
from tblog._delivery import policy
from tblog._delivery.policy import (
    DELIVERED,
    DROP,
    GIVE_UP,
    HINT_SPREAD,
    RELEASE,
    RETRY_LATER,
    SPLIT_HALVES,
    SPOOL,
    TOO_LARGE,
    BatchState,
    Decision,
    adapt_interval,
    decide,
)
from tblog._delivery.transport import DROP as A_DROP
from tblog._delivery.transport import OK as A_OK
from tblog._delivery.transport import RETRY as A_RETRY
from tblog._delivery.transport import SPLIT as A_SPLIT
from tblog._delivery.transport import Result

T0 = 1000.0  # the batch's first try (monotonic)
OPTS = Options(
    flush_interval=1.0,
    max_retries=5,
    max_retry_time=300.0,
    retry_base_delay=0.5,
    retry_max_delay=30.0,
)


def batch(
    events: int = 10, attempts: int = 0, first_try: float = T0, on_disk: bool = False
) -> BatchState:
    return BatchState(events, attempts, first_try, on_disk)


def run(
    state: BatchState,
    result: Result,
    *,
    answered: float = T0 + 1.0,
    interval: float = 1.0,
    failures: int = 0,
    spool: bool = False,
    seed: int = 7,
    options: Options = OPTS,
) -> Decision:
    return decide(state, result, answered, options, interval, failures, spool, random.Random(seed))


def server_error(**kw: Any) -> Result:
    return Result(A_RETRY, status=503, reason="http_503", error="HTTP 503", **kw)


def network() -> Result:
    return Result(A_RETRY, status=0, reason="network", error="connection error")


def rate_limited(retry_after: float | None = 2.0, **kw: Any) -> Result:
    return Result(A_RETRY, status=429, reason="http_429", retry_after=retry_after, **kw)


# -- what each kind of answer decides --------------------------------------------------------

KINDS = [
    # (name, state, result, spool, kind, reason, failed, attempts)
    ("ok", batch(), Result(A_OK, status=200), False, DELIVERED, "", False, 0),
    (
        "ok with quarantined rows",
        batch(),
        Result(A_OK, status=200, successful_rows=7, quarantined_rows=3),
        False, DELIVERED, "", False, 0,
    ),
    ("ok on disk", batch(on_disk=True), Result(A_OK, status=200), True, DELIVERED, "", False, 0),
    ("429 waits, no attempt", batch(attempts=2), rate_limited(), False, RETRY_LATER, "", False, 2),
    ("429 is never spooled", batch(), rate_limited(), True, RETRY_LATER, "", False, 0),
    ("429 on disk goes back", batch(on_disk=True), rate_limited(), True, RELEASE, "", False, 0),
    ("503 counts an attempt", batch(attempts=2), server_error(), False, RETRY_LATER, "", True, 3),
    ("network counts an attempt", batch(), network(), False, RETRY_LATER, "", True, 1),
    ("503 with a spool: to disk", batch(), server_error(), True, SPOOL, "", True, 1),
    ("503 on disk goes back", batch(on_disk=True), server_error(), True, RELEASE, "", True, 1),
    (
        "bad_response retries",
        batch(),
        Result(A_RETRY, status=200, reason="bad_response", error="not Tinybird"),
        False, RETRY_LATER, "", True, 1,
    ),
    ("413 splits n > 1", batch(events=2), Result(A_SPLIT, status=413), False, SPLIT_HALVES,
     "", False, 0),
    ("413 splits on disk", batch(events=9, on_disk=True), Result(A_SPLIT, status=413), True,
     SPLIT_HALVES, "", False, 0),
    ("413 of one event", batch(events=1), Result(A_SPLIT, status=413), False, TOO_LARGE,
     "too_large", False, 0),
    ("413 of one event on disk", batch(events=1, on_disk=True), Result(A_SPLIT, status=413),
     True, TOO_LARGE, "too_large", False, 0),
    ("403 drops", batch(), Result(A_DROP, status=403, reason="http_403"), False, DROP,
     "http_403", False, 0),
    ("404 drops", batch(), Result(A_DROP, status=404, reason="http_404"), True, DROP,
     "http_404", False, 0),
    ("422 drops", batch(on_disk=True), Result(A_DROP, status=422, reason="http_422"), True,
     DROP, "http_422", False, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("state", "result", "spool", "kind", "reason", "failed", "attempts"),
    [row[1:] for row in KINDS],
    ids=[row[0] for row in KINDS],
)
def test_each_answer_decides(
    state: BatchState,
    result: Result,
    spool: bool,
    kind: str,
    reason: str,
    failed: bool,
    attempts: int,
) -> None:
    decision = run(state, result, spool=spool)
    assert (decision.kind, decision.reason, decision.failed) == (kind, reason, failed)
    if kind in policy.WAITS:
        assert decision.attempts == attempts
        assert decision.retry_at > T0 + 1.0  # after the answer
    else:
        assert decision.retry_at == 0.0


# -- how long a retry waits ------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [0.0, 1.0, 2.0, 10.0])
def test_a_429_waits_its_retry_after_with_a_spread(retry_after: float) -> None:
    waits = {
        run(batch(attempts=3), rate_limited(retry_after), seed=seed, failures=4).retry_at
        - (T0 + 1.0)
        for seed in range(200)
    }
    assert min(waits) >= retry_after
    assert max(waits) <= retry_after * (1 + HINT_SPREAD)
    if retry_after:  # spread out: a fleet told the same does not come back together
        assert max(waits) - min(waits) > retry_after * HINT_SPREAD * 0.8


def test_a_429_hint_is_bounded_by_twice_the_max_delay() -> None:
    wait = run(batch(), rate_limited(3600.0), seed=1).retry_at - (T0 + 1.0)
    assert 60.0 <= wait <= 60.0 * (1 + HINT_SPREAD)


def test_a_429_without_retry_after_backs_off_without_counting_an_attempt() -> None:
    decision = run(batch(attempts=0), rate_limited(None), failures=3)
    assert decision.attempts == 0
    assert decision.failed is False
    # the breaker's failures do not count (a 429 resets them): the first backoff, 0.25-0.5 s
    assert 0.25 <= decision.retry_at - (T0 + 1.0) <= 0.5


@pytest.mark.parametrize(
    ("attempts", "failures", "low", "high"),
    [
        (0, 0, 0.25, 0.5),  # attempt 1: base 0.5 s, equal jitter
        (1, 0, 0.5, 1.0),  # attempt 2
        (2, 0, 1.0, 2.0),  # attempt 3
        (4, 0, 4.0, 8.0),  # attempt 5
        (0, 3, 2.0, 4.0),  # the breaker's 4th failure in a row weighs more than attempt 1
        (1, 5, 8.0, 16.0),  # the breaker's 6th failure
        (3, 20, 15.0, 30.0),  # capped at retry_max_delay
    ],
)
def test_a_failure_backs_off_by_attempts_or_breaker_failures(
    attempts: int, failures: int, low: float, high: float
) -> None:
    waits = [
        run(batch(attempts=attempts), server_error(), failures=failures, seed=seed).retry_at
        - (T0 + 1.0)
        for seed in range(50)
    ]
    assert low <= min(waits)
    assert max(waits) <= high
    assert max(waits) - min(waits) > (high - low) * 0.5  # jittered


def test_a_server_retry_after_on_a_5xx_wins_over_the_backoff() -> None:
    wait = run(batch(attempts=4), server_error(retry_after=0.1), seed=3).retry_at - (T0 + 1.0)
    assert 0.1 <= wait <= 0.15


def test_the_wait_never_passes_max_retry_time() -> None:
    # 299 s into a 300 s budget: the backoff (up to 30 s) is cut to the 1 s left
    decision = run(batch(attempts=4), server_error(), answered=T0 + 299.0)
    assert decision.kind == RETRY_LATER
    assert decision.retry_at == pytest.approx(T0 + 300.0)


def test_a_seeded_source_makes_the_decision_reproducible() -> None:
    first = run(batch(attempts=2), server_error(), seed=11)
    assert run(batch(attempts=2), server_error(), seed=11) == first
    assert run(batch(attempts=2), server_error(), seed=12) != first


# -- giving up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "result", "answered", "spool", "kind", "reason"),
    [
        # the 6th failed attempt of max_retries=5: given up
        (batch(attempts=5), server_error(), T0 + 1, False, GIVE_UP, "http_503"),
        (batch(attempts=5), network(), T0 + 1, False, GIVE_UP, "network"),
        (batch(attempts=4), server_error(), T0 + 1, False, RETRY_LATER, ""),  # the 5th: not yet
        # max_retry_time spent (elapsed >= 300 s), whatever the attempts
        (batch(attempts=0), server_error(), T0 + 300, False, GIVE_UP, "http_503"),
        (batch(attempts=0), server_error(), T0 + 299.9, False, RETRY_LATER, ""),
        # a 429 is no attempt: retried past max_retries, given up past max_retry_time
        (batch(attempts=5), rate_limited(), T0 + 1, False, RETRY_LATER, ""),
        (batch(attempts=0), rate_limited(), T0 + 300, False, GIVE_UP, "http_429"),
        # no reason given: "retries_exhausted"
        (batch(attempts=5), Result(A_RETRY, status=500), T0 + 1, False, GIVE_UP,
         "retries_exhausted"),
        # what waits on disk is never given up here: the spool keeps it
        (batch(attempts=9, on_disk=True), server_error(), T0 + 999, True, RELEASE, ""),
        (batch(attempts=9), server_error(), T0 + 999, True, SPOOL, ""),
        # no spool to take it (none, or its write failed: asked again with spool=False)
        (batch(attempts=9), server_error(), T0 + 999, False, GIVE_UP, "http_503"),
        (batch(attempts=9), Result(A_RETRY, status=200, reason="bad_response"), T0 + 1, False,
         GIVE_UP, "bad_response"),
    ],
)  # fmt: skip
def test_gives_up_past_max_retries_or_max_retry_time(
    state: BatchState, result: Result, answered: float, spool: bool, kind: str, reason: str
) -> None:
    decision = run(state, result, answered=answered, spool=spool)
    assert (decision.kind, decision.reason) == (kind, reason)
    assert decision.elapsed == pytest.approx(answered - state.first_try)
    if kind == GIVE_UP:
        assert decision.retry_at == 0.0


def test_a_spooled_segment_waits_the_backoff_before_it_is_claimed_again() -> None:
    decision = run(batch(attempts=2, on_disk=True), server_error(), spool=True, seed=5)
    assert decision.kind == RELEASE
    assert decision.attempts == 3
    assert 1.0 <= decision.retry_at - (T0 + 1.0) <= 2.0  # attempt 3's backoff


# -- the flush interval while rate limited --------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "result", "expected"),
    [
        (1.0, rate_limited(), 2.0),  # a 429 doubles it
        (8.0, rate_limited(), 16.0),
        (16.0, rate_limited(), 30.0),  # up to 32 intervals, at most 30 s
        (30.0, rate_limited(), 30.0),
        (1.0, Result(A_OK, status=200, rate_remaining=0), 2.0),  # the window's last request
        (1.0, Result(A_OK, status=200, rate_remaining=3), 1.0),
        (2.0, Result(A_OK, status=200), 1.9),  # each success takes 5% off
        (1.02, Result(A_OK, status=200), 1.0),  # never below flush_interval
        (1.0, Result(A_OK, status=200), 1.0),
        (4.0, server_error(), 4.0),  # a failure leaves it
        (4.0, Result(A_DROP, status=403, reason="http_403"), 4.0),
    ],
)
def test_the_interval_adapts_to_rate_limits(
    interval: float, result: Result, expected: float
) -> None:
    assert adapt_interval(interval, 1.0, result) == pytest.approx(expected)
    assert run(batch(), result, interval=interval).interval == pytest.approx(expected)


def test_the_interval_cap_follows_a_small_flush_interval() -> None:
    options = Options(flush_interval=0.1)
    intervals = [0.1]
    for _ in range(10):
        intervals.append(
            run(batch(), rate_limited(), interval=intervals[-1], options=options).interval
        )
    assert intervals[-1] == pytest.approx(3.2)  # 32 flush intervals
    assert intervals[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
