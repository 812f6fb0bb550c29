"""A channel's counters and what it tells about them: ``stats()``, the drops, the warnings.

``Accounting`` is the base of ``Channel``: it reads and settles the counters that
``Channel._init_state`` sets (declared here), under the channel's lock, and says on the
``tblog`` logger and once on stderr (``_tell``) when events were lost or will be.  Every
drop is counted by reason in ``dropped``; ``stats()`` reads everything under the lock, so
an event is in exactly one of queue_depth, sent and dropped whenever it looks.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tblog import _diag
from tblog._config import Options
from tblog._delivery.breaker import CircuitBreaker
from tblog._delivery.spool import Spool
from tblog._delivery.transport import Result


class Accounting:
    """The counters of a channel (set by ``Channel._init_state``) and the messages about them."""

    options: Options
    api_url: str
    datasource: str
    label: str
    lock: threading.RLock
    breaker: CircuitBreaker
    spool: Spool | None
    buf_bytes: int  # the sum of measure(item) over what is buffered
    backlog_memory: int  # what waits encoded, in bytes (Channel._recount)
    enqueued: int  # accepted by put()
    settled: int  # accepted and then delivered, dropped or spooled
    lost: int  # accepted and then dropped
    dropped: dict[str, int]  # by reason, including what put() refused
    sent: int
    batches: int
    bytes_sent: int
    retries: int
    successful_rows: int
    quarantined_rows: int
    rate_limited: int  # 429 answers
    paced: int  # times X-RateLimit-Remaining: 0 held the next request
    unconfirmed: int  # wait=True, yet answered 202 (accepted, not confirmed written)
    spooled: int  # events this channel wrote to the spool
    spool_replayed: int  # events delivered from the spool (any process's)
    spool_elsewhere: int  # events this channel spooled that another process replayed
    spool_undeletable: int  # replayed, yet on disk still: a later process may resend
    spool_stranded: int  # left on a spool this process cannot claim from (read-only)
    last_error: str
    last_status: int

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` items a producer dropped before they reached the buffer."""
        with self.lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def _settle(self, n: int, *, lost: bool, reason: str = "") -> None:
        with self.lock:
            self.settled += n
            if lost:
                self.lost += n
                self.dropped[reason] = self.dropped.get(reason, 0) + n

    def stats(self) -> dict[str, Any]:
        with self.lock:
            dropped = dict(self.dropped)
            return {
                "datasource": self.datasource,
                "enqueued": self.enqueued,
                "sent": self.sent,
                "batches": self.batches,
                "bytes_sent": self.bytes_sent,
                "dropped": dropped,
                "dropped_total": sum(dropped.values()),
                "retries": self.retries,
                # Put and not yet delivered, dropped or spooled: buffered, being encoded, or
                # in a batch.  Every settling counts under this lock, so an event is in
                # exactly one of queue_depth, sent and dropped whenever stats() looks.
                "queue_depth": self.enqueued - self.settled,
                "queue_bytes": self.buf_bytes + self.backlog_memory,
                "successful_rows": self.successful_rows,
                "quarantined_rows": self.quarantined_rows,
                "rate_limited": self.rate_limited,
                "paced": self.paced,
                "unconfirmed": self.unconfirmed,
                "spooled": self.spooled,
                "spool_replayed": self.spool_replayed,
                "spool_replayed_elsewhere": self.spool_elsewhere,
                "spool_undeletable": self.spool_undeletable,
                "spool_stranded": self.spool_stranded,
                "spool_bytes": self.spool.bytes if self.spool is not None else 0,
                "spool_segments": self.spool.segments if self.spool is not None else 0,
                "circuit_state": self.breaker.state,
                "circuit_trips": self.breaker.trips,
                "last_status": self.last_status,
                "last_error": self.last_error,
            }

    # -- what it says ------------------------------------------------------------------

    def _warn_quarantine(self, rows: int) -> None:
        _diag.warn_once(
            f"quarantine:{self.api_url}:{self.datasource}",
            "tblog: Tinybird quarantined %d rows of datasource %r; see the "
            "%s_quarantine datasource for the rows and the reason",
            rows, self.datasource, self.datasource,
        )  # fmt: skip

    def _warn(self, result: Result, what: str, level: int = logging.WARNING) -> None:
        _diag.diag(level, f"send:{self.label}:{result.reason}", "tblog: %s; %s", result.error, what)

    def _tell(self, cause: str, what: str) -> None:
        """Events were lost (or will be): one line on stderr per process, destination, cause.

        Besides the ``tblog`` logger, which shows nothing unless logging is configured; see
        ``_diag.tell``.  ``what`` is token-free (errors are built without it).
        """
        if self.options.warn_stderr:
            _diag.tell(
                f"{self.api_url}|{self.datasource}|{cause}",
                f"tblog: {what} [once per process; TBLOG_QUIET=1 or warn_stderr=False silences]",
            )

    def tell_lost_at_exit(self, lost: int) -> None:
        """Exit could not deliver ``lost`` events: say so on stderr (once, see ``_tell``)."""
        why = f" (last error: {self.last_error})" if self.last_error else ""
        self._tell(
            "exit",
            f"exit: {lost} events for datasource {self.datasource!r} at {self.api_url} not "
            f"delivered within shutdown_timeout ({self.options.shutdown_timeout:g}s){why}",
        )

    def report_unsettled_at_exit(self) -> None:
        """Shutdown could not wait for the sender thread's pass: report, change nothing."""
        with self.lock:
            left = self.enqueued - self.settled
        if left > 0:
            _diag.diag(
                logging.WARNING, f"shutdown-busy:{self.label}",
                "tblog: exit: %d events for %s were still being handled by the sender thread; "
                "their delivery is not confirmed", left, self.datasource,
            )  # fmt: skip
