"""tblog.query against a real ``tblog local`` (chDB): filters, hostile input, stats, tail."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from tblog._sql import number, resolve_read_token, string, to_us
from tblog.local.server import LocalServer
from tblog.query import QueryClient, QueryFailedError, parse_interval
from tests.localserver import event, ndjson, post, serve

# In the future: tb_logs has a 90-day TTL.  Europe's DST starts at 01:00 UTC that day.
T0 = datetime(2030, 3, 31, 0, 30, tzinfo=timezone.utc)

HOSTILE = [
    "it's",
    "back\\slash",
    "\\'",
    "'; SELECT 1 --",
    "' OR 1=1 OR '",
    "/* comment */ x",
    "-- x",
    "UNION SELECT * FROM system.tables",
    "ünïcødé 日本語 🚀",
    "tab\there\nnewline\rcr\x00nul\x1besc \u0435",
    "\\\\'\\",
    "%_*?",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("query"))


def _eid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Iterator[QueryClient]:
    rows = []
    for i, text in enumerate(HOSTILE):
        rows.append(
            event(
                timestamp=(T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
                message=f"hostile {text} end",
                logger=text,
                app_name="hostile",
                event_id=_eid(i),
                trace_id=f"tr-{i % 3}",
            )
        )
    levels = [("INFO", 20)] * 6 + [("ERROR", 40)] * 3 + [("WARNING", 30)]
    for i, (level, no) in enumerate(levels):
        rows.append(
            event(
                timestamp=(T0 + timedelta(hours=1, minutes=20 * i))
                .isoformat()
                .replace("+00:00", "Z"),
                level=level,
                level_no=no,
                app_name="stats",
                logger=f"lg{i % 2}",
                message=f"stat {i}",
                event_id=_eid(100 + i),
            )
        )
    response = post(server, ndjson(*rows))
    assert response.status_code == 200, response.text
    assert response.json()["quarantined_rows"] == 0, response.text
    assert response.json()["successful_rows"] == len(rows), response.text
    with QueryClient(server.admin_token, server.url) as c:
        yield c


def test_literal_escaping_round_trips_hostile_text(client: QueryClient) -> None:
    for text in HOSTILE:
        got = client.sql(f"SELECT {string(text)} AS s")
        assert got[0]["s"] == text


def test_literal_rejects_what_is_not_text() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        string("\ud800")
    with pytest.raises(TypeError):
        string(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        number(float("nan"))
    with pytest.raises(TypeError):
        number(True)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_filters_match_exactly_their_rows(client: QueryClient, text: str) -> None:
    by_logger = client.query(logger=text)
    assert by_logger.total == 1
    assert by_logger.logs[0].logger == text
    found = client.query(app="hostile", q=text)
    assert text in found.logs[0].message
    assert all(text.lower() in log.message.lower() for log in found.logs)
    assert client.query(app=text).total == 0


def test_query_filters_order_and_paging(client: QueryClient) -> None:
    everything = client.query(app="stats", limit=1000)
    assert everything.total == 10
    stamps = [log.timestamp for log in everything.logs]
    assert stamps == sorted(stamps, reverse=True)
    page = client.query(app="stats", limit=3, offset=3)
    assert page.total == 10
    assert [log.event_id for log in page.logs] == [log.event_id for log in everything.logs[3:6]]
    errors = client.query(app="stats", level="error")
    assert errors.total == 3
    assert {log.level for log in errors.logs} == {"ERROR"}
    window = client.query(
        app="stats", from_time=T0 + timedelta(hours=1), to_time=T0 + timedelta(hours=2)
    )
    assert window.total == 3  # [from, to): 01:30, 01:50, 02:10 UTC
    berlin = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(hours=1)
    assert client.query(app="stats", from_time=berlin, limit=0).total == 10
    assert client.query(app="stats", from_time=T0 + timedelta(days=9)).total == 0
    with pytest.raises(ValueError):
        client.query(limit=-1)


def test_get_by_trace_id(client: QueryClient) -> None:
    logs = client.get_by_trace_id("tr-1")
    assert [log.event_id for log in logs] == [_eid(i) for i in range(len(HOSTILE)) if i % 3 == 1]
    assert client.get_by_trace_id("' OR '1'='1") == []


def test_long_query_goes_by_post(client: QueryClient) -> None:
    # Over http.server's 64 KiB request-line limit: a GET of this would be refused (414).
    long_text = "x" * 70_000
    assert client.query(q=long_text).total == 0
    got = client.sql(f"SELECT length({string(long_text)}) AS n")
    assert int(got[0]["n"]) == 70_000


def test_aggregated_stats_match_a_count_done_here(client: QueryClient) -> None:
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=5)
    stats = client.get_aggregated_stats(start, end, interval="1h", app="stats")
    expected: dict[datetime, dict[str, int]] = {}
    levels = ["INFO"] * 6 + ["ERROR"] * 3 + ["WARNING"]
    for i, level in enumerate(levels):
        ts = T0 + timedelta(hours=1, minutes=20 * i)
        if start <= ts < end:
            bucket = ts.replace(minute=0)
            expected.setdefault(bucket, {}).setdefault(level, 0)
            expected[bucket][level] += 1
    assert {row["bucket"]: row["by_level"] for row in stats.timeseries} == expected
    assert stats.total == sum(sum(v.values()) for v in expected.values())
    assert stats.errors == 3
    assert stats.error_rate == pytest.approx(3 / stats.total)
    assert stats.top_loggers == [("lg0", 5), ("lg1", 5)]
    empty = client.get_aggregated_stats(T0 - timedelta(days=2), T0 - timedelta(days=1))
    assert (empty.total, empty.timeseries, empty.error_rate) == (0, [], 0.0)


def test_parse_interval() -> None:
    assert parse_interval("1h") == 3600 * 10**6
    assert parse_interval("15min") == 900 * 10**6
    for bad in ("", "0h", "1w", "1h; DROP"):
        with pytest.raises(ValueError):
            parse_interval(bad)


def test_tail_returns_each_new_row_once_in_order(server: LocalServer, client: QueryClient) -> None:
    base = datetime(2027, 1, 1, tzinfo=timezone.utc)
    tail = client.tail({"app": "tail"}, since=base, batch_size=2, lookback=60)
    assert tail.poll() == []

    def send(*offsets: tuple[int, int]) -> None:
        rows = [
            event(
                timestamp=(base + timedelta(seconds=s)).isoformat().replace("+00:00", "Z"),
                app_name="tail",
                event_id=_eid(1000 + n),
            )
            for s, n in offsets
        ]
        assert post(server, ndjson(*rows)).status_code == 200

    send((1, 1), (1, 2), (1, 3), (2, 4), (3, 5))  # same timestamp across a page boundary
    first = tail.poll()
    assert [e.event_id for e in first] == [_eid(1000 + n) for n in (1, 2, 3, 4, 5)]
    assert tail.poll() == []
    send((2, 6), (4, 7))  # one late (behind the cursor), one new
    assert sorted(e.event_id for e in tail.poll()) == [_eid(1006), _eid(1007)]
    assert tail.poll() == []
    strict = client.tail({"app": "tail"}, since=base + timedelta(seconds=3))
    assert [e.event_id for e in strict.poll()] == [_eid(1005), _eid(1007)]


def test_tail_iterator_and_stream_stop_cleanly(server: LocalServer, client: QueryClient) -> None:
    base = datetime(2028, 1, 1, tzinfo=timezone.utc)
    rows = [
        event(
            timestamp=(base + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            app_name="iter",
            event_id=_eid(2000 + i),
        )
        for i in range(3)
    ]
    assert post(server, ndjson(*rows)).status_code == 200
    tail = client.tail({"app": "iter"}, since=base, poll_interval=0.01)
    got = []
    for entry in tail:
        got.append(entry.event_id)
        if len(got) == 3:
            tail.stop()
    assert got == [_eid(2000 + i) for i in range(3)]

    seen: list[str] = []
    done = threading.Event()

    def on_log(entry: object) -> None:
        seen.append(entry.event_id)  # type: ignore[attr-defined]
        if len(seen) == 3:
            done.set()

    stream = client.stream(on_log, filters={"app": "iter"}, since=base, poll_interval=0.01)
    assert done.wait(30)
    stream.stop()
    assert stream.thread is not None and not stream.thread.is_alive()
    assert seen == got


def test_stream_reports_errors_and_bad_credentials(server: LocalServer) -> None:
    bad = QueryClient("not-a-token", server.url)
    with pytest.raises(QueryFailedError) as info:
        bad.query()
    assert info.value.status in (401, 403)
    assert "not-a-token" not in str(info.value)
    assert "not-a-token" not in repr(bad)
    errors: list[Exception] = []
    failed = threading.Event()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        failed.set()

    stream = bad.stream(lambda e: None, on_error=on_error, poll_interval=0.01)
    assert failed.wait(30)
    stream.stop()
    assert stream.thread is not None and not stream.thread.is_alive()
    assert isinstance(errors[0], QueryFailedError)
    assert "not-a-token" not in str(errors[0])


def test_read_token_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TB_READ_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN", "TB_WRITE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="TB_READ_TOKEN"):
        resolve_read_token(None)
    monkeypatch.setenv("TB_TOKEN", "general")
    assert resolve_read_token(None) == "general"
    monkeypatch.setenv("TB_READ_TOKEN", "reader")
    assert resolve_read_token(None) == "reader"
    assert resolve_read_token("given") == "given"


def test_to_us_handles_zones_and_naive_times() -> None:
    aware = datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)
    assert to_us(aware) == to_us(aware.replace(tzinfo=None)) == to_us(aware.timestamp())
    assert to_us(aware.astimezone(timezone(timedelta(hours=-7)))) == to_us(aware)


def test_ds_name_is_checked(server: LocalServer) -> None:
    with pytest.raises(ValueError):
        QueryClient(server.admin_token, server.url, ds_name="tb_logs; DROP")
