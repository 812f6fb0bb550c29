"""The ``tb_logs`` row: its columns, and the fields every producer fills the same way.

One source for the row the handler, the queue handler, ``TinybirdJsonFormatter`` and the
structlog processor ship (the columns of ``datasources/tb_logs.datasource``): ``head`` for the
fields one call site shares, ``finish`` for the rest; the timestamp (``iso_utc``), the host
name and event ids (``new_event_id``) are made here too.  The handler's fast path
(``EventBuilder.encode_batch``) writes the same fields inline; a test holds it to ``finish``.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tblog._event.snapshot import ExcInfo

HOSTNAME = socket.gethostname()
_ts_cache: dict[int, str] = {}


def iso_utc(created: float) -> str:
    """``created`` as ISO-8601 UTC with microseconds, e.g. ``2026-01-31T12:00:00.123456Z``."""
    # rounded as ``EventBuilder.encode_batch`` rounds it: both paths write the same text
    seconds, micros = divmod(int(created * 1_000_000 + 0.5), 1_000_000)
    prefix = _ts_cache.get(seconds)
    if prefix is None:
        if len(_ts_cache) > 64:
            _ts_cache.clear()
        prefix = _ts_cache[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{micros:06d}Z"


class _EventIds:
    """Unique version-4-shaped UUIDs, cheaply: 74 random bits per process, then a counter.

    ``str(uuid.uuid4())`` costs about a microsecond, a large share of an event's encoding.
    Here the random part is drawn once per process from ``os.urandom`` and the low 48 bits
    count events, so ids never repeat within a process and collide across processes only
    if two draw the same 74 random bits.  A forked child must not repeat its parent's ids:
    the at-fork hook draws again, and so does the pid check of ``state()`` and ``next()``
    for a fork that ran no hook (uWSGI's, without ``--py-call-osafterfork``).
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.pid = os.getpid()
        bits = random.SystemRandom().getrandbits(120)  # not ``random``: a fork copies its state
        r = f"{bits >> 40:020x}"
        variant = "89ab"[int(r[15], 16) & 3]
        self.prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[16:19]}-"
        self.counter = itertools.count(bits & 0xFFFFFFFFFF)

    def state(self) -> tuple[str, Iterator[int]]:
        """The prefix and the counter, drawn again first if this is a forked child."""
        if os.getpid() != self.pid:
            self.reseed()
        return self.prefix, self.counter

    def next(self) -> str:
        prefix, counter = self.state()
        return f"{prefix}{next(counter) & 0xFFFFFFFFFFFF:012x}"


ids = _EventIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ids.reseed)


def new_event_id() -> str:
    """A new event id: a version-4-shaped UUID, unique in this process (see ``_EventIds``)."""
    return ids.next()


#: The fields of every ``tb_logs`` row that one call site shares (see ``head``).
HEAD_FIELDS = (
    "level", "level_no", "logger", "app_name", "environment", "hostname", "process_id",
    "process_name", "thread_id", "thread_name", "module", "func_name", "lineno", "pathname",
)  # fmt: skip
#: The fields every row has besides: the time, the message, the trace context, its id, extras.
TAIL_FIELDS = ("timestamp", "message", "trace_id", "span_id", "event_id", "extra")
#: Fields a row has only when there is something to say.
OPTIONAL_FIELDS = ("exception", "stack_info", "formatted_message", "truncated", "sample_rate")


def head(  # noqa: PLR0917 - the columns, in their order
    level: str,
    level_no: int,
    logger: str,
    app_name: str,
    environment: str,
    process_id: int,
    process_name: str,
    thread_id: int,
    thread_name: str,
    module: str,
    func_name: str,
    lineno: int,
    pathname: str,
) -> dict[str, Any]:
    """The fields of a ``tb_logs`` row that records from one call site, thread and process share."""
    return {
        "level": level,
        "level_no": level_no,
        "logger": logger,
        "app_name": app_name,
        "environment": environment,
        "hostname": HOSTNAME,
        "process_id": process_id,
        "process_name": process_name,
        "thread_id": thread_id,
        "thread_name": thread_name,
        "module": module,
        "func_name": func_name,
        "lineno": lineno,
        "pathname": pathname,
    }


def finish(  # noqa: PLR0917 - the row's own fields
    row: dict[str, Any],
    timestamp: str,
    message: str,
    trace_id: str,
    span_id: str,
    exc: ExcInfo | None,
    stack_info: Any,
    extra: Mapping[str, Any],
    sample_rate: float | None = None,
) -> dict[str, Any]:
    """Complete ``row`` (a ``head``) with the fields that change with every record; returns it.

    ``timestamp`` is ISO-8601 UTC text (``iso_utc``); the event id is made here.
    ``sample_rate``: the rate sampling kept the record at (``tblog._event.gate``); rows
    without it are not sampled (the column's default is 1).
    """
    row["timestamp"] = timestamp
    row["message"] = message
    row["trace_id"] = trace_id
    row["span_id"] = span_id
    row["event_id"] = ids.next()
    if exc is not None:
        row["exception"] = {"type": exc.type, "message": exc.message, "stacktrace": exc.stacktrace}
    if stack_info:
        row["stack_info"] = stack_info
    row["extra"] = extra
    if sample_rate is not None and sample_rate < 1.0:
        row["sample_rate"] = sample_rate
    return row
