"""The control side every log producer shares: flush, close and the common stats.

``TinybirdLoggingHandler`` and the structlog ``TinybirdProcessor`` each feed one channel of the
shared sender through a sampling/dedup gate and an optional trace hold; how they flush, how
they close (and send their last drop report) and which counters their ``stats()`` share is
written here once, as ``ProducerControl``'s methods.
"""

from __future__ import annotations

from typing import Any

from tblog._delivery import reports as _reports
from tblog._delivery.channel import Channel
from tblog._delivery.sender import Sender, _Default, holds_logging_lock
from tblog._event.gate import Gate, counters, drain_quietly
from tblog._event.tracekeep import TraceKeep

__all__ = ["ProducerControl"]


class ProducerControl:
    """Mixin of a producer with ``_channel``, ``_sender``, ``_gate``, ``_hold``, ``ignored``
    and ``app_name``."""

    _channel: Channel
    _sender: Sender
    _gate: Gate | None
    _hold: TraceKeep | None
    ignored: int
    app_name: str
    _closed: bool

    def _drain(self) -> None:
        """The gate's summaries of what it holds back now (before a flush, a close)."""
        drain_quietly(self._gate)

    def _flush_channel(self, timeout: float | _Default | None) -> bool:
        """``flush(timeout)``: held records whose time is up, the gate's summaries, then all
        that is buffered before the call; True when all of it arrived."""
        if self._hold is not None:
            self._hold.expire()
        self._drain()
        return self._sender.flush(timeout, [self._channel])

    def _close_channel(self) -> None:
        """``close()`` of an open producer: the gate's summaries, then it refuses new
        records; what is buffered is delivered within ``shutdown_timeout`` (in the background
        when called inside ``dictConfig``/``logging.shutdown``, which hold logging's lock),
        then the channel's last drop report (``tblog._delivery.reports``), delivered like its
        records."""
        self._drain()
        self._closed = True
        if self._hold is not None:  # their traces logged no error while it lived
            self._hold.discard(close=True)
        locked = holds_logging_lock()
        if not locked:
            self._sender.flush(self._sender.close_timeout(self._channel), [self._channel])
        self._channel.closed = True
        _reports.reporter.report_final(
            self._channel, 0.0 if locked else self._sender.close_timeout(self._channel)
        )

    def _producer_stats(self, **own: int) -> dict[str, Any]:
        """The channel's counters, ``ignored``, ``own`` counters, what the trace hold and the
        gate hold, and ``app_name``."""
        stats = self._channel.stats()
        stats["ignored"] = self.ignored
        stats.update(own)
        stats["trace_held"] = self._hold.held if self._hold is not None else 0
        stats.update(counters(self._gate))
        stats["app_name"] = self.app_name
        return stats
