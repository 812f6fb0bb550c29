"""The delivery policy: what one answer means for the batch it answers, as a pure function.

``decide`` takes the batch's state, the ``transport.Result``, when it was answered, the
options, the channel's flush interval, the circuit breaker's count of consecutive failures
and whether a spool could take the batch; it returns a ``Decision``: delivered, split into
halves, a single event too large, dropped for a reason, retry at a time (a 429 is not a
failed attempt), to the spool (or back to it) and retry at a time, or given up.  It reads
no clock, no channel and no breaker, and changes nothing: its random draws (the jitter of a
retry delay) come from ``rng``, so a seeded ``random.Random`` makes it reproducible.

The channel applies the decision: the counters, the spool, the warnings, the breaker
(``Decision.failed``: a failure, else a success), the flush interval (``Decision.interval``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from tblog._config import Options
from tblog._delivery.retry import retry_delay
from tblog._delivery.transport import OK, RETRY, SPLIT, Result

HINT_SPREAD = 0.5  # up to half as long again on a server's Retry-After, so a fleet spreads out
#: The longest a batch may wait to fill while rate limited, in flush intervals and seconds.
INTERVAL_FACTOR, INTERVAL_CAP = 32, 30.0
#: What each success takes off a stretched flush interval.
INTERVAL_SHRINK = 0.95

# The kinds of decision.
DELIVERED = "delivered"  # taken: count it sent
SPLIT_HALVES = "split"  # too large a request: resend it as two halves (on disk: split there)
TOO_LARGE = "too_large"  # a single event too large for the endpoint: dropped
DROP = "drop"  # refused for good (``reason``): dropped, not retried
RETRY_LATER = "retry"  # stays first in line in memory; sent again at ``retry_at``
SPOOL = "spool"  # written to the spool (if that fails: ask again with spool=False)
RELEASE = "release"  # a replayed spool segment goes back to the spool, claimed again later
GIVE_UP = "give_up"  # past max_retries or max_retry_time: dropped (``reason``)

#: The kinds that wait for ``retry_at`` (a retry counted in ``stats()["retries"]``).
WAITS = frozenset({RETRY_LATER, SPOOL, RELEASE})


class BatchState(NamedTuple):
    """What the policy reads of a batch."""

    events: int  # how many
    attempts: int  # failed attempts so far that count against max_retries (not 429s)
    first_try: float  # monotonic time of its first attempt
    on_disk: bool  # a replayed spool segment (not in memory)


@dataclass(frozen=True)
class Decision:
    """What to do with a batch after an answer; see the kinds above."""

    kind: str
    interval: float  # the channel's flush interval from now on
    reason: str = ""  # DROP, TOO_LARGE, GIVE_UP: the reason counted in stats()["dropped"]
    failed: bool = False  # a failed attempt: the breaker counts a failure (else a success)
    attempts: int = 0  # the batch's failed attempts, this answer's included
    elapsed: float = 0.0  # seconds since the batch's first attempt (RETRY answers)
    retry_at: float = 0.0  # WAITS: when it may be sent again


def adapt_interval(interval: float, base: float, result: Result) -> float:
    """Fewer, larger requests while the destination is rate limited; back to normal after.

    A 429, or a window spent to its last request, doubles the time a batch may wait to
    fill (up to 32 flush intervals, at most 30 s); each later success shortens it by 5%.
    A fleet of processes sharing one datasource's limit thus settles below it.
    """
    if result.status == 429 or result.rate_remaining == 0:
        return min(interval * 2, max(base, min(base * INTERVAL_FACTOR, INTERVAL_CAP)))
    if result.action == OK and interval > base:
        return max(base, interval * INTERVAL_SHRINK)
    return interval


def decide(  # noqa: PLR0917 - the answer's parts, all of them needed
    batch: BatchState,
    result: Result,
    answered: float,
    options: Options,
    interval: float,
    failures: int,
    spool: bool,
    rng: random.Random | None = None,
) -> Decision:
    """What ``result`` (answered at monotonic time ``answered``) means for ``batch``.

    ``interval``: the channel's flush interval until now; ``failures``: the breaker's
    consecutive failures before this answer; ``spool``: the channel has a spool that may take
    a batch in memory after a failed attempt; ``rng``: the retry delay's random source (the
    ``random`` module's when None).
    """
    interval = adapt_interval(interval, options.flush_interval, result)
    if result.action == OK:
        return Decision(DELIVERED, interval)
    if result.action == SPLIT:
        if batch.events == 1:
            return Decision(TOO_LARGE, interval, reason="too_large")
        return Decision(SPLIT_HALVES, interval)
    if result.action != RETRY:
        return Decision(DROP, interval, reason=result.reason)
    # A retryable answer: back off (or wait as told), or give up past the batch's bounds.
    # A 429 says the server is up: it waits as told and is no failed attempt.  Anything else
    # (5xx, 408, the network) counts against ``max_retries`` and the breaker, and its backoff
    # grows with the batch's attempts or the breaker's failures, whichever is more.  A batch in
    # memory that failed goes to the spool when there is one; a replayed segment goes back to
    # it; only a batch staying in memory is given up past ``max_retries``/``max_retry_time``.
    failed = result.status != 429
    attempts = batch.attempts + 1 if failed else batch.attempts
    failures = failures + 1 if failed else 0  # the breaker's count once it saw this answer
    elapsed = answered - batch.first_try
    if batch.on_disk:
        kind = RELEASE
    elif failed and spool:
        kind = SPOOL
    elif attempts > options.max_retries or elapsed >= options.max_retry_time:
        reason = result.reason or "retries_exhausted"
        return Decision(GIVE_UP, interval, reason, failed, attempts, elapsed)
    else:
        kind = RETRY_LATER
    delay = retry_delay(
        max(1, attempts, failures), result.retry_after, base=options.retry_base_delay,
        cap=options.retry_max_delay, spread=HINT_SPREAD, rng=rng,
    )  # fmt: skip
    retry_at = answered + min(delay, max(0.0, options.max_retry_time - elapsed))
    return Decision(kind, interval, "", failed, attempts, elapsed, retry_at)
