"""flush()/close() that sleep and are bounded, a shared spool that settles, emit under signals.

Issue 13 items 3-5, issue 21 items 5-6: waiting for an endpoint that is down costs no CPU;
``handler.flush()`` (no argument, the ``logging.Handler`` contract) is bounded by
``shutdown_timeout``; a spool shared by several processes (or turned off by a disk error)
still lets ``flush()`` settle; a signal handler that logs never deadlocks ``emit()``.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.config
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tblog
from tblog import _diag
from tblog._config import Options
from tblog._delivery import spool as _spool
from tblog._delivery.batch import line_size
from tblog._delivery.channel import Channel
from tblog._delivery.sender import Sender
from tblog._delivery.spool import Spool
from tblog._event.build import EventBuilder
from tblog._event.snapshot import snapshot
from tests.eventsapi import EventsAPI, Fault, free_port_refusing

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


def _cpu_share(fn: Any) -> tuple[Any, float, float]:
    """fn()'s result, wall seconds and the share of them this process spent on a CPU."""
    wall, cpu = time.monotonic(), time.process_time()
    result = fn()
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return result, wall, cpu / max(wall, 1e-9)


# -- 13.3: waiting sleeps --------------------------------------------------------------------


def test_a_flush_against_a_refused_port_sleeps(make_handler: Any, logger: logging.Logger) -> None:
    handler = make_handler(api_url=free_port_refusing(), **FAST)
    logger.addHandler(handler)
    for i in range(10):
        logger.info("nobody listens %d", i)
    ok, wall, share = _cpu_share(lambda: handler.flush(1.5))
    assert ok is False and wall >= 1.4
    assert share < 0.2, f"flush() used {share:.0%} of a CPU while waiting"
    assert handler.stats()["queue_depth"] == 10  # still owed, nothing dropped


def test_a_flush_against_a_503_endpoint_sleeps(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    events_api.fault = lambda req: Fault(status=503)
    handler = make_handler(circuit_breaker_threshold=2, circuit_breaker_reset=0.2, **FAST)
    logger.addHandler(handler)
    logger.info("the endpoint is down")
    ok, wall, share = _cpu_share(lambda: handler.flush(1.5))
    assert ok is False and wall >= 1.4
    assert share < 0.2, f"flush() used {share:.0%} of a CPU while waiting"


# -- 13.4: flush() is bounded by shutdown_timeout; flush(None) is not ------------------------


def test_flush_without_an_argument_is_bounded_by_shutdown_timeout(
    make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(api_url=free_port_refusing(), shutdown_timeout=0.5, **FAST)
    logger.addHandler(handler)
    logger.info("owed")
    started = time.monotonic()
    assert handler.flush() is False
    assert time.monotonic() - started < 3


def test_logging_shutdown_during_an_outage_takes_about_shutdown_timeout(
    make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(api_url=free_port_refusing(), shutdown_timeout=1.0, **FAST)
    logger.addHandler(handler)
    logger.info("owed at shutdown")
    started = time.monotonic()
    logging.shutdown([lambda: handler])  # flush(), then close()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.0 + 0.8, elapsed  # one shutdown_timeout, not two, not forever


def test_dictconfig_twice_during_an_outage_returns_quickly() -> None:
    url = free_port_refusing()
    config = {
        "version": 1,
        "disable_existing_loggers": False,  # other tests' loggers stay as they are
        "handlers": {
            "tb": {
                "class": "tblog.TinybirdLoggingHandler", "api_url": url,
                "token": "p.test-token-0123456789abcdef", "app_name": "reconf",
                "shutdown_timeout": 5.0, "retry_base_delay": 0.01,
            }
        },
        "loggers": {"reconf": {"handlers": ["tb"], "level": "INFO", "propagate": False}},
    }  # fmt: skip
    try:
        logging.config.dictConfig(config)
        logging.getLogger("reconf").info("owed when re-configured")
        started = time.monotonic()
        logging.config.dictConfig(config)  # closes the first handler under logging's lock
        assert time.monotonic() - started < 1.5
    finally:
        for h in list(logging.getLogger("reconf").handlers):
            logging.getLogger("reconf").removeHandler(h)
            h.close()


def test_flush_none_waits_past_shutdown_timeout_until_delivered(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(shutdown_timeout=0.0, **FAST)
    logger.addHandler(handler)
    events_api.fail_next(3, status=503)
    logger.info("after three 503s")
    assert handler.flush() is False  # shutdown_timeout=0: one look, no wait
    assert handler.flush(None) is True  # no limit: until it arrived
    assert [r["message"] for r in events_api.rows()] == ["after three 503s"]


def test_module_flush_without_an_argument_is_bounded_too(
    make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(api_url=free_port_refusing(), shutdown_timeout=0.3, **FAST)
    logger.addHandler(handler)
    logger.info("owed")
    started = time.monotonic()
    assert tblog.flush() is False
    assert time.monotonic() - started < 2.5


# -- 13.5: a spool shared by several processes -----------------------------------------------

ROOT = str(Path(__file__).resolve().parent.parent)

REPLAYER = textwrap.dedent(
    """
    import logging, sys
    sys.path.insert(0, sys.argv[3])
    import tblog
    handler = tblog.TinybirdLoggingHandler(
        sys.argv[1], "p.test-token-0123456789abcdef", "replayer", spool_dir=sys.argv[2]
    )
    sys.exit(0 if handler.flush(20) else 1)
    """
)


def _segments(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*/*.ndjson*"))


def test_segments_another_process_replayed_no_longer_count_as_owed(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    # This process sends uncompressed bodies and gets 503s; the other one gzips and gets in.
    events_api.fault = lambda req: (
        None if req.headers.get("Content-Encoding") == "gzip" else Fault(status=503)
    )
    handler = make_handler(
        spool_dir=str(tmp_path), gzip=False, batch_size=5, circuit_breaker_threshold=1,
        circuit_breaker_reset=3600, **FAST,
    )  # fmt: skip
    logger.addHandler(handler)
    for i in range(20):
        logger.info("spooled here %d", i)
    deadline = time.monotonic() + 10
    while handler.stats()["spooled"] < 20 and time.monotonic() < deadline:
        assert handler.flush(0.2) is False
    assert handler.stats()["spooled"] == 20 and _segments(tmp_path)

    other = subprocess.run(
        [sys.executable, "-c", REPLAYER, events_api.url, str(tmp_path), ROOT],
        check=False, timeout=60,
    )  # fmt: skip
    assert other.returncode == 0
    assert _segments(tmp_path) == []  # the other process delivered and deleted them
    assert sorted(r["message"] for r in events_api.rows()) == sorted(
        f"spooled here {i}" for i in range(20)
    )
    started = time.monotonic()
    assert handler.flush(10) is True  # nothing this process spooled is owed any more
    assert time.monotonic() - started < 3
    stats = handler.stats()
    assert stats["dropped_total"] == 0 and stats["queue_depth"] == 0
    assert stats["spool_replayed_elsewhere"] == 20


def test_a_claim_whose_pid_was_reused_is_released(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    spool = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 20)
    names = [spool.write(_lines([f"claimed {i}"]))[0] for i in range(4)]
    assert all(names)
    folder = Path(spool.dir)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = _spool._start_time(live.pid)
        assert started is not None  # Linux /proc
        claims = [
            f"{names[0]}.claimed-{os.getpid()}",  # old name, this pid: a dead predecessor's
            f"{names[1]}.claimed-1-999999999",  # PID 1 is alive, but started at another time
            f"{names[2]}.claimed-{live.pid}-{started}",  # a live claimer: left alone
        ]
        for name, claim in zip(names, claims):
            assert name is not None
            (folder / name).rename(folder / claim)
        handler = make_handler(spool_dir=str(tmp_path))
        logger.addHandler(handler)
        assert handler.flush(10) is True
        assert sorted(r["message"] for r in events_api.rows()) == [
            "claimed 0", "claimed 1", "claimed 3"
        ]  # fmt: skip
        assert [p.name for p in folder.iterdir()] == [claims[2]]
    finally:
        live.kill()
        live.wait(10)


def _lines(messages: list[str]) -> list[bytes]:
    """tb_logs events for ``messages``, as the handler encodes them."""
    builder = EventBuilder(
        app_name="spooled", environment="", schema="tblog", static_fields={},
        max_event_bytes=1 << 20,
    )  # fmt: skip
    out = []
    for m in messages:
        record = logging.makeLogRecord({"msg": m, "name": "spool", "levelno": 20})
        line = builder.encode(snapshot(record, 0, None)[0])
        assert line is not None
        out.append(line)
    return out


class _SpyLock:
    """A lock that tells when anyone but the sender thread asks for it."""

    def __init__(self, asked: threading.Event) -> None:
        self._lock = threading.Lock()
        self._asked = asked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.current_thread().name != "tblog-sender":
            self._asked.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_shutdown_waits_for_the_senders_pass_before_it_counts_what_is_left(
    events_api: EventsAPI,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def encode(item: bytes) -> bytes:  # the sender thread's pass is busy here
        entered.set()
        release.wait(10)
        return item

    sender = Sender()
    sender.service_lock = _SpyLock(release)  # type: ignore[assignment]
    channel = Channel(
        sender, api_url=events_api.url, token=events_api.token, datasource="h6_shutdown",
        options=Options(shutdown_timeout=0.1, warn_stderr=False), encode=encode,
    )  # fmt: skip
    line = b'{"message": "in the pass at shutdown"}'
    assert channel.put(line, line_size(line))
    assert entered.wait(10)
    closer = threading.Thread(target=sender.shutdown, args=(0.1,))
    closer.start()
    closer.join(10)  # (before the fix it ends without the lock, while the pass is still busy)
    release.set()
    assert sender.thread is not None
    sender.thread.join(10)
    assert not closer.is_alive() and not sender.thread.is_alive()
    stats = channel.stats()
    # every event is in exactly one place: sent, dropped (shutdown) or still queued: none is
    assert stats["queue_depth"] == 0, stats
    assert stats["sent"] + stats["dropped_total"] == stats["enqueued"] == 1
    assert len(events_api.rows("h6_shutdown")) >= stats["sent"]


# -- 21.5: a signal handler that logs never deadlocks emit() ---------------------------------

SIGNALLER = textwrap.dedent(
    """
    import json, logging, signal, sys, time
    sys.path.insert(0, sys.argv[3])
    import tblog
    handler = tblog.TinybirdLoggingHandler(
        sys.argv[1], "p.test-token-0123456789abcdef", "signals", max_buffer_size=8,
        shutdown_timeout=0, warn_stderr=False, retry_base_delay=0.01, retry_max_delay=0.05,
    )
    log = logging.getLogger("signals")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    logged = {"signal": 0, "main": 0}

    def on_alarm(signum, frame):
        logged["signal"] += 1
        log.info("from the signal handler %d", logged["signal"])

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        logged["main"] += 1
        log.info("from the main thread %d", logged["main"])
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"logged": logged, "stats": handler.stats()}), flush=True)
    """
)


@pytest.mark.slow
def test_a_signal_handler_logging_into_a_full_buffer_never_deadlocks() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLER, free_port_refusing(), "3", ROOT],
        check=False, capture_output=True, text=True, timeout=40,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    logged, stats = out["logged"], out["stats"]
    assert logged["signal"] > 100 and logged["main"] > 100
    total = logged["signal"] + logged["main"]
    assert sum(stats["dropped"].values()) == stats["dropped_total"]
    assert stats["sent"] + stats["dropped_total"] + stats["queue_depth"] == total, out


# -- 21.6: the spool after a disk error ------------------------------------------------------


class _FaultyOS:
    """``os`` as tblog._delivery.spool sees it, some calls failing (a full or read-only disk)."""

    def __init__(self, failing: dict[str, int]) -> None:
        self.failing = failing  # call name -> errno

    def __getattr__(self, name: str) -> Any:
        if name in self.failing:
            code = self.failing[name]

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise OSError(code, os.strerror(code))

            return fail
        return getattr(os, name)


def _spool_until(handler: Any, n: int) -> None:
    deadline = time.monotonic() + 10
    while handler.stats()["spooled"] < n and time.monotonic() < deadline:
        assert handler.flush(0.2) is False
    assert handler.stats()["spooled"] == n


def _ten_spooled_in_an_outage(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> Any:
    """A handler whose 10 records wait on disk (two segments), the endpoint still down."""
    events_api.fault = lambda req: Fault(status=503)
    handler = make_handler(
        spool_dir=str(tmp_path), batch_size=5, circuit_breaker_threshold=1,
        circuit_breaker_reset=3600, **FAST,
    )  # fmt: skip
    logger.addHandler(handler)
    for i in range(10):
        logger.info("spooled %d", i)
    _spool_until(handler, 10)
    return handler


def test_segments_written_before_the_disk_filled_up_are_still_replayed(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    handler = _ten_spooled_in_an_outage(events_api, make_handler, logger, tmp_path)
    monkeypatch.setattr(_spool, "os", _FaultyOS({"open": errno.ENOSPC}))  # no new segment
    for i in range(5):
        logger.info("in memory %d", i)
    assert handler.flush(0.5) is False  # the spool turned itself off; these wait in memory
    assert handler.stats()["spooled"] == 10
    events_api.fault = None
    assert handler.flush(10) is True  # what it spooled before is replayed all the same
    messages = sorted(r["message"] for r in events_api.rows())
    assert messages == sorted(
        [f"spooled {i}" for i in range(10)] + [f"in memory {i}" for i in range(5)]
    )
    assert _segments(tmp_path) == []


def test_a_delivered_segment_that_cannot_be_deleted_is_not_reported_as_flushed(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    spool = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 20)
    for s in range(2):
        assert spool.write(_lines([f"segment {s} line {i}" for i in range(3)]))[0]
    # the claim (a rename) goes through, then the disk turns read-only
    monkeypatch.setattr(
        _spool,
        "os",
        _FaultyOS({"unlink": errno.EROFS, "truncate": errno.EROFS, "open": errno.EROFS}),
    )
    handler = make_handler(spool_dir=str(tmp_path), warn_stderr=False)
    logger.addHandler(handler)
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    collector = Collect(level=logging.WARNING)
    _diag.logger.addHandler(collector)
    try:
        assert handler.flush(5) is False  # delivered, but still on disk: not settled
    finally:
        _diag.logger.removeHandler(collector)
    assert len(events_api.rows()) == 6
    stats = handler.stats()
    assert stats["sent"] == 6 and stats["spool_undeletable"] == 6
    warned = [m for m in messages if "could not delete" in m]
    assert len(warned) == 1  # the duplicate risk is said once


def test_a_read_only_spool_strands_its_segments_and_flush_none_returns(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    handler = _ten_spooled_in_an_outage(events_api, make_handler, logger, tmp_path)
    read_only = dict.fromkeys(("open", "rename", "replace", "unlink", "truncate"), errno.EROFS)
    monkeypatch.setattr(_spool, "os", _FaultyOS(read_only))
    events_api.fault = None
    logger.info("from memory")
    result: list[bool] = []
    flusher = threading.Thread(target=lambda: result.append(handler.flush(None)), daemon=True)
    flusher.start()
    flusher.join(15)
    assert result == [False]  # returned: the segments wait on disk for a later process
    assert [r["message"] for r in events_api.rows()] == ["from memory"]
    assert handler.stats()["spool_stranded"] == 10
    assert len(_segments(tmp_path)) == 2  # still there, whole
