"""The durable spool: batches that cannot be delivered now wait on disk, as plain NDJSON.

Opt-in with ``spool_dir=...``.  Each destination (api_url, datasource) has its own folder,
``<spool_dir>/<datasource>-<hash of the api_url>/`` (the token is never written anywhere),
holding one segment per batch: ``<time_ns>-<pid>-<seq>.ndjson``, one JSON event per line,
written to a temporary name, fsynced and renamed into place, so a segment is either whole
or absent.  Lexical order is write order, and segments are replayed oldest first.

Several processes may share a ``spool_dir``: a segment is claimed by renaming it to
``<name>.claimed-<pid>-<start time>`` (an atomic rename succeeds for exactly one process;
the start time tells a live claimer from a dead one whose pid was reused) and deleted
once Tinybird accepted it; a failed replay renames it back.  Claims left by a process that
died (``kill -9``) are released by the next process that looks (also the older
``.claimed-<pid>`` names).  A process notices when another one replayed the segments it
spooled (``Spool.vanished``), so its ``flush()`` does not wait for them.  A segment that does not
parse (a torn write, a bad disk) is moved to ``corrupt/`` and its lines are counted as
``spool_corrupt`` drops.  The folder is bounded by ``max_spool_bytes``: past it, the oldest
segments are deleted and counted as ``spool_full`` drops.  A disk that refuses to write
turns the spool's writes off for the rest of the process (new batches wait in memory) with
one diagnostic; the segments already on disk are still replayed.  A segment that cannot be
claimed (a read-only disk) stops the replay: it stays for a later process.  A delivered
segment that cannot be deleted is emptied instead (a tombstone); when even that fails, the
caller reports the risk that a later process sends it again.

Everything here runs on the sender thread (or the exit drain); never on a caller's thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass

from tblog import _diag

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency on CPython
    from json import loads as _loads  # type: ignore[assignment]

_SEGMENT = re.compile(r"^\d{20}-\d+-\d+(?:-[ab])*\.ndjson$")
_CLAIMED = re.compile(
    r"^(?P<name>\d{20}-\d+-\d+(?:-[ab])*\.ndjson)\.claimed-(?P<pid>\d+)(?:-(?P<ident>[0-9a-z]+))?$"
)
_RESCAN = 5.0  # seconds between looks for segments other processes wrote


def _segment_names(listing: list[str]) -> set[str]:
    """The segments of a folder listing, by their unclaimed name (claimed ones too)."""
    names = set()
    for n in listing:
        if _SEGMENT.match(n):
            names.add(n)
        else:
            m = _CLAIMED.match(n)
            if m:
                names.add(m["name"])
    return names


def _parses(line: bytes) -> bool:
    try:
        _loads(line)
    except ValueError:
        return False
    return True


def _start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after the command name: state is field 3
    return fields[19].decode() if len(fields) > 19 and fields[19].isdigit() else None


_me = (0, "")  # (pid, identity) of this process, for claim names (made again after a fork)


def _claimer() -> str:
    """This process in a claim name: ``<pid>-<start time>``, or a random id without ``/proc``.

    The pid alone cannot tell a live claimer from a dead one whose pid was reused (PID 1 of
    a restarted container, a pid that wrapped around).
    """
    global _me
    pid = os.getpid()
    if _me[0] != pid:
        _me = (pid, _start_time(pid) or "r" + os.urandom(6).hex())
    return f"{pid}-{_me[1]}"


def _claim_alive(pid: int, ident: str | None) -> bool:
    """Whether the process that made a claim still runs."""
    if pid == os.getpid():  # this pid: ours only when it is our identity (never an old name)
        return ident is not None and f"{pid}-{ident}" == _claimer()
    if not _pid_alive(pid):
        return False
    if ident is None or ident.startswith("r"):  # an old claim name, or a random id: the pid
        return True
    started = _start_time(pid)
    return started is None or started == ident


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Segment:
    """A claimed segment: its lines, where it lies while claimed, its original name."""

    path: str
    name: str
    lines: list[bytes]


class Spool:
    """One destination's folder of segments."""

    def __init__(self, root: str, api_url: str, datasource: str, max_bytes: int) -> None:
        digest = hashlib.sha256(api_url.encode()).hexdigest()[:12]
        self.dir = os.path.join(root, f"{datasource}-{digest}")
        self.datasource = datasource
        self.max_bytes = max_bytes
        self.enabled = True  # writes; replay goes on after a write failed (a full disk)
        self.stuck = False  # a segment could not be claimed (a read-only disk): no replay
        self._ready = False
        self._seq = itertools.count()
        self.bytes = 0
        self.segments = 0
        self._next_scan = 0.0
        self._known: list[str] = []  # unclaimed segment names, oldest first (a cache)
        self._present: set[str] = set()  # segment names at the last scan, claimed or not
        self.scans = 0  # folder scans so far (the channel then looks for its own segments)

    # -- set-up and failure --------------------------------------------------------------

    def _prepare(self) -> bool:
        if self._ready:
            return True
        if not self.enabled:
            return False
        try:
            os.makedirs(self.dir, exist_ok=True)
            self._release_dead_claims()
            self._scan()
        except OSError as exc:
            self._disable(exc)
            return False
        self._ready = True
        return True

    def _disable(self, exc: OSError) -> None:
        self.enabled = False
        _diag.warn_once(
            f"spool-off:{self.dir}",
            "tblog: the spool at %s cannot be written (%s: %s); delivery for %r continues "
            "from memory (segments already on disk are still replayed)",
            self.dir, type(exc).__name__, exc.strerror or exc, self.datasource,
        )  # fmt: skip

    def _scan(self) -> None:
        listing = os.listdir(self.dir)
        names = sorted(n for n in listing if _SEGMENT.match(n))
        total = 0
        for name in names:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(self.dir, name))
        self._known = names
        self._present = _segment_names(listing)
        self.scans += 1
        self.bytes = total
        self.segments = len(names)
        self._next_scan = time.monotonic() + _RESCAN

    def rescan_soon(self) -> None:
        """``flush()``: look for segments other processes wrote or replayed at the next chance."""
        self._next_scan = 0.0

    def vanished(self, names: list[str]) -> list[str]:
        """Those of ``names`` that are gone from the folder, claimed or not: another process
        replayed them (or dropped them, and counted that).  Confirmed by a second listing:
        a rename under way while the folder is listed may show up in neither name."""
        gone = [n for n in names if n not in self._present]
        if not gone:
            return []
        try:
            present = _segment_names(os.listdir(self.dir))
        except OSError:
            return []
        return [n for n in gone if n not in present]

    def _release_dead_claims(self) -> None:
        for name in os.listdir(self.dir):
            m = _CLAIMED.match(name)
            if m and not _claim_alive(int(m["pid"]), m["ident"]):
                with contextlib.suppress(OSError):
                    os.rename(os.path.join(self.dir, name), os.path.join(self.dir, m["name"]))

    # -- writing -------------------------------------------------------------------------

    def write(
        self, lines: list[bytes], name: str | None = None
    ) -> tuple[str | None, list[tuple[str, int]]]:
        """Write ``lines`` as one segment: (its name or None, segments evicted to make room)."""
        if not lines or not self._prepare():
            return None, []
        data = b"\n".join(lines) + b"\n"
        if len(data) > self.max_bytes:
            return None, []
        evicted = self._make_room(len(data))
        if name is None:
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq)}.ndjson"
        tmp = os.path.join(self.dir, f".tmp-{os.getpid()}-{next(self._seq)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(self.dir, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._disable(exc)
            return None, evicted
        self.bytes += len(data)
        self.segments += 1
        self._known.append(name)
        self._known.sort()
        return name, evicted

    def _make_room(self, size: int) -> list[tuple[str, int]]:
        """Delete the oldest segments until ``size`` more bytes fit: (name, events) of each."""
        if self.bytes + size <= self.max_bytes:
            return []
        self._scan()  # other processes may have written or replayed meanwhile
        evicted: list[tuple[str, int]] = []
        while self._known and self.bytes + size > self.max_bytes:
            name = self._known.pop(0)
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
                os.unlink(path)
            except OSError:
                continue  # claimed by another process meanwhile
            self.bytes -= len(data)
            self.segments -= 1
            evicted.append((name, data.count(b"\n")))
        if evicted:
            _diag.diag(
                logging.WARNING, f"spool-full:{self.dir}",
                "tblog: the spool for %r is full (max_spool_bytes=%d); deleted the oldest "
                "%d events", self.datasource, self.max_bytes, sum(n for _, n in evicted),
            )  # fmt: skip
        return evicted

    # -- replay --------------------------------------------------------------------------

    def may_have_segments(self) -> bool:
        if self.stuck:
            return False
        if not self._ready:
            return self.enabled and self._prepare() and bool(self._known)
        if self._known:
            return True
        if time.monotonic() >= self._next_scan:
            try:
                self._release_dead_claims()
                self._scan()
            except OSError:
                self._next_scan = time.monotonic() + _RESCAN
                return False
        return bool(self._known)

    def claim(self) -> tuple[Segment | None, list[tuple[str, int]]]:
        """The oldest segment nobody else holds, and (name, events) of corrupt ones skipped."""
        corrupt: list[tuple[str, int]] = []
        while self._known:
            name = self._known.pop(0)
            path = os.path.join(self.dir, name)
            claimed = f"{path}.claimed-{_claimer()}"
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another process claimed it (or replayed it) first
            except OSError as exc:  # read-only, no permission: segments stay for later
                self.stuck = True
                _diag.warn_once(
                    f"spool-stuck:{self.dir}",
                    "tblog: cannot claim spool segments in %s (%s: %s); they stay on disk "
                    "for a later process",
                    self.dir, type(exc).__name__, exc.strerror or exc,
                )  # fmt: skip
                return None, corrupt
            try:
                with open(claimed, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if not data:  # a tombstone: delivered, but it could not be deleted then
                with contextlib.suppress(OSError):
                    os.unlink(claimed)
                continue
            self.bytes -= len(data)
            self.segments -= 1
            lines = [line for line in data.split(b"\n") if line.strip()]
            if not data.endswith(b"\n") or not all(_parses(line) for line in lines):
                corrupt.append((name, max(1, len(lines))))
                self._quarantine(claimed, name)
                continue
            return Segment(claimed, name, lines), corrupt
        return None, corrupt

    def _quarantine(self, claimed: str, name: str) -> None:
        target = os.path.join(self.dir, "corrupt")
        try:
            os.makedirs(target, exist_ok=True)
            os.replace(claimed, os.path.join(target, name))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(claimed)
        _diag.diag(
            logging.WARNING, f"spool-corrupt:{self.dir}",
            "tblog: skipped a torn or corrupt spool segment %s (moved to %s)", name, target,
        )  # fmt: skip

    def done(self, segment: Segment) -> OSError | None:
        """Tinybird has the segment's events (or refused them for good): delete it.

        When it cannot be deleted it is emptied instead (a tombstone every process skips);
        the error when neither worked (a read-only disk): the segment would be sent again
        by the next process that can claim it.
        """
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            try:
                os.truncate(segment.path, 0)
            except OSError:
                return exc
        return None

    def release(self, segment: Segment) -> None:
        """Delivery failed: put the segment back for a later replay (here or elsewhere)."""
        try:
            os.rename(segment.path, os.path.join(self.dir, segment.name))
        except OSError:
            return
        self.bytes += sum(len(line) + 1 for line in segment.lines)
        self.segments += 1
        self._known.append(segment.name)
        self._known.sort()

    def split(self, segment: Segment) -> tuple[str, str] | None:
        """Too large for one request (413): rewrite it as two halves, in its place in line."""
        mid = len(segment.lines) // 2
        stem = segment.name.removesuffix(".ndjson")
        first, _ = self.write(segment.lines[:mid], f"{stem}-a.ndjson")
        second, _ = self.write(segment.lines[mid:], f"{stem}-b.ndjson")
        if first and second:
            self.done(segment)
            return first, second
        self.release(segment)
        return None
