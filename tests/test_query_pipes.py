"""``QueryClient``'s reads through the shipped pipes (``recent_errors``, ``trace_rows``,
``level_counts``) against a real ``tblog local``, and their fall-back to the SQL API when
the pipe is missing or the token may not call it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from tblog.local.server import LocalServer
from tblog.query import LogEntry, QueryClient, QueryFailedError
from tests.localserver import event, ndjson, post, serve

T0 = datetime(2030, 3, 31, 0, 30, tzinfo=timezone.utc)
HOSTILE = ["it's", "\\'", "' OR 1=1 OR '", "x\\", "-- x", "tab\tnew\nline"]
LEVELS = [("INFO", 20), ("ERROR", 40), ("WARNING", 30), ("CRITICAL", 50), ("ERROR", 40)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("query_pipes"))


def _token(server: LocalServer, *scopes: str) -> str:
    r = requests.post(
        f"{server.url}/v0/tokens",
        data={"name": "t", "scope": list(scopes)},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def loaded(server: LocalServer) -> None:
    rows = []
    for i, (level, no) in enumerate(LEVELS * 2):
        rows.append(event(
            timestamp=(T0 + timedelta(minutes=40 * i)).isoformat().replace("+00:00", "Z"),
            level=level, level_no=no, message=f"m{i}", app_name="web" if i % 2 else "api",
            event_id=str(uuid.UUID(int=i + 1)), trace_id=HOSTILE[i % len(HOSTILE)],
        ))  # fmt: skip
    assert post(server, ndjson(*rows)).status_code == 200


def _key(entries: list[LogEntry]) -> list[tuple[str, str]]:
    return [(e.event_id, e.message) for e in entries]


def test_pipes_and_sql_give_the_same_answers(server: LocalServer, loaded: None) -> None:
    via_pipe = QueryClient(_token(server, "PIPES:READ:recent_errors", "PIPES:READ:trace_rows",
                                  "PIPES:READ:level_counts"), server.url)  # fmt: skip
    via_sql = QueryClient(_token(server, "DATASOURCES:READ:tb_logs"), server.url)
    with via_pipe, via_sql:
        errors = via_pipe.recent_errors()
        assert [e.level for e in errors] == ["ERROR", "CRITICAL", "ERROR"] * 2
        assert [e.timestamp for e in errors] == sorted((e.timestamp for e in errors), reverse=True)
        assert _key(errors) == _key(via_sql.recent_errors())
        since = T0 + timedelta(hours=3)
        cases: list[dict[str, Any]] = [
            {"app": "web"},
            {"since": since},
            {"since": since.timestamp(), "limit": 2},
            {"min_level": "warning", "app": "api"},
        ]
        for kwargs in cases:
            assert _key(via_pipe.recent_errors(**kwargs)) == _key(via_sql.recent_errors(**kwargs))
        assert all(e.timestamp >= since for e in via_pipe.recent_errors(since=since))
        for trace_id in HOSTILE:
            trace = via_pipe.trace(trace_id)
            assert trace and all(e.trace_id == trace_id for e in trace)
            assert (
                _key(trace)
                == _key(via_sql.trace(trace_id))
                == _key(via_sql.get_by_trace_id(trace_id))
            )
        assert via_pipe.trace("' OR 1=1 --") == []
        windows: list[dict[str, Any]] = [
            {},
            {"interval": "2h"},
            {"from_time": T0 + timedelta(hours=1), "to_time": T0 + timedelta(hours=5),
             "interval": "30m", "app": "web"},
        ]  # fmt: skip
        for kwargs in windows:
            assert via_pipe.level_counts(**kwargs) == via_sql.level_counts(**kwargs)
        stats = via_sql.get_aggregated_stats(T0, T0 + timedelta(days=1), "1h")
        assert via_pipe.level_counts(T0, T0 + timedelta(days=1), "1h") == stats.timeseries
        # the pipe client really used the pipes (it cannot use the SQL API) and the other
        # one fell back to SQL (it may not call pipes)
        with pytest.raises(QueryFailedError):
            via_pipe.sql("SELECT 1 FROM tb_logs")
        assert via_pipe._no_pipes == set()
        assert via_sql._no_pipes == {"recent_errors", "trace_rows", "level_counts"}


def test_a_missing_pipe_falls_back_to_sql(server: LocalServer, loaded: None) -> None:
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    pipe = requests.get(f"{server.url}/v0/pipes/trace_rows", headers=admin, timeout=30).json()
    r = requests.delete(f"{server.url}/v0/pipes/trace_rows", headers=admin, timeout=30)
    assert r.status_code == 204
    try:
        with QueryClient(server.admin_token, server.url) as client:
            assert len(client.trace(HOSTILE[0])) == 2
            assert client._no_pipes == {"trace_rows"}
    finally:  # put it back for the other tests
        body = {"name": "trace_rows", "description": pipe["description"],
                "nodes": [{"name": n["name"], "sql": n["sql"], "type": n["node_type"]}
                          for n in pipe["nodes"]]}  # fmt: skip
        r = requests.post(f"{server.url}/v0/pipes", json=body, headers=admin, timeout=30)
        assert r.status_code == 200, r.text


def test_pipe_errors_other_than_403_and_404_are_raised(server: LocalServer) -> None:
    with QueryClient(server.admin_token, server.url) as client:
        with pytest.raises(QueryFailedError, match=r"answered 400: .*trace_id") as info:
            client._sql.pipe_rows("trace_rows", {})
        assert server.admin_token not in str(info.value)
        with pytest.raises(ValueError, match="unknown level"):
            client.recent_errors(min_level="LOUD")
        with pytest.raises(ValueError, match="limit"):
            client.trace("x", limit=-1)


def test_another_datasource_name_uses_sql(server: LocalServer, loaded: None) -> None:
    # the shipped pipes read tb_logs: a client of another datasource never calls them
    with QueryClient(server.admin_token, server.url, ds_name="other_logs") as client:
        assert client._pipe("recent_errors", {}) is None
        with pytest.raises(QueryFailedError, match="other_logs"):  # its SQL names its table
            client.recent_errors()
