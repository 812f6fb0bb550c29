"""Retry timing: exponential backoff with jitter, honouring what the server asked for."""

from __future__ import annotations

import random

BASE_DELAY = 0.5
MAX_DELAY = 30.0


def backoff(
    attempt: int,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1-based): base * 2**(attempt-1), capped, jittered.

    The jitter keeps between half and all of the exponential delay ("equal jitter"),
    so a fleet of processes that failed together does not retry together.  ``rng``: the
    random source (a seeded one makes the delay reproducible); the ``random`` module's without.
    """
    uniform = random.uniform if rng is None else rng.uniform
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(delay / 2 + uniform(0, delay / 2))


def retry_delay(
    attempt: int,
    server_hint: float | None,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    spread: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The server's ``Retry-After``/``X-RateLimit-Reset`` wins when given (bounded by ``cap``*2).

    ``spread`` adds up to that share of the hint at random (the background sender uses 0.5):
    every process of a fleet told "retry in 1 s" would otherwise come back in the same
    instant and be refused together.  A caller waiting in the foreground keeps it at 0.
    """
    if server_hint is not None:
        hint = min(max(server_hint, 0.0), cap * 2)
        uniform = random.uniform if rng is None else rng.uniform
        return hint + uniform(0, hint * spread) if spread else hint
    return backoff(attempt, base=base, cap=cap, rng=rng)
