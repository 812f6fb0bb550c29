"""Drop reports: what each channel dropped, by reason, shipped as rows of ``tblog_client_reports``.

A producer asks ``watch(channel, ...)`` (``TinybirdLoggingHandler`` does unless
``client_reports_interval=0``).  Every ``client_reports_interval`` seconds (the shared
sender's tick), at ``close()`` of the producer (``report_final``) and at exit (the last pass,
after held traces are discarded and before the final delivery), the drops counted since the
last report (``stats()["dropped"]`` deltas) become one row per reason: the datasource,
reason and count, the window they were counted in, and the host, pid, app_name,
environment and tblog version.  Nothing is sent when nothing was dropped.

The rows go through the same sender, on a channel of their own per destination (api_url
and token) for the ``tblog_client_reports`` datasource (``tblog/datasources/``).  That
channel's own drops are reported too, by its next periodic report (never at once: a report
that fails never causes another one straight away, so nothing recurses); what it cannot
deliver at exit is told by the usual stderr/``tblog`` logger warnings of a channel.
Drops counted by the final delivery at exit itself (reason ``shutdown``) come after the last
report: the exit warning on stderr covers those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from tblog._delivery import lifecycle as _lifecycle
from tblog._delivery.sender import get_sender
from tblog._version import __version__

if TYPE_CHECKING:
    from tblog._delivery.channel import Channel
    from tblog._event.rows import RowChannel

__all__ = ["DATASOURCE", "Reporter", "reporter", "watch"]

DATASOURCE = "tblog_client_reports"
#: Answers that refuse the token or the host (a bad token, one without the scope, a wrong
#: region): a report sent there would be refused too.  While a channel's last answer, or the
#: report channel's, is one of them, its report waits (counted on, not lost: the next report
#: after an accepted answer carries it); the stderr warning of the refusal covers it meanwhile.
REFUSING = frozenset((401, 403, 404))


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Watch:
    channel: Channel
    token: str = field(repr=False)
    app_name: str
    environment: str
    interval: float
    due: float  # monotonic
    since: float = field(default_factory=time.time)  # the window's start (wall clock)
    last: dict[str, int] = field(default_factory=dict)  # dropped counts already reported


class Reporter:
    """The process's drop reports: the watched channels and one report channel per destination."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._watches: list[_Watch] = []
        self._outs: dict[tuple[str, str], RowChannel] = {}
        self._own: dict[int, _Watch] = {}  # id(report channel) -> its own watch
        self.hostname = socket.gethostname()

    def watch(self, channel: Channel, *, app_name: str, environment: str = "") -> None:
        interval = channel.options.client_reports_interval
        if interval <= 0:
            return
        with self._lock:
            self._watches.append(
                _Watch(channel, channel._token, app_name, environment, interval,
                       time.monotonic() + interval)
            )  # fmt: skip

    def watching(self, channel: Channel) -> bool:
        with self._lock:
            return any(w.channel is channel for w in self._watches)

    def out_channel(self, channel: Channel) -> RowChannel | None:
        """The report channel of ``channel``'s destination (None: none made yet)."""
        with self._lock:
            out = self._outs.get((channel.api_url, channel._token))
            return out if out is not None and not out.closed else None

    # -- building and putting rows ------------------------------------------------------

    def _out(self, w: _Watch) -> RowChannel:
        """The open report channel of ``w``'s destination, made on first use (lock held)."""
        key = (w.channel.api_url, w.token)
        out = self._outs.get(key)
        if out is None or out.closed:
            from tblog._event.rows import RowChannel  # noqa: PLC0415 - rows imports channel

            out = RowChannel(
                api_url=w.channel.api_url,
                token=w.token,
                datasource=DATASOURCE,
                # its failures are not told on stderr: the losses it reports were already
                options=dataclasses.replace(w.channel.options, warn_stderr=False),
                label=f"{w.app_name}:{DATASOURCE}",
            )
            self._outs[key] = out
            own = _Watch(out.channel, w.token, w.app_name, w.environment, w.interval,
                         time.monotonic() + w.interval)  # fmt: skip
            self._own[id(out.channel)] = own
        else:
            mine = self._own.get(id(out.channel))
            if mine is not None and w.interval < mine.interval:
                mine.interval = w.interval
        return out

    def _report(self, w: _Watch, out: RowChannel | None = None) -> int:
        """Put the rows of ``w``'s drops since its last report (lock held); how many rows."""
        ch = w.channel
        if ch.last_status in REFUSING:
            return 0
        key = (ch.api_url, w.token)
        known = out or self._outs.get(key)
        if known is not None and not known.closed and known.channel.last_status in REFUSING:
            return 0
        with ch.lock:
            dropped = dict(ch.dropped)
        now = time.time()
        rows = []
        for reason, total in dropped.items():
            delta = total - w.last.get(reason, 0)
            if delta < 0:  # the counters started again (a fork)
                delta = total
            if delta > 0:
                rows.append((reason, delta))
        since, w.since, w.last = w.since, now, dropped
        if not rows:
            return 0
        if out is None:
            out = self._out(w)
        base = {
            "timestamp": _iso(now),
            "window_start": _iso(since),
            "window_end": _iso(now),
            "app_name": w.app_name,
            "environment": w.environment,
            "hostname": self.hostname,
            "process_id": os.getpid(),
            "tblog_version": __version__,
            "datasource": ch.datasource,
        }
        for reason, count in rows:
            out.put_row({**base, "reason": reason, "count": count})
        return len(rows)

    # -- when ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The sender's pass: the reports that are due (a closed channel leaves unreported:
        its producer's ``close()`` reported it)."""
        with self._lock:
            if not self._watches and not self._own:
                return
            for w in list(self._watches):
                if w.channel.closed:
                    self._watches.remove(w)
                elif now >= w.due:
                    w.due = now + w.interval
                    self._report(w)
            for key, out in list(self._outs.items()):
                own = self._own.get(id(out.channel))
                if out.closed or own is None:
                    self._outs.pop(key, None)
                    self._own.pop(id(out.channel), None)
                elif now >= own.due:
                    own.due = now + own.interval
                    self._report(own, out)

    def report_final(self, channel: Channel, timeout: float | None) -> bool:
        """``channel``'s producer closes: report what it dropped since the last report, stop
        watching it, and deliver the report within ``timeout`` (0: leave it buffered, for the
        sender to deliver in the background or at exit).  True when nothing was left."""
        with self._lock:
            mine = [w for w in self._watches if w.channel is channel]
            for w in mine:
                self._watches.remove(w)
            if get_sender().stopping:  # after the exit delivery (logging.shutdown closes
                return True  # handlers last): the exit warning on stderr tells those drops
            rows = sum(self._report(w) for w in mine)
            out = self._out(mine[0]) if rows else None
        if out is None:
            return True
        if timeout is not None and timeout <= 0:
            return False
        return out.flush(timeout)

    def report_all(self, seconds: float = 0.0) -> None:
        """At exit (the last pass, before the final delivery): every open channel's report."""
        tracekeep = sys.modules.get("tblog._event.tracekeep")
        if tracekeep is not None:  # held traces never erred: counted before the report
            with contextlib.suppress(Exception):
                tracekeep.discard_all()
        with self._lock:
            for w in list(self._watches):
                if not w.channel.closed:
                    with contextlib.suppress(Exception):
                        self._report(w)
            for out in list(self._outs.values()):
                own = self._own.get(id(out.channel))
                if own is not None and not out.closed:
                    with contextlib.suppress(Exception):
                        self._report(own, out)

    def after_fork(self) -> None:
        """A forked child counts from zero (its channels did reset): so do its reports."""
        self._lock = threading.RLock()
        now = time.time()
        for w in [*self._watches, *self._own.values()]:
            w.last = {}
            w.since = now


reporter = Reporter()


def watch(channel: Channel, *, app_name: str, environment: str = "") -> None:
    """Report ``channel``'s drops (unless its ``client_reports_interval`` is 0)."""
    reporter.watch(channel, app_name=app_name, environment=environment)


def _tick(now: float) -> None:
    reporter.tick(now)


def _at_exit(seconds: float) -> None:
    reporter.report_all(seconds)


get_sender().on_tick(_tick)
_lifecycle.on_last_pass(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reporter.after_fork)
