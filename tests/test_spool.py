"""The durable spool: outages, exit, kill -9, corrupt segments, full and unwritable disks."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tblog._delivery.spool import Spool
from tblog._event.build import EventBuilder
from tblog._event.snapshot import snapshot
from tests.eventsapi import EventsAPI, Fault, free_port_refusing

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}
ROOT = str(Path(__file__).resolve().parent.parent)


def _segments(spool_dir: Path) -> list[Path]:
    return sorted(p for p in spool_dir.glob("*/*.ndjson"))


def _spooled_text(spool_dir: Path) -> str:
    """Every spooled line, including segments the sender has claimed for a replay attempt."""
    for _ in range(1000):
        try:
            return "".join(p.read_text() for p in sorted(spool_dir.glob("*/*.ndjson*")))
        except FileNotFoundError:
            continue  # claimed or released between the listing and the read: look again
    raise AssertionError("the spool kept changing under the reader")


def _lines(messages: list[str]) -> list[bytes]:
    """tb_logs events for ``messages``, as the handler encodes them."""
    builder = EventBuilder(
        app_name="spooled", environment="", schema="tblog", static_fields={},
        max_event_bytes=1 << 20,
    )  # fmt: skip
    out = []
    for m in messages:
        record = logging.makeLogRecord(
            {"msg": m, "name": "spool", "levelno": 20, "levelname": "INFO"}
        )
        line = builder.encode(snapshot(record, 0, None)[0])
        assert line is not None
        out.append(line)
    return out


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_an_outage_goes_to_disk_and_comes_back_in_order(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    handler = make_handler(spool_dir=str(tmp_path), batch_size=5, **FAST)
    logger.addHandler(handler)
    events_api.fault = lambda req: Fault(status=503)
    messages = [f"during the outage {i:02d}" for i in range(20)]
    for m in messages:
        logger.info(m)
    deadline = time.monotonic() + 10
    while handler.stats()["spooled"] < 20 and time.monotonic() < deadline:
        assert handler.flush(0.2) is False  # spooled is not delivered
    stats = handler.stats()
    assert stats["spooled"] == 20 and stats["dropped_total"] == 0
    assert stats["spool_segments"] >= 1
    # The sender keeps probing the endpoint, so a segment may be claimed right now.
    on_disk = _spooled_text(tmp_path)
    assert on_disk.count("\n") == 20  # every event is on disk, once
    assert "during the outage 00" in on_disk  # plain NDJSON an operator can read
    assert events_api.token not in on_disk

    events_api.fault = None  # the endpoint is back
    assert handler.flush(10)
    assert [r["message"] for r in events_api.rows()] == messages  # in order, once each
    assert len({r["event_id"] for r in events_api.rows()}) == 20
    stats = handler.stats()
    assert stats["spool_replayed"] == 20 and stats["spool_segments"] == 0
    assert _segments(tmp_path) == []


CHILD = textwrap.dedent(
    """
    import logging, sys, time
    sys.path.insert(0, sys.argv[4])
    import tblog
    url, spool_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    handler = tblog.TinybirdLoggingHandler(
        url, "p.test-token-0123456789abcdef", "crash", spool_dir=spool_dir,
        shutdown_timeout=0.5, retry_base_delay=0.01, retry_max_delay=0.05, batch_size=10,
    )
    log = logging.getLogger("crash")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(n):
        log.info("record %d", i)
    if sys.argv[5] == "kill":
        deadline = time.monotonic() + 20
        while handler.stats()["spooled"] < n and time.monotonic() < deadline:
            handler.flush(0.2)
        print(handler.stats()["spooled"], flush=True)
        time.sleep(60)  # the parent kills us with SIGKILL
    """
)


def _child(url: str, spool_dir: Path, n: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(spool_dir), str(n), ROOT, mode],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_process_killed_with_sigkill_loses_nothing_it_spooled(
    make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    url = free_port_refusing()  # down now; a server will listen here later
    child = _child(url, tmp_path, 50, "kill")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "50"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    # on disk, whole; one may be claimed by the killed process's last replay attempt
    assert _spooled_text(tmp_path).count("\n") == 50

    api = EventsAPI(port=_port(url))
    try:
        handler = make_handler(api_url=url, token=api.token, spool_dir=str(tmp_path))
        logger.addHandler(handler)
        assert handler.flush(10)
        rows = api.rows()
        assert sorted(r["message"] for r in rows) == sorted(f"record {i}" for i in range(50))
        assert len({r["event_id"] for r in rows}) == 50
        assert handler.stats()["spool_replayed"] == 50
    finally:
        api.close()


def test_what_exit_cannot_deliver_is_spooled_and_the_next_process_sends_it(
    make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    url = free_port_refusing()
    child = _child(url, tmp_path, 30, "exit")
    child.wait(30)
    assert child.returncode == 0
    assert sum(p.read_text().count("\n") for p in _segments(tmp_path)) == 30
    api = EventsAPI(port=_port(url))
    try:
        handler = make_handler(api_url=url, token=api.token, spool_dir=str(tmp_path))
        logger.addHandler(handler)
        assert handler.flush(10)
        assert len(api.rows()) == 30
    finally:
        api.close()


def test_a_torn_or_corrupt_segment_is_skipped_and_counted(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    spool = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 20)
    good_before, _ = spool.write(_lines(["before"]))
    torn, _ = spool.write(_lines(["torn a", "torn b"]))
    good_after, _ = spool.write(_lines(["after"]))
    assert good_before and torn and good_after
    torn_path = Path(spool.dir) / torn
    torn_path.write_bytes(torn_path.read_bytes()[:-40])  # power loss mid-write

    handler = make_handler(spool_dir=str(tmp_path))
    logger.addHandler(handler)
    handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["before", "after"]
    stats = handler.stats()
    assert stats["dropped"] == {"spool_corrupt": 2} and stats["spool_replayed"] == 2
    assert [p.name for p in (Path(spool.dir) / "corrupt").iterdir()] == [torn]


def test_the_spool_is_bounded_by_max_spool_bytes(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    handler = make_handler(
        spool_dir=str(tmp_path), max_spool_bytes=4000, batch_size=2,
        circuit_breaker_threshold=1000, **FAST,
    )  # fmt: skip
    logger.addHandler(handler)
    events_api.fault = lambda req: Fault(status=503)
    for i in range(40):
        logger.info("record %d", i)
    deadline = time.monotonic() + 10
    while handler.stats()["spooled"] < 40 and time.monotonic() < deadline:
        handler.flush(0.2)
    stats = handler.stats()
    on_disk = sum(p.stat().st_size for p in _segments(tmp_path))
    assert on_disk <= 4000 and stats["spool_bytes"] <= 4000
    assert stats["dropped"]["spool_full"] > 0
    events_api.fault = None
    assert handler.flush(10)  # what the spool kept is delivered...
    arrived = len(events_api.rows())
    assert arrived + handler.stats()["dropped"]["spool_full"] == 40  # ...every loss counted


def test_an_unwritable_spool_dir_degrades_to_memory(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    handler = make_handler(spool_dir=str(blocker / "spool"), **FAST)
    logger.addHandler(handler)
    events_api.fail_next(2, status=503)
    logger.info("still delivered")
    assert handler.flush(10)
    assert [r["message"] for r in events_api.rows()] == ["still delivered"]
    assert handler.stats()["spooled"] == 0


SHARER = textwrap.dedent(
    """
    import logging, sys
    sys.path.insert(0, sys.argv[3])
    import tblog
    handler = tblog.TinybirdLoggingHandler(
        sys.argv[1], "p.test-token-0123456789abcdef", "sharer", spool_dir=sys.argv[2]
    )
    sys.exit(0 if handler.flush(20) else 1)
    """
)


def test_processes_sharing_a_spool_dir_never_send_a_segment_twice(
    events_api: EventsAPI, tmp_path: Path
) -> None:
    spool = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 30)
    expected = []
    for s in range(40):
        batch = [f"segment {s} line {i}" for i in range(5)]
        expected += batch
        assert spool.write(_lines(batch))[0]
    events_api.fault = lambda req: Fault(status=202, delay=0.01, accept=True)  # interleave them
    procs = [
        subprocess.Popen([sys.executable, "-c", SHARER, events_api.url, str(tmp_path), ROOT])
        for _ in range(3)
    ]
    for p in procs:
        p.wait(60)
    rows = events_api.rows()
    assert sorted(r["message"] for r in rows) == sorted(expected)
    assert len({r["event_id"] for r in rows}) == len(expected) == 200
    assert _segments(tmp_path) == []
