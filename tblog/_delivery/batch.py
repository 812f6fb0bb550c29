"""The units that travel: ``Batch`` (encoded events sent as one request) and ``InFlight``.

Also what a buffered line is taken to cost in memory (``line_size``, ``BYTES_OVERHEAD``), the
measure every channel's ``max_buffer_bytes`` bound is kept in.
"""

from __future__ import annotations

from tblog._delivery.spool import Segment
from tblog._delivery.transport import Result
from tblog._event.encode import gzip_lines

#: What ``max_buffer_bytes`` counts for a bytes object beyond its length (its header and its
#: slot in a container).
BYTES_OVERHEAD = 64


def line_size(line: bytes) -> int:
    """The buffer-memory estimate of an already encoded line (the default ``measure``)."""
    return len(line) + BYTES_OVERHEAD


class Batch:
    """Encoded events for one request; retried as a unit (the body is built once).

    The lines are kept joined, a chunk per ``add`` (they hold no raw newline): no bytes
    object per event waits in memory, and the body is one more join away.  ``lines`` splits
    them again for the rarer paths (a split on 413, the spool, dropping the oldest).
    """

    __slots__ = ("_body", "attempts", "chunks", "count", "first_try", "segment", "size")

    def __init__(self, lines: list[bytes] | None = None, segment: Segment | None = None) -> None:
        self.chunks: list[bytes] = []
        self.count = 0  # events
        self.size = 0  # bytes of the body: the lines and their newlines
        self.segment = segment  # replayed from this spool segment
        self.attempts = 0  # failed attempts that count against max_retries (not 429s)
        self.first_try = 0.0  # monotonic time of the first attempt (0: not tried yet)
        self._body: bytes | None = None
        if lines:
            self.add(lines)

    def add(self, lines: list[bytes]) -> None:
        self.add_chunks([b"\n".join(lines)], len(lines))

    def add_chunks(self, chunks: list[bytes], count: int) -> None:
        """``count`` lines, in chunks of lines joined by newlines."""
        self.chunks += chunks
        self.count += count
        self.size += sum(map(len, chunks)) + len(chunks)
        self._body = None

    @property
    def memory(self) -> int:
        """Its estimate for ``max_buffer_bytes``."""
        return self.size + BYTES_OVERHEAD * len(self.chunks)

    @property
    def lines(self) -> list[bytes]:
        return [line for chunk in self.chunks for line in chunk.split(b"\n")]

    def drop_oldest(self, items: int, memory: int) -> tuple[int, int]:
        """Forget the oldest events, until ``items`` events and ``memory`` bytes are gone (or
        all of them).  Whole chunks where they are needed whole; returns (events, bytes)."""
        events = freed = 0
        while self.chunks and (events < items or freed < memory):
            chunk = self.chunks[0]
            k, b = chunk.count(b"\n") + 1, len(chunk) + 1
            if items - events >= k or memory - freed >= b:
                del self.chunks[0]
                events, freed = events + k, freed + b
                continue
            lines = chunk.split(b"\n")  # the last chunk to touch: part of it, or all
            n = 0
            while n < len(lines) and (events < items or freed < memory):
                events, freed, n = events + 1, freed + len(lines[n]) + 1, n + 1
            if n < len(lines):
                self.chunks[0] = b"\n".join(lines[n:])
            else:  # its last line was the one needed: no empty chunk stays (it reads as a line)
                del self.chunks[0]
        self.count -= events
        self.size -= freed
        self._body = None
        return events, freed

    def body(self, gzipped: bool) -> bytes:
        if self._body is None:
            if gzipped:
                self._body = gzip_lines(self.chunks)
            else:
                self._body = b"\n".join([*self.chunks, b""])  # newline-terminated
        return self._body

    def halves(self) -> tuple[Batch, Batch]:
        lines = self.lines
        mid = len(lines) // 2
        return Batch(lines[:mid]), Batch(lines[mid:])


class InFlight:
    """A request on its way, on a thread of its own; ``result`` is set when it is answered.

    One per channel at most: the sender thread never waits on the network, so a destination
    that answers slowly, a byte at a time or never delays only its own datasource.  The
    thread lives while the request does; the sender aborts the request at ``deadline``.
    """

    __slots__ = ("batch", "body", "deadline", "finished", "flushes", "ident", "result")

    def __init__(self, batch: Batch, body: bytes, deadline: float, flushes: int) -> None:
        self.batch = batch
        self.body = body
        self.deadline = deadline  # its total deadline
        self.flushes = flushes  # the channel's flush count when it was sent
        self.ident = 0  # its thread
        self.finished = 0.0  # monotonic time of the answer
        self.result: Result | None = None
