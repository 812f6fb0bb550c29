"""tblog.series against a real ``tblog local`` (chDB): writes, increments, rollups, deletes."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tblog.local.server import LocalServer
from tblog.series import Client, DataPoint, DeleteSummary, choose_interval, parse_rollup
from tests.localserver import serve

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Iterator[Client]:
    c = Client(server.admin_token, server.url)
    yield c
    c.close()


def test_datasources_load(server: LocalServer) -> None:
    assert server.load_errors == []
    assert {"tblog_series", "tblog_series_points"} <= set(server.store.datasources)


def test_choose_interval_and_parse_rollup() -> None:
    assert choose_interval(T0, T0 + timedelta(days=2)) == "raw"
    assert choose_interval(T0, T0 + timedelta(days=2, seconds=1)) == "1hour"
    assert choose_interval(T0, T0 + timedelta(days=30)) == "1hour"
    assert choose_interval(T0, T0 + timedelta(days=31)) == "1day"
    assert parse_rollup("5min") == (5, "MINUTE")
    assert parse_rollup("1month") == (1, "MONTH")
    for bad in ("", "0day", "1week", "1day; DROP TABLE x"):
        with pytest.raises(ValueError):
            parse_rollup(bad)


def test_series_metadata_create_get_update_delete(client: Client) -> None:
    a = client.create_series("meta-a")
    b = client.create_series()
    assert b.key == b.id
    with pytest.raises(ValueError, match="exists"):
        client.create_series("meta-a")
    a.name, a.tags, a.attributes = "A", ["t1", "t2"], {"host": "h1"}
    client.update_series(a)
    b.tags, b.attributes = ["t1"], {"host": "h2"}
    client.update_series(b)
    assert client.get_series(keys=["meta-a"]) == [a]
    assert {s.id for s in client.get_series(tags=["t1"])} >= {a.id, b.id}
    assert client.get_series(tags=["t1", "t2"]) == [a]
    assert client.get_series(attributes={"host": "h2"}) == [b]
    assert client.get_series(keys=["' OR 1=1 --"]) == []
    with pytest.raises(ValueError, match="allow_truncation"):
        client.delete_series()
    with pytest.raises(ValueError):
        client.delete_series(keys=["meta-a"], allow_truncation=True)
    assert client.delete_series(attributes={"host": "h2"}) == DeleteSummary(1)
    assert client.get_series(ids=[b.id]) == []
    assert client.get_series(ids=[a.id]) == [a]


def test_writes_replace_and_raw_read_with_summary(client: Client) -> None:
    values = [3.0, -1.5, 7.25, 0.0, 10.0]
    client.write_key("raw", [DataPoint(T0 + timedelta(minutes=i), v) for i, v in enumerate(values)])
    client.write_key("raw", [DataPoint(T0 + timedelta(minutes=1), 2.5)])  # replaces -1.5
    values[1] = 2.5
    ds = client.read_key("raw", T0, T0 + timedelta(hours=1))
    assert [p.value for p in ds.data] == values
    assert [p.ts for p in ds.data] == [T0 + timedelta(minutes=i) for i in range(5)]
    assert ds.summary == pytest.approx({
        "sum": sum(values), "mean": statistics.fmean(values), "min": min(values),
        "max": max(values), "count": 5, "stddev": statistics.pstdev(values),
    })  # fmt: skip
    with pytest.raises(ValueError):
        client.write_key("raw", [DataPoint(T0, float("nan"))])
    with pytest.raises(LookupError):
        client.read_key("never-written", T0, T0 + timedelta(hours=1))


def test_rollups_match_values_computed_here(client: Client) -> None:
    points = [DataPoint(T0 + timedelta(minutes=7 * i), float((i * 37) % 11 - 3)) for i in range(60)]
    client.write_key("rollup", points)
    end = T0 + timedelta(hours=7)
    funcs = {
        "sum": sum, "max": max, "min": min, "mean": statistics.fmean, "avg": statistics.fmean,
        "count": len, "stddev": statistics.pstdev,
    }  # fmt: skip
    for interval, width in (("5min", timedelta(minutes=5)), ("1hour", timedelta(hours=1))):
        for name, fold in funcs.items():
            buckets: dict[datetime, list[float]] = {}
            for p in points:
                start = T0 + ((p.ts - T0) // width) * width
                buckets.setdefault(start, []).append(p.value)
            ds = client.read_key("rollup", T0, end, interval=interval, function=name)
            expected = [(k, float(fold(v))) for k, v in sorted(buckets.items())]
            got = [(p.ts, p.value) for p in ds.data]
            assert [k for k, _ in got] == [k for k, _ in expected], (interval, name)
            assert [v for _, v in got] == pytest.approx([v for _, v in expected]), (interval, name)
    day = client.read_key("rollup", T0, end, interval="1day", function="sum")
    assert [(p.ts, p.value) for p in day.data] == [
        (T0, pytest.approx(sum(p.value for p in points)))
    ]
    month = client.read_key("rollup", T0, end, interval="1month", function="count")
    assert [p.value for p in month.data] == [60.0]


def test_automatic_rollup_is_hourly_mean_over_a_week(client: Client) -> None:
    points = [DataPoint(T0 + timedelta(days=3, minutes=20 * i), float(i)) for i in range(6)]
    client.write_key("auto", points)
    ds = client.read_key("auto", T0, T0 + timedelta(days=7))
    assert [(p.ts, p.value) for p in ds.data] == [
        (T0 + timedelta(days=3), 1.0),
        (T0 + timedelta(days=3, hours=1), 4.0),
    ]
    raw = client.read_key("auto", T0 + timedelta(days=3), T0 + timedelta(days=4))
    assert len(raw.data) == 6


def test_daily_rollup_in_a_time_zone_across_dst(client: Client) -> None:
    madrid = ZoneInfo("Europe/Madrid")
    # 2026-03-29: clocks go 02:00 -> 03:00 in Madrid, so that local day has 23 hours.
    start = datetime(2026, 3, 28, tzinfo=madrid)
    hours = [start.astimezone(UTC) + timedelta(hours=h) for h in range(24 * 3)]
    client.write_key("dst", [DataPoint(t, 1.0) for t in hours])
    ds = client.read_key(
        "dst", hours[0], hours[-1] + timedelta(hours=1), "1day", "count", tz="Europe/Madrid"
    )
    expected: dict[datetime, int] = {}
    for t in hours:
        local = t.astimezone(madrid)
        day = datetime(local.year, local.month, local.day, tzinfo=madrid)
        expected[day] = expected.get(day, 0) + 1
    assert [(p.ts, p.value) for p in ds.data] == [(k, float(v)) for k, v in expected.items()]
    assert [p.value for p in ds.data][:2] == [24.0, 23.0]
    assert all(p.ts.utcoffset() == p.ts.astimezone(madrid).utcoffset() for p in ds.data)
    hourly_utc = client.read_key("dst", hours[0], hours[0] + timedelta(hours=3), "1hour", "sum")
    assert [p.ts for p in hourly_utc.data] == hours[:3]
    with pytest.raises(ValueError, match="time zone"):
        client.read_key("dst", hours[0], hours[1], tz="Mars/Olympus")


def test_empty_ranges(client: Client) -> None:
    client.write_key("empty", [DataPoint(T0, 1.0)])
    ds = client.read_key("empty", T0 + timedelta(days=1), T0 + timedelta(days=2), "1hour", "sum")
    assert ds.data == []
    assert ds.summary["count"] == 0
    assert client.read_key("empty", T0, T0).data == []
    assert client.read(T0, T0 + timedelta(hours=1), keys=["nope"]) == []


def test_concurrent_increments_are_all_counted(client: Client, server: LocalServer) -> None:
    client.write_key("counter", [DataPoint(T0, 100.0)])
    workers = [Client(server.admin_token, server.url) for _ in range(4)]
    barrier = threading.Barrier(len(workers))

    def bump(c: Client) -> None:
        barrier.wait()
        for _ in range(5):
            c.increment_key(
                "counter", [DataPoint(T0, 1.0), DataPoint(T0 + timedelta(minutes=1), 2.0)]
            )

    threads = [threading.Thread(target=bump, args=(c,)) for c in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ds = client.read_key("counter", T0, T0 + timedelta(hours=1), "raw")
    assert [p.value for p in ds.data] == [120.0, 40.0]
    client.write_key("counter", [DataPoint(T0, 1.0)])  # a write resets, later increments add
    client.increment_key("counter", [DataPoint(T0, 0.5)])
    assert client.read_key("counter", T0, T0 + timedelta(minutes=1), "raw").data[0].value == 1.5
    assert len(client.get_series(keys=["counter"])) == 1


def test_multi_status_rejects_bad_items_and_writes_the_rest(client: Client) -> None:
    target = client.create_series("multi-id")
    statuses = client.write_multi([
        {"t": T0, "id": target.id, "v": 1.0},
        {"t": T0, "v": 2.0},
        {"t": T0, "key": "multi-key", "v": "x"},
        {"t": T0 + timedelta(minutes=1), "key": "multi-key", "v": 4},
        {"t": "yesterday", "key": "multi-key", "v": 5},
        {"t": T0},
    ])  # fmt: skip
    assert statuses == [
        {"status": "200", "messages": []},
        {"status": "422", "messages": ["Must provide a series ID or key"]},
        {"status": "422", "messages": ["Must provide a numeric value"]},
        {"status": "200", "messages": []},
        {"status": "422", "messages": ["Must provide a timestamp"]},
        {"status": "422", "messages": ["Must provide a numeric value",
                                       "Must provide a series ID or key"]},
    ]  # fmt: skip
    assert [p.value for p in client.read_id(target.id, T0, T0 + timedelta(hours=1)).data] == [1.0]
    got = client.read_key("multi-key", T0, T0 + timedelta(hours=1)).data
    assert [(p.ts, p.value) for p in got] == [(T0 + timedelta(minutes=1), 4.0)]
    client.write_bulk(T0, [{"key": "multi-key", "v": 9}, {"id": target.id, "v": 8}])
    client.increment_bulk(T0, [{"key": "multi-key", "v": 1}])
    client.increment_multi([{"t": T0, "id": target.id, "v": 2}])
    sets = client.read(T0, T0 + timedelta(minutes=1), keys=["multi-key", "multi-id"])
    assert {ds.series.key: [p.value for p in ds.data] for ds in sets} == {
        "multi-key": [10.0], "multi-id": [10.0]
    }  # fmt: skip


def test_delete_range_is_half_open_and_writes_after_it_count(client: Client) -> None:
    client.write_key("del", [DataPoint(T0 + timedelta(minutes=i), float(i)) for i in range(6)])
    summary = client.delete_key("del", T0 + timedelta(minutes=1), T0 + timedelta(minutes=4))
    assert summary == DeleteSummary(3)
    left = client.read_key("del", T0, T0 + timedelta(hours=1)).data
    assert [p.value for p in left] == [0.0, 4.0, 5.0]
    client.increment_key("del", [DataPoint(T0 + timedelta(minutes=2), 7.0)])
    left = client.read_key("del", T0, T0 + timedelta(hours=1)).data
    assert [p.value for p in left] == [0.0, 7.0, 4.0, 5.0]
    assert client.delete_key("no-such-key", T0, T0 + timedelta(hours=1)) == DeleteSummary(0)


def test_deleted_series_comes_back_empty(client: Client) -> None:
    client.write_key("reborn", [DataPoint(T0, 1.0)])
    assert client.delete_series(keys=["reborn"]) == DeleteSummary(1)
    assert client.get_series(keys=["reborn"]) == []
    client.write_key("reborn", [DataPoint(T0 + timedelta(minutes=5), 2.0)])
    got = client.read_key("reborn", T0, T0 + timedelta(hours=1)).data
    assert [p.value for p in got] == [2.0]


def test_token_stays_out_of_reprs(server: LocalServer) -> None:
    c = Client(server.admin_token, server.url)
    assert server.admin_token not in repr(c)
