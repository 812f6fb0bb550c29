"""The circuit breaker of one channel, and the rate-limit pacing shared per destination.

``CircuitBreaker``: after ``threshold`` consecutive failed requests (5xx, 408, network
errors, timeouts) the circuit opens and no request is sent for ``reset`` seconds; then one
probe goes through (half-open): its success closes the circuit, its failure opens it again.
A 429 is not a failure (the server is up and answering).  Events keep buffering, bounded,
while the circuit is open.

``Pacer``: when a response says ``X-RateLimit-Remaining: 0``, the next request to that
(api_url, datasource) waits for the window to reset (``X-RateLimit-Reset`` seconds, with a
little jitter so a fleet of processes does not come back in the same instant).  Every
channel of the process shipping to that destination shares the wait.

Both live on the sender thread (or the exit drain, under the sender's service lock), so
they need no locks of their own; ``stats()`` reads are of plain attributes.
"""

from __future__ import annotations

import random

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

#: Seconds to hold a destination whose window is exhausted when it does not say how long.
DEFAULT_RESET = 1.0
#: Longest pacing hold honoured (a misconfigured header must not stall delivery for long).
MAX_HOLD = 60.0


class CircuitBreaker:
    """closed -> open after ``threshold`` consecutive failures -> half_open after ``reset`` s."""

    def __init__(self, threshold: int, reset: float) -> None:
        self.threshold = threshold
        self.reset = reset
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.trips = 0
        self.opened_at = 0.0

    def ready_at(self, now: float) -> float:
        """When a request may next be sent (``now`` or earlier: at once)."""
        if self.state != OPEN:
            return now
        return self.opened_at + self.reset

    def before_request(self, now: float) -> None:
        """A request is about to go: an open circuit past its reset period lets it probe."""
        if self.state == OPEN and now >= self.opened_at + self.reset:
            self.state = HALF_OPEN

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0

    def failure(self, now: float) -> bool:
        """Count a failed request; True when it opened the circuit."""
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.state = OPEN
            self.opened_at = now
            self.trips += 1
            return True
        return False

    def probe_now(self) -> None:
        """``flush()``/``close()``/exit: an open circuit lets one probe through at once."""
        if self.state == OPEN:
            self.opened_at = float("-inf")


class Pacer:
    """Per-destination holds from ``X-RateLimit-Remaining: 0`` (sender thread only)."""

    def __init__(self) -> None:
        self.holds: dict[tuple[str, str], float] = {}

    def ready_at(self, key: tuple[str, str], now: float) -> float:
        return self.holds.get(key, now)

    def observe(
        self, key: tuple[str, str], now: float, remaining: int | None, reset: float | None
    ) -> bool:
        """Record a response's rate-limit headers; True when they start a hold."""
        if remaining is None or remaining > 0:
            self.holds.pop(key, None)
            return False
        wait = DEFAULT_RESET if reset is None else min(max(reset, 0.0), MAX_HOLD)
        self.holds[key] = now + wait + random.uniform(0, 0.1 * wait + 0.05)
        return True

    def release(self, key: tuple[str, str]) -> None:
        """``flush()``/``close()``/exit: deliver now."""
        self.holds.pop(key, None)

    def reset(self) -> None:
        self.holds.clear()
