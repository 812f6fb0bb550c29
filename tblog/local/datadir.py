"""What ``tblog local`` keeps in its data dir besides chDB's files: the lock that makes it
one server per data dir, and the atomic, owner-only writes of its own small files.

``DataDirLock(path)`` takes an exclusive ``fcntl.flock`` on ``<data dir>/tblog-local.lock``
(created 0600; it holds the owner's pid, for the message a second server gets) and
``release()`` lets it go; the kernel releases it too when the process ends, however it
ends, so a crash never leaves a stale lock.  A second server, in this process or
another, gets ``DataDirInUseError`` at once (it never waits).  On Windows (where chDB does
not run either) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

if sys.platform != "win32":
    import fcntl

__all__ = ["LOCK_NAME", "DataDirInUseError", "DataDirLock", "write_private"]

LOCK_NAME = "tblog-local.lock"


class DataDirInUseError(RuntimeError):
    """Another ``tblog local`` (or ``LocalServer``) serves this data dir."""


class DataDirLock:
    """An exclusive hold on one data dir, for as long as the object is not released."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir).resolve() / LOCK_NAME
        self._fd: int | None = None
        if sys.platform == "win32":  # pragma: no cover - no flock (nor chDB)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            by = f" (pid {holder})" if holder else ""
            raise DataDirInUseError(
                f"the data dir {self.path.parent} is in use by another tblog local{by}; "
                "stop it, or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Let the data dir go (the file stays; the next server takes it over)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "0") or None
    except (OSError, ValueError):
        return None


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file in the same folder,
    synced, then renamed over it); the file is readable by its owner only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file keeps its mode through O_TRUNC
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
