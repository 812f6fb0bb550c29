"""The durable spool: outages, exit, kill -9, corrupt segments, full and unwritable disks."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tblog._delivery import spool as spool_module
from tblog._delivery.spool import Spool
from tblog._event.build import EventBuilder
from tblog._event.snapshot import snapshot
from tests.eventsapi import EventsAPI, Fault, Request, free_port_refusing

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


# -- 413 on replay, rescans ----------------------------------------------------------------


def _body_lines(req: Request) -> list[bytes]:
    body = req.body
    if req.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return [line for line in body.split(b"\n") if line.strip()]


def _messages(req: Request) -> list[str]:
    return [json.loads(line)["message"] for line in _body_lines(req)]


def _on_disk(spool_dir: Path) -> list[str]:
    """Every segment file, claimed or not (``corrupt/`` aside)."""
    return sorted(p.name for p in spool_dir.glob("*/*.ndjson*"))


def test_a_replayed_segment_answered_413_is_split_on_disk_and_both_halves_arrive(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    spool = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 20)
    big = [f"big {i}" for i in range(8)]
    first, _ = spool.write(_lines(big))
    second, _ = spool.write(_lines(["after 0", "after 1"]))
    assert first and second
    stem = first.removesuffix(".ndjson")
    listings: list[list[str]] = []

    def too_large(req: Request) -> Fault | None:
        listings.append(sorted(os.listdir(spool.dir)))
        if len(_body_lines(req)) > 2:
            return Fault(status=413, body={"error": "Request entity too large"})
        return None

    events_api.fault = too_large
    handler = make_handler(spool_dir=str(tmp_path))
    logger.addHandler(handler)
    assert handler.flush(10)
    # 8 -> 4 + 4 -> 2 + 2 + 2 + 2, each half in its place in line, then the next segment
    assert [(len(_body_lines(r)), r.status) for r in events_api.requests] == [
        (8, 413), (4, 413), (2, 202), (2, 202), (4, 413), (2, 202), (2, 202), (2, 202),
    ]  # fmt: skip
    rows = events_api.rows()
    assert [r["message"] for r in rows] == [*big, "after 0", "after 1"]  # in order
    assert len({r["event_id"] for r in rows}) == 10  # nothing twice
    # While the first half was out, the halves were segments on disk in the original's place.
    during = listings[1]
    assert any(n.startswith(f"{stem}-a.ndjson.claimed-") for n in during), during
    assert f"{stem}-b.ndjson" in during and second in during
    assert not any(n.startswith(first) for n in during)  # the original is gone
    assert any(n.startswith(f"{stem}-a-a.ndjson.claimed-") for n in listings[2])
    stats = handler.stats()
    assert stats["spool_replayed"] == 10 and stats["dropped_total"] == 0
    assert stats["spool_segments"] == 0 and stats["spool_bytes"] == 0
    assert _on_disk(tmp_path) == []


def test_a_segment_this_process_spooled_is_split_and_flush_waits_for_both_halves(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    handler = make_handler(spool_dir=str(tmp_path), batch_size=6, **FAST)
    logger.addHandler(handler)
    events_api.fault = lambda req: Fault(status=503)
    messages = [f"spooled here {i}" for i in range(6)]
    for m in messages:
        logger.info(m)
    deadline = time.monotonic() + 10
    while handler.stats()["spooled"] < 6 and time.monotonic() < deadline:
        assert handler.flush(0.2) is False
    assert handler.stats()["spooled"] == 6
    assert len(_on_disk(tmp_path)) == 1  # one batch, one segment
    events_api.fault = lambda req: (
        Fault(status=413, body={"error": "too large"}) if len(_body_lines(req)) > 3 else None
    )
    assert handler.flush(10)  # the halves are still this process's to deliver
    assert [r["message"] for r in events_api.rows()] == messages
    assert [(len(_body_lines(r)), r.status) for r in events_api.requests if r.status != 503] == [
        (6, 413), (3, 202), (3, 202),
    ]  # fmt: skip
    stats = handler.stats()
    assert stats["spool_replayed"] == 6 and stats["dropped_total"] == 0
    assert stats["queue_depth"] == 0 and _on_disk(tmp_path) == []


def test_a_single_event_segment_answered_413_is_dropped_and_counted(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    spool = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 20)
    for batch in (["fine before"], ["too big"], ["fine after"]):
        assert spool.write(_lines(batch))[0]
    events_api.fault = lambda req: (
        Fault(status=413, body={"error": "too large"}) if "too big" in _messages(req) else None
    )
    handler = make_handler(spool_dir=str(tmp_path))
    logger.addHandler(handler)
    handler.flush(10)  # (False when the drop happened during it)
    assert [r.status for r in events_api.requests] == [202, 413, 202]  # never sent again
    assert [r["message"] for r in events_api.rows()] == ["fine before", "fine after"]
    stats = handler.stats()
    assert stats["dropped"] == {"too_large": 1} and stats["spool_replayed"] == 2
    assert stats["spool_segments"] == 0 and _on_disk(tmp_path) == []


class _Clock:
    """The spool's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    return child.pid


def test_the_spool_rescans_its_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock = _Clock()
    fake_time = SimpleNamespace(monotonic=clock.monotonic, time_ns=time.time_ns, time=time.time)
    monkeypatch.setattr(spool_module, "time", fake_time)
    url = "http://127.0.0.1:9"
    mine = Spool(str(tmp_path), url, "tb_logs", 1 << 20)
    other = Spool(str(tmp_path), url, "tb_logs", 1 << 20)  # another process's view of it
    assert mine.may_have_segments() is False and mine.scans == 1

    written = _lines(["written later"])
    late, _ = other.write(written)
    assert late
    assert mine.may_have_segments() is False  # the listing is cached between rescans...
    clock.now += spool_module._RESCAN - 0.01
    assert mine.may_have_segments() is False and mine.scans == 1
    clock.now += 0.02  # ...until the rescan is due
    assert mine.may_have_segments() is True and mine.scans == 2
    segment, corrupt = mine.claim()
    assert segment is not None and corrupt == []
    assert segment.name == late and segment.lines == written
    assert mine.done(segment) is None

    sooner, _ = other.write(_lines(["rescan soon"]))
    assert mine.may_have_segments() is False  # not due yet
    mine.rescan_soon()  # what flush() asks for
    assert mine.may_have_segments() is True and mine.scans == 3
    segment, _ = mine.claim()
    assert segment is not None and segment.name == sooner
    mine.release(segment)  # delivery failed: it waits again

    # A claim whose process died is released at the next rescan and replayed.
    orphan, _ = other.write(_lines(["orphaned claim"]))
    assert orphan
    os.rename(
        os.path.join(other.dir, orphan),
        os.path.join(other.dir, f"{orphan}.claimed-{_dead_pid()}-1"),
    )
    assert _drain(mine) == [sooner]  # the orphan is not seen before the rescan
    clock.now += spool_module._RESCAN
    assert mine.may_have_segments() is True
    assert _drain(mine) == [orphan]
    assert _on_disk(tmp_path) == []


def _drain(spool: Spool) -> list[str]:
    """Claim and delete every segment the spool knows of now: their names."""
    names = []
    while True:
        segment, _ = spool.claim()
        if segment is None:
            return names
        names.append(segment.name)
        assert spool.done(segment) is None


def test_vanished_segments_are_those_gone_from_the_folder(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"
    mine = Spool(str(tmp_path), url, "tb_logs", 1 << 20)
    other = Spool(str(tmp_path), url, "tb_logs", 1 << 20)
    a, _ = mine.write(_lines(["a"]))
    b, _ = mine.write(_lines(["b"]))
    assert a and b
    assert mine.vanished([a, b]) == []  # on disk
    other.rescan_soon()
    assert other.may_have_segments()
    taken, _ = other.claim()
    assert taken is not None and taken.name == a
    assert mine.vanished([a, b]) == []  # claimed elsewhere is not gone: it may come back
    assert other.done(taken) is None  # delivered elsewhere
    assert mine.vanished([a, b]) == [a]
    mine.rescan_soon()
    assert mine.may_have_segments()  # b
    assert mine.vanished([a, b]) == [a]


ORPHANER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[3])
    from tblog._delivery.spool import Spool, _claimer
    spool = Spool(sys.argv[1], sys.argv[2], "tb_logs", 1 << 20)
    kept, orphaned = (
        [line.encode() for line in batch] for batch in json.loads(sys.stdin.read())
    )
    first, _ = spool.write(kept)
    second, _ = spool.write(orphaned)
    path = os.path.join(spool.dir, second)
    os.rename(path, path + ".claimed-" + _claimer())  # and dies holding the claim
    print(first, second)
    """
)


def test_segments_another_process_wrote_later_are_picked_up(
    events_api: EventsAPI,
    make_handler: Any,
    logger: logging.Logger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spool_module, "_RESCAN", 0.0)  # look at every pass (no waiting here)
    handler = make_handler(spool_dir=str(tmp_path), flush_interval=3600.0)
    logger.addHandler(handler)
    logger.info("first")
    assert handler.flush(5)
    batches = [[line.decode() for line in _lines(b)] for b in (["other 0", "other 1"], ["orphan"])]
    child = subprocess.run(
        [sys.executable, "-c", ORPHANER, str(tmp_path), events_api.url, ROOT],
        input=json.dumps(batches), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    first, second = child.stdout.split()
    assert first < second  # written in that order
    logger.info("second")
    assert handler.flush(5)
    logger.info("third")  # its pass replays whatever of the spool is still waiting first
    assert handler.flush(5)
    rows = [r["message"] for r in events_api.rows()]
    assert rows[:3] == ["first", "other 0", "other 1"]  # older than "second": sent before it
    assert sorted(rows[3:5]) == ["orphan", "second"] and rows[5:] == ["third"]
    stats = handler.stats()
    assert stats["spool_replayed"] == 3 and stats["dropped_total"] == 0
    assert _on_disk(tmp_path) == []


def test_segments_another_process_replayed_are_forgotten_and_counted(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Path
) -> None:
    # Spooled here during an outage; then another process sharing the folder delivers them.
    handler = make_handler(
        spool_dir=str(tmp_path), batch_size=5, circuit_breaker_threshold=1,
        circuit_breaker_reset=3600, **FAST,
    )  # fmt: skip
    logger.addHandler(handler)
    events_api.fault = lambda req: Fault(status=503)
    for i in range(10):
        logger.info("spooled here %d", i)
    deadline = time.monotonic() + 10
    while handler.stats()["spooled"] < 10 and time.monotonic() < deadline:
        assert handler.flush(0.2) is False
    assert handler.stats()["spooled"] == 10
    # No flush now: the circuit stays open, this process sends and claims nothing more.
    other = Spool(str(tmp_path), events_api.url, "tb_logs", 1 << 20)
    delivered: list[str] = []
    deadline = time.monotonic() + 10
    while _on_disk(tmp_path) and time.monotonic() < deadline:
        other.rescan_soon()
        other.may_have_segments()
        for segment in iter(lambda: other.claim()[0], None):
            delivered += [json.loads(line)["message"] for line in segment.lines]
            assert other.done(segment) is None
    assert sorted(delivered) == sorted(f"spooled here {i}" for i in range(10))

    events_api.fault = None
    assert handler.flush(5)  # nothing of its own left to wait for
    stats = handler.stats()
    assert stats["spool_replayed_elsewhere"] == 10
    assert stats["spool_replayed"] == 0 and stats["dropped_total"] == 0
    assert stats["queue_depth"] == 0
    assert events_api.rows() == []  # not sent a second time from here
