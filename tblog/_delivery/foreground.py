"""Foreground retries of one HTTP request: what ``tblog send``, ``tblog.series`` writes and
``SqlClient`` reads do when the server says "not now".

``call(do, idempotent=...)`` runs ``do()`` (which sends the request and returns the
``requests.Response``) and runs it again after a wait when the answer is a 429 or a 503,
and, for an ``idempotent`` request only (a read), when the network failed: a write that
failed on the network may have been stored, so it is not sent again (the caller reports
it).  The wait is what the server asked for (``Retry-After``, else on a 429
``X-RateLimit-Reset``; parsed by ``tblog._delivery.transport``), else a capped exponential
backoff with jitter (``tblog._delivery.retry``).  Attempts and the total time spent
waiting are bounded (``Retrying``); when they run out the last answer is returned (or the
last network error raised) for the caller to report as before.  The caller sees every
wait through ``on_retry`` (the CLI prints it); library callers get a rate-limited
diagnostic on the ``tblog`` logger.  Sleeps go through ``sleep`` (patchable in tests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from tblog import _diag
from tblog._delivery.retry import retry_delay
from tblog._delivery.transport import parse_rate_reset, parse_retry_after

__all__ = ["DEFAULT", "ONCE", "RETRY_STATUS", "Retrying", "call", "server_hint"]

#: Answers that say the request was not handled and may be sent again as it is.
RETRY_STATUS = frozenset({429, 503})


@dataclass(frozen=True)
class Retrying:
    """How long one request may keep trying: at most ``attempts`` sends in all (of which
    at most ``network_attempts`` may fail on the network: a host that is down fails fast),
    and at most ``max_wait`` seconds of waiting between them; each wait is at most ``cap``
    seconds (a server's hint may ask for up to twice that), backoff starting at ``base``."""

    attempts: int = 8
    network_attempts: int = 3
    max_wait: float = 120.0
    base: float = 0.5
    cap: float = 30.0


DEFAULT = Retrying()
#: One send, no retry: for a caller with a retry loop of its own (``tblog tail``).
ONCE = Retrying(attempts=1, network_attempts=1, max_wait=0.0)

#: The sleep between attempts (tests replace it; the module's attribute is read on each wait).
sleep: Callable[[float], None] = time.sleep


def server_hint(response: requests.Response) -> float | None:
    """Seconds the server asked us to wait: ``Retry-After``, else (429) ``X-RateLimit-Reset``."""
    hint = parse_retry_after(response.headers.get("Retry-After"))
    if hint is None and response.status_code == 429:
        hint = parse_rate_reset(response.headers.get("X-RateLimit-Reset"))
    return hint


def call(
    do: Callable[[], requests.Response],
    *,
    idempotent: bool,
    what: str = "request",
    policy: Retrying = DEFAULT,
    on_retry: Callable[[str, float, int], None] | None = None,
) -> requests.Response:
    """``do()``, again while the answer says so and the budget lasts; the last answer.

    ``on_retry(reason, delay, attempt)`` is told before each wait (``reason`` is
    ``"HTTP 429"`` or the network error's class name; ``attempt`` the one that failed).
    A network error is raised at once for a write, and after the last attempt for a read.
    """
    waited = 0.0
    attempt = failures = 0  # sends, and those the network failed
    while True:
        attempt += 1
        try:
            response = do()
        except requests.RequestException as exc:
            if not idempotent:
                raise
            delay = retry_delay(attempt, None, base=policy.base, cap=policy.cap)
            failures += 1
            if (
                attempt >= policy.attempts
                or failures >= policy.network_attempts
                or waited + delay > policy.max_wait
            ):
                raise
            reason = type(exc).__name__
        else:
            if response.status_code not in RETRY_STATUS:
                return response
            delay = retry_delay(attempt, server_hint(response), base=policy.base, cap=policy.cap)
            if attempt >= policy.attempts or waited + delay > policy.max_wait:
                return response
            reason = f"HTTP {response.status_code}"
            response.close()
        if on_retry is not None:
            on_retry(reason, delay, attempt)
        else:
            _diag.diag(
                logging.INFO, f"retry:{what}:{reason}",
                "tblog: %s got %s; retrying in %.1fs", what, reason, delay,
            )  # fmt: skip
        waited += delay
        sleep(delay)
