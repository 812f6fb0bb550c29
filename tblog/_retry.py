"""Retry timing: exponential backoff with jitter, honouring what the server asked for."""

from __future__ import annotations

import random

BASE_DELAY = 0.5
MAX_DELAY = 30.0


def backoff(attempt: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Delay before retry number ``attempt`` (1-based): base * 2**(attempt-1), capped, jittered.

    The jitter keeps between half and all of the exponential delay ("equal jitter"),
    so a fleet of processes that failed together does not retry together.
    """
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(delay / 2 + random.uniform(0, delay / 2))


def retry_delay(
    attempt: int,
    server_hint: float | None,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
) -> float:
    """The server's ``Retry-After``/``X-RateLimit-Reset`` wins when given (bounded by ``cap``*2)."""
    if server_hint is not None:
        return min(max(server_hint, 0.0), cap * 2)
    return backoff(attempt, base=base, cap=cap)
