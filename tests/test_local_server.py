"""``tblog local`` end to end: the real HTTP server on real chDB, fed by the real handler."""

from __future__ import annotations

import gzip
import logging
import os
import threading
from collections.abc import Iterator

import pytest
import requests

import tblog
from tblog.local.server import LocalServer
from tests.localserver import event, ndjson, post, scalar, serve, sql


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("local"))


def _count(server: LocalServer, where: str, table: str = "tb_logs") -> int:
    return int(scalar(server, f"SELECT count() FROM {table} WHERE {where}"))


def test_handler_events_land_typed_with_nothing_quarantined(server: LocalServer) -> None:
    app = f"typed-{os.urandom(3).hex()}"
    handler = tblog.TinybirdLoggingHandler(server.url, server.admin_token, app, batch_size=50)
    log = logging.getLogger(f"tests.local.{app}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)
    quarantined_before = int(scalar(server, "SELECT count() FROM tb_logs_quarantine"))

    def work(n: int) -> None:
        with tblog.trace(), tblog.bound(tenant_id="acme", worker=n):
            for i in range(100):
                log.info("request %d", i, extra={"duration_ms": i * 1.5, "tags": ["a", "b"]})

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed", extra={"order": {"id": 7}})
        assert handler.flush(timeout=30)
        stats = handler.stats()
    finally:
        log.removeHandler(handler)
        handler.close()
    assert stats["sent"] == 301
    assert stats["quarantined_rows"] == 0
    assert _count(server, f"app_name = '{app}'") == 301
    assert int(scalar(server, "SELECT count() FROM tb_logs_quarantine")) == quarantined_before
    rows = sql(
        server,
        "SELECT toTypeName(timestamp) AS t, toTypeName(event_id) AS u, level_no, extra, "
        f"exception_type, exception_message, trace_id FROM tb_logs WHERE app_name = '{app}' "
        "AND exception_type != ''",
    ).json()["data"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["t"], row["u"], row["level_no"]) == ("DateTime64(6)", "UUID", 40)
    assert (row["exception_type"], row["exception_message"]) == ("ValueError", "boom")
    assert row["trace_id"] == ""
    assert '"order":{"id":7}' in row["extra"].replace(" ", "")
    extras = sql(
        server,
        "SELECT JSONExtractString(extra, 'tenant_id') AS tenant, "
        "JSONExtractFloat(extra, 'duration_ms') AS ms, length(trace_id) AS tl "
        f"FROM tb_logs WHERE app_name = '{app}' AND message = 'request 99'",
    ).json()["data"]
    assert sorted((r["tenant"], r["ms"], r["tl"]) for r in extras) == [("acme", 148.5, 32)] * 3


def test_events_answer_202_or_200_with_counts(server: LocalServer) -> None:
    r = post(server, ndjson(event(app_name="codes")), wait=False)
    assert r.status_code == 202
    assert r.json() == {"successful_rows": 1, "quarantined_rows": 0}
    r = post(server, ndjson(event(app_name="codes")), gzipped=True)
    assert r.status_code == 200
    assert r.json()["successful_rows"] == 1


def test_rows_that_do_not_fit_are_quarantined_not_lost(server: LocalServer) -> None:
    body = ndjson(
        event(app_name="q1", message="good"),
        event(app_name="q1", level_no="not a number"),
        event(app_name="q1", event_id="not-a-uuid"),
        event(app_name="q1", timestamp="2026-02-31T10:00:00Z"),  # a day ClickHouse refuses
        {k: v for k, v in event(app_name="q1").items() if k != "message"},
        event(app_name="q1", message="good too"),
    )
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"successful_rows": 2, "quarantined_rows": 4}
    assert _count(server, "app_name = 'q1'") == 2
    errors = sql(
        server,
        "SELECT c__error_column, c__error, level_no FROM tb_logs_quarantine "
        "WHERE app_name = 'q1' OR c__raw LIKE '%2026-02-31%' ORDER BY insertion_date",
    ).json()["data"]
    assert len(errors) == 4
    columns = sorted(c for e in errors for c in e["c__error_column"])
    assert columns == ["event_id", "level_no", "message"]
    assert any("is not Int32" in m for e in errors for m in e["c__error"])
    assert any(e["level_no"] == "not a number" for e in errors)


def test_invalid_json_lines_get_422_and_valid_rows_survive(server: LocalServer) -> None:
    body = ndjson(event(app_name="ij")) + b"{not json\n[1, 2]\n" + ndjson(event(app_name="ij"))
    r = post(server, body, gzipped=True)
    assert r.status_code == 422
    answer = r.json()
    assert answer["successful_rows"] == 2
    assert answer["quarantined_rows"] == 2
    assert "line 2: invalid JSON" in answer["error"]
    assert _count(server, "app_name = 'ij'") == 2
    assert _count(server, "c__raw = '{not json'", "tb_logs_quarantine") == 1


def test_only_invalid_lines_get_400(server: LocalServer) -> None:
    r = post(server, b"{oops\n")
    assert r.status_code == 400
    assert r.json()["successful_rows"] == 0


def test_a_100_mb_line_is_refused_and_its_neighbours_kept(server: LocalServer) -> None:
    huge = b'{"message": "' + b"x" * (100 * 1024 * 1024) + b'"}\n'
    body = ndjson(event(app_name="huge")) + huge + ndjson(event(app_name="huge"))
    r = post(server, body, gzipped=True)
    assert r.status_code == 422
    assert "exceeds" in r.json()["error"]
    assert r.json()["successful_rows"] == 2
    assert _count(server, "app_name = 'huge'") == 2
    kept = scalar(server, "SELECT max(length(c__raw)) FROM tb_logs_quarantine")
    assert int(kept) <= 1024


def test_bad_gzip_is_400(server: LocalServer) -> None:
    r = post(server, b"this is not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    assert "gzip" in r.json()["error"]
    truncated = gzip.compress(ndjson(event()))[:-12]
    r = post(server, truncated, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_wrong_content_type_is_415(server: LocalServer) -> None:
    r = post(server, ndjson(event()), headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 415
    assert "Content-Type" in r.json()["error"]


def test_unknown_datasource_is_404_and_missing_name_400(server: LocalServer) -> None:
    r = post(server, ndjson(event()), ds="nope")
    assert r.status_code == 404
    assert r.json()["error"].startswith("datasource 'nope' not found: ")
    r = requests.post(
        f"{server.url}/v0/events",
        data=b"{}",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert r.status_code == 400


def test_too_large_body_is_413(server: LocalServer) -> None:
    r = post(server, os.urandom(11 * 1024 * 1024))
    assert r.status_code == 413


def test_bad_or_missing_token_is_403_and_never_echoed(server: LocalServer) -> None:
    r = post(server, ndjson(event()), token="p.wrong-token-value")
    assert r.status_code == 403
    assert "p.wrong-token-value" not in r.text
    r = requests.post(f"{server.url}/v0/events?name=tb_logs", data=ndjson(event()))
    assert r.status_code == 403
    r = requests.post(
        f"{server.url}/v0/events?name=tb_logs&wait=true&token={server.admin_token}",
        data=ndjson(event(app_name="qs")),
    )
    assert r.status_code == 200  # ?token= works as in Tinybird


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("SELECT 1; DROP TABLE tb_logs", 400),
        ("DROP TABLE tb_logs", 400),
        ("INSERT INTO tb_logs (message) VALUES ('x')", 400),
        ("SELECT * FROM system.tables", 403),
        ("SELECT * FROM default.tb_logs", 403),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 403),
        ("SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", 403),
        ("SELECT count() FROM tb_logs SETTINGS readonly = 0", 400),
        ("SELECT * FROM tb_logs WHERE message = '' OR 1=1; DROP TABLE tb_logs --'", 400),
        ("SELECT * FROM tb_logs INTO OUTFILE '/tmp/x'", 400),
        ("SELECT (SELECT count() FROM remote('127.0.0.1', system.one))", 403),
        ("ALTER TABLE tb_logs DELETE WHERE 1", 400),
        ("SELEC broken", 400),
    ],
)
def test_sql_injection_attempts_are_refused(server: LocalServer, query: str, status: int) -> None:
    post(server, ndjson(event(app_name="victim")))
    r = sql(server, query)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert _count(server, "app_name = 'victim'") >= 1  # the table is intact


def test_sql_answers_tinybird_json(server: LocalServer) -> None:
    post(server, ndjson(event(app_name="shape")))
    r = sql(
        server,
        "SELECT app_name, count() AS n FROM tb_logs WHERE app_name = 'shape' GROUP BY app_name",
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"meta", "data", "rows", "statistics"}
    assert body["meta"] == [{"name": "app_name", "type": "LowCardinality(String)"},
                            {"name": "n", "type": "UInt64"}]  # fmt: skip
    assert body["rows"] == 1
    r = requests.post(
        f"{server.url}/v0/sql",
        data={"q": "SELECT 1 AS one FORMAT CSV"},
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert (r.status_code, r.text) == (200, "1\n")
    r = sql(server, "DESCRIBE tb_logs FORMAT JSON")
    assert r.status_code == 200
    assert {"name": "event_id", "type": "UUID"}.items() <= r.json()["data"][18].items()
    r = sql(server, "WITH t AS (SELECT number AS n FROM numbers(3)) SELECT sum(n) AS s FROM t")
    assert r.json()["data"] == [{"s": "3"}] or r.json()["data"] == [{"s": 3}]


def test_datasources_lists_row_counts(server: LocalServer) -> None:
    post(server, ndjson(event(app_name="listing")))
    r = requests.get(
        f"{server.url}/v0/datasources", headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    assert r.status_code == 200
    listed = {d["name"]: d for d in r.json()["datasources"]}
    assert "tb_logs" in listed
    tb_logs = listed["tb_logs"]
    assert tb_logs["statistics"]["row_count"] == int(scalar(server, "SELECT count() FROM tb_logs"))
    assert tb_logs["engine"]["sorting_key"] == "app_name, level, timestamp"
    assert tb_logs["columns"][0] == {"name": "timestamp", "type": "DateTime64(6)",
                                     "jsonpath": "$.timestamp", "default_value": None,
                                     "normalized_name": "timestamp", "nullable": False,
                                     "codec": None}  # fmt: skip


def test_rate_limit_answers_429_with_headers(server: LocalServer) -> None:
    now = [1000.25]
    server.set_rate_limit(2, clock=lambda: now[0])
    try:
        answers = [post(server, ndjson(event(app_name="rl"))) for _ in range(4)]
        now[0] = 1001.0  # the next one-second window
        answers.append(post(server, ndjson(event(app_name="rl"))))
    finally:
        server.set_rate_limit(None)
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 429, 429, 200]
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.headers["X-RateLimit-Limit"] == "2"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Reset"] == "1"
    assert answers[0].headers["X-RateLimit-Remaining"] == "1"
    assert "rate limit" in limited.json()["error"]
    assert _count(server, "app_name = 'rl'") == statuses.count(200)


def test_accepted_rows_are_visible_to_the_next_query(server: LocalServer) -> None:
    rows = [event(app_name="async")] * 30 + [event(app_name="async", timestamp="2026-02-30")]
    r = post(server, ndjson(*rows), wait=False)
    assert r.status_code == 202
    assert r.json() == {"successful_rows": 31, "quarantined_rows": 0}  # as Tinybird: not yet known
    assert _count(server, "app_name = 'async'") == 30
    assert _count(server, "c__raw LIKE '%2026-02-30%'", "tb_logs_quarantine") == 1


def test_sql_guard_keeps_comment_markers_inside_string_literals() -> None:
    from tblog.local.sqlguard import check_sql

    assert check_sql("SELECT '; SELECT 1 --' AS s", lambda q: "") == set()
    assert check_sql("SELECT '/* x */;' AS s -- 'tail", lambda q: "") == set()
