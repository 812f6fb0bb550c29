"""A channel's side of the spool: batches to disk while delivery waits, segments replayed.

``Spooling`` sits between ``Accounting`` and ``Channel``: it writes a batch to the spool
(``_to_spool``: then it is off the channel's hands), loads the oldest segment as the next
batch to send (``_replay_next``), settles a replayed segment once it was delivered or refused
(``_segment_settled``), splits one on a 413, and keeps the books of the segments this channel
wrote (``_own``, ``on_disk``): flush() waits for them, and counts as lost what the spool
deleted undelivered (full, corrupt) or what this process cannot claim (read-only).
Sender thread only (or the exit drain, under the sender's service lock).
"""

from __future__ import annotations

from collections import deque

from tblog import _diag
from tblog._delivery.accounting import Accounting
from tblog._delivery.batch import Batch


class Spooling(Accounting):
    """The spool glue of ``Channel`` (its state is set by ``Channel._init_state``)."""

    pending: deque[Batch]  # the batches to send, in order
    backlog: bool  # segments an earlier process left may wait: flush() waits for them
    on_disk: int  # events this channel spooled that are not delivered yet
    _own: dict[str, int]  # this channel's segments on disk: name -> events
    _own_checked: int  # the spool's scan count when _own was last checked against it
    spool_risk: int  # undeletable + stranded: a flush() that saw them grow says False

    def _to_spool(self, batch: Batch) -> bool:
        """Write a batch to the spool; True when it is on disk (then it is off our hands)."""
        assert self.spool is not None
        name, evicted = self.spool.write(batch.lines)
        self._forget_segments(evicted, "spool_full")
        if name is None:
            return False
        with self.lock:
            self.settled += batch.count
            self.spooled += batch.count
            self.on_disk += batch.count
        self._own[name] = batch.count
        return True

    def _forget_segments(self, gone: list[tuple[str, int]], reason: str) -> None:
        """Segments deleted without delivery: count their events as dropped."""
        for name, count in gone:
            own = self._own.pop(name, None)
            with self.lock:
                self.dropped[reason] = self.dropped.get(reason, 0) + count
                self.lost += count
                if own is not None:
                    self.on_disk -= own

    def _spool_while_waiting(self, now: float) -> None:
        """In a backoff, an open circuit or a rate-limit hold: batches wait on disk, not in RAM.

        (What arrives meanwhile is encoded into the draft as usual, and goes to disk in its
        turn once it is a batch.)
        """
        kept: deque[Batch] = deque()
        while self.pending:
            batch = self.pending.popleft()
            if batch.segment is not None or not self._to_spool(batch):
                kept.append(batch)
        self.pending = kept

    def _replay_next(self) -> None:
        """Load the oldest spooled segment as the next batch to send."""
        assert self.spool is not None
        has = self.spool.may_have_segments()
        if self._own and self.spool.scans != self._own_checked:
            self._own_checked = self.spool.scans
            self._forget_vanished()
        if not has:
            self.backlog = False
            return
        segment, corrupt = self.spool.claim()
        self._forget_segments(corrupt, "spool_corrupt")
        if segment is not None:
            self.pending.append(Batch(segment.lines, segment))
        elif self.spool.stuck:
            self._strand_own()

    def _strand_own(self) -> None:
        """The spool cannot be claimed from (read-only): this process's segments stay on disk
        for a later one.  No longer owed here; ``flush()`` says False for them (not sent)."""
        stranded = sum(self._own.values())
        self._own.clear()
        self.backlog = False
        with self.lock:
            self.on_disk -= stranded
            self.spool_stranded += stranded
            self.spool_risk += stranded

    def _forget_vanished(self) -> None:
        """Segments this channel spooled that another process replayed: no longer owed here.

        (Delivered or dropped there, and counted by that process; this one cannot tell which.)
        """
        assert self.spool is not None
        for name in self.spool.vanished(list(self._own)):
            own = self._own.pop(name)
            with self.lock:
                self.on_disk -= own
                self.spool_elsewhere += own

    def _segment_settled(self, batch: Batch, *, delivered: bool, reason: str = "") -> None:
        """A replayed segment is off the disk: delivered, or refused for good."""
        assert self.spool is not None
        assert batch.segment is not None
        error = self.spool.done(batch.segment)
        own = self._own.pop(batch.segment.name, None)
        with self.lock:
            if own is not None:
                self.on_disk -= own
            if delivered:
                self.spool_replayed += batch.count
            else:
                self.dropped[reason] = self.dropped.get(reason, 0) + batch.count
                self.lost += batch.count
            if error is not None:  # still on disk: flush() says False for it
                self.spool_undeletable += batch.count
                self.spool_risk += batch.count
        if error is not None:
            what = (
                f"{'delivered' if delivered else 'dropped'} {batch.count} events of the spool "
                f"segment {batch.segment.path} but could not delete it "
                f"({type(error).__name__}: {error.strerror or error}); a later process may "
                "send them again"
            )
            _diag.warn_once(f"spool-undeletable:{self.label}", "tblog: %s", what)
            self._tell("spool_undeletable", what)

    def _split_segment(self, batch: Batch) -> None:
        """A replayed segment too large for one request: two segments on disk instead."""
        assert self.spool is not None
        assert batch.segment is not None
        own = self._own.pop(batch.segment.name, None)
        halves = self.spool.split(batch.segment)
        if halves is not None and own is not None:
            mid = batch.count // 2
            self._own[halves[0]], self._own[halves[1]] = mid, batch.count - mid
        elif own is not None:
            self._own[batch.segment.name] = own
