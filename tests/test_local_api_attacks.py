"""Attacker tests of the Data Sources, Pipes, Jobs, Tokens and workspace APIs of
``tblog local``: each is a real HTTP request to a real server (tests/localserver.py).

The project rule: hostile input to ``tblog local`` is an attacker's, not a typo's.  A
scoped token must reach nothing beyond its scopes; a client-supplied schema, engine,
expression, name, template parameter or delete condition must never become SQL that
reads files, the network, other tables or settings; oversized input is refused, not
held; the admin token is never handed to a browser or a non-loopback client.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tblog.local import datasources_api
from tblog.local.server import LocalServer
from tests.cliutil import clean_env
from tests.localserver import event, ndjson, post, scalar, serve

FILTER = "app_name = 'tenant_a'"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("attacks"))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(server: LocalServer, *scopes: str, expires: int | None = None) -> str:
    body: dict[str, Any] = {"name": "attacker", "scopes": list(scopes)}
    url = f"{server.url}/v0/tokens"
    if expires is not None:
        url += f"?expiration_time={expires}"
    r = requests.post(url, json=body, headers=_auth(server.admin_token), timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _create(server: LocalServer, token: str | None = None, **fields: str) -> requests.Response:
    return requests.post(f"{server.url}/v0/datasources", data=fields,
                         headers=_auth(token or server.admin_token), timeout=60)  # fmt: skip


def _push(server: LocalServer, name: str, sql: str, token: str | None = None,
          force: bool = True) -> requests.Response:  # fmt: skip
    body = {"name": name, "nodes": [{"name": f"{name}_0", "sql": sql, "type": "endpoint"}]}
    headers = _auth(token or server.admin_token)
    return requests.post(f"{server.url}/v0/pipes", params={"force": str(force).lower()},
                         json=body, headers=headers, timeout=60)  # fmt: skip


def _call(server: LocalServer, pipe: str, token: str, **params: str) -> requests.Response:
    return requests.get(f"{server.url}/v0/pipes/{pipe}.json", params=params,
                        headers=_auth(token), timeout=60)  # fmt: skip


@pytest.fixture(scope="module")
def seeded(server: LocalServer) -> LocalServer:
    """tb_logs with rows of two tenants, a second datasource ``secrets`` and pipes."""
    rows = [event(app_name="tenant_a", message="a1"), event(app_name="tenant_b", message="b1")]
    assert post(server, ndjson(*rows)).status_code == 200
    r = _create(server, name="secrets", schema="`k` String `json:$.k`, `v` String `json:$.v`",
                engine_sorting_key="k")  # fmt: skip
    assert r.status_code == 200, r.text
    r = requests.post(f"{server.url}/v0/datasources", params={"name": "secrets",
                      "mode": "append", "format": "ndjson"},
                      data=b'{"k": "root", "v": "hunter2"}\n',
                      headers=_auth(server.admin_token), timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    assert _push(server, "all_logs", "SELECT app_name, message FROM tb_logs").status_code == 200
    assert _push(server, "read_secrets", "SELECT k, v FROM secrets").status_code == 200
    echo = "%\nSELECT {{ String(x, 'd') }} AS v"
    assert _push(server, "echo", echo).status_code == 200
    arr = "%\nSELECT {{ Array(xs, 'Int32', default='1') }} AS v"
    assert _push(server, "arr", arr).status_code == 200
    return server


# -- scoped, filtered and expired tokens ----------------------------------------------


def test_read_token_manages_nothing(seeded: LocalServer) -> None:
    s = seeded
    token = _token(s, "DATASOURCES:READ:tb_logs")
    assert _create(s, token, name="mine", schema="`a` String").status_code == 403
    r = requests.delete(f"{s.url}/v0/datasources/secrets", headers=_auth(token), timeout=30)
    assert r.status_code == 404  # not even told it exists
    r = requests.post(f"{s.url}/v0/datasources/tb_logs/truncate", headers=_auth(token),
                      timeout=30)  # fmt: skip
    assert r.status_code == 403
    r = requests.post(f"{s.url}/v0/datasources/tb_logs/delete", data={"delete_condition": "1"},
                      headers=_auth(token), timeout=30)  # fmt: skip
    assert r.status_code == 403
    assert _push(s, "evil", "SELECT 1", token).status_code == 403
    r = requests.delete(f"{s.url}/v0/pipes/all_logs", headers=_auth(token), timeout=30)
    assert r.status_code == 403
    for path in ("/v0/tokens", "/v0/tokens/admin%20token", "/v1/user/workspaces"):
        r = requests.get(f"{s.url}{path}", headers=_auth(token), timeout=30)
        assert r.status_code == 403, path
        assert s.admin_token not in r.text
    assert scalar(s, "SELECT count() FROM secrets") == 1


def test_create_token_cannot_drop_nor_list_tokens(seeded: LocalServer) -> None:
    s = seeded
    token = _token(s, "DATASOURCES:CREATE")
    r = requests.delete(f"{s.url}/v0/datasources/secrets", headers=_auth(token), timeout=30)
    assert r.status_code == 403
    r = requests.get(f"{s.url}/v0/tokens", headers=_auth(token), timeout=30)
    assert r.status_code == 403 and s.admin_token not in r.text
    assert _push(s, "evil", "SELECT 1", token).status_code == 403


def test_pipe_token_reads_only_its_pipe(seeded: LocalServer) -> None:
    s = seeded
    token = _token(s, "PIPES:READ:all_logs")
    assert _call(s, "all_logs", token).status_code == 200
    assert _call(s, "read_secrets", token).status_code == 403
    r = requests.get(f"{s.url}/v0/pipes", headers=_auth(token), timeout=30)
    assert [p["name"] for p in r.json()["pipes"]] == ["all_logs"]
    r = requests.get(f"{s.url}/v0/sql", params={"q": "SELECT * FROM secrets"},
                     headers=_auth(token), timeout=30)  # fmt: skip
    assert r.status_code == 403
    r = requests.get(f"{s.url}/v0/datasources/secrets", headers=_auth(token), timeout=30)
    assert r.status_code == 404


def test_row_filter_still_applies_through_a_pipe(seeded: LocalServer) -> None:
    s = seeded
    token = _token(s, f"DATASOURCES:READ:tb_logs:{FILTER}", "PIPES:READ:all_logs")
    r = _call(s, "all_logs", token)
    assert r.status_code == 200, r.text
    assert {row["app_name"] for row in r.json()["data"]} == {"tenant_a"}


def test_expired_token_is_refused_everywhere(seeded: LocalServer) -> None:
    s = seeded
    token = _token(s, "ADMIN", expires=int(time.time()) - 1)
    for path in ("/v0/workspace", "/v0/tokens", "/v0/jobs", "/v0/pipes", "/v0/datasources"):
        r = requests.get(f"{s.url}{path}", headers=_auth(token), timeout=30)
        assert r.status_code == 403, path
    assert _call(s, "all_logs", token).status_code == 403
    r = requests.get(f"{s.url}/v0/tokens", headers=_auth(s.admin_token), timeout=30)
    assert token not in r.text  # an expired token is not listed either


def test_jobs_of_other_datasources_are_hidden(seeded: LocalServer) -> None:
    s = seeded
    r = requests.post(f"{s.url}/v1/datasources/secrets/append", params={"format": "ndjson"},
                      data=b'{"k": "x", "v": "y"}\n', headers=_auth(s.admin_token),
                      timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    for token in (_token(s, "DATASOURCES:READ:tb_logs"), _token(s, "PIPES:READ:read_secrets"),
                  _token(s, "DATASOURCES:READ:secrets:k = 'nobody'")):  # fmt: skip
        assert requests.get(f"{s.url}/v0/jobs/{job}", headers=_auth(token),
                            timeout=30).status_code == 404  # fmt: skip
        listed = requests.get(f"{s.url}/v0/jobs", headers=_auth(token), timeout=30).json()
        assert job not in json.dumps(listed)


# -- DDL injection through the Data Sources API ---------------------------------------

_BAD_NAMES = ["../escape", "/tmp/abs", "a\x00b", "x" * 300, "caf\u00e9", "a/b", "a.b",
              "tb_logs_quarantine", ".datasource", "a b", "a`b"]  # fmt: skip


@pytest.mark.parametrize("name", _BAD_NAMES)
def test_datasource_names_cannot_escape_the_data_dir(seeded: LocalServer, name: str) -> None:
    r = _create(seeded, name=name, schema="`a` String")
    assert r.status_code == 400, r.text
    data_dir = seeded.store.data_dir
    kept = {p.name for p in (data_dir / "datasources").glob("*")}
    assert kept <= {"secrets.datasource"}
    assert not Path("/tmp/abs.datasource").exists()
    assert not (data_dir / "escape.datasource").exists()


_BAD_DEFINITIONS: list[dict[str, str]] = [
    {"engine": "File(TSV)"},
    {"engine": "URL('http://127.0.0.1:1/x', CSV)"},
    {"engine": "MergeTree\"\nENGINE_SETTINGS storage_policy = 'x'"},
    {"engine_settings": "storage_policy = 'default'"},
    {"engine_settings": "disk = disk(type = local, path = '/tmp/x/')"},
    {"engine_settings": "index_granularity = 1, min_bytes_for_wide_part = 0; DROP TABLE x"},
    {"engine_sorting_key": "file('/etc/passwd')"},
    {"engine_sorting_key": "(SELECT count() FROM secrets)"},
    {"engine_partition_key": "dictGet('d', 'a', toUInt64(1))"},
    {"engine_ttl": "toDateTime(0) + INTERVAL 1 DAY TO DISK 'x'"},
    {"engine_ttl": "toDateTime(0) + INTERVAL 1 DAY TO VOLUME 'x'"},
    {"engine_ttl": "toDateTime((SELECT max(1) FROM secrets))"},
    {"engine_ttl": "toDateTime(0) + INTERVAL 1 DAY) SETTINGS storage_policy = 'x' --"},
    {"schema": "`a` String DEFAULT file('/etc/passwd')"},
    {"schema": "`a` String DEFAULT url('http://127.0.0.1:1/', 'CSV', 'x String')"},
    {"schema": "`a` String DEFAULT remote('127.0.0.1', system.one)"},
    {"schema": "`a` String MATERIALIZED getSetting('max_memory_usage')"},
    {"schema": "`a` String ALIAS (SELECT v FROM secrets LIMIT 1)"},
    {"schema": "`a` String DEFAULT s3('http://127.0.0.1:1/b')"},
    {"schema": "`a` String) ENGINE = File(TSV) --"},
    {"schema": "`a` String) ENGINE = File(TSV) AS SELECT 1 #"},
    {"schema": "`a` Enum8('x' = 1) ) ENGINE = Log --"},
    {"schema": "`a` String CODEC(ZSTD(1))) ENGINE = File(TSV)"},
    {"schema": "`a` DateTime TTL a + INTERVAL 1 DAY TO DISK 'x'"},
    {"schema": "`a` String, INDEX i file('/etc/passwd') TYPE minmax GRANULARITY 1"},
    {"schema": "`a` String", "indexes": "i a TYPE minmax GRANULARITY 1"},
    {"schema": "`a` String `json:$.a` DEFAULT 'x' /* */ , `b` String DEFAULT file('x')"},
]


@pytest.mark.parametrize("fields", _BAD_DEFINITIONS, ids=lambda f: json.dumps(f)[:60])
def test_ddl_injection_is_refused(seeded: LocalServer, fields: dict[str, str]) -> None:
    base = {"name": "injected", "schema": "`a` DateTime `json:$.a`"}
    r = _create(seeded, **{**base, **fields})
    assert r.status_code == 400, r.text
    assert "injected" not in seeded.store.datasources
    assert scalar(seeded, "SELECT 1") == 1  # the server still serves
    assert not (seeded.store.data_dir / "datasources" / "injected.datasource").exists()


def test_huge_schema_is_refused_or_bounded(seeded: LocalServer) -> None:
    schema = ", ".join(f"`c{i}` String" for i in range(20000))
    r = _create(seeded, name="wide", schema=schema)
    assert r.status_code in (400, 413), r.status_code
    assert "wide" not in seeded.store.datasources


# -- delete_condition injection --------------------------------------------------------


@pytest.mark.parametrize("condition", [
    "k IN (SELECT k FROM secrets_quarantine)",
    "k IN (SELECT message FROM tb_logs)",
    "file('/etc/passwd') != ''",
    "1 SETTINGS max_threads = 1",
    "1) SETTINGS mutations_sync = 0 --",
    "1=1) OR (1=1",
    "1=1; DROP TABLE secrets",
    "dictGet('d', 'a', toUInt64(1)) = 1",
    "k = getSetting('max_memory_usage')",
    "1 = 1 #",
])  # fmt: skip
def test_delete_condition_injection(seeded: LocalServer, condition: str) -> None:
    s = seeded
    before = scalar(s, "SELECT count() FROM secrets")
    r = requests.post(f"{s.url}/v0/datasources/secrets/delete",
                      data={"delete_condition": condition},
                      headers=_auth(_token(s, "DATASOURCES:CREATE")), timeout=60)  # fmt: skip
    if condition == "1=1) OR (1=1":  # means "every row": allowed, but no more than that
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            r = requests.post(f"{s.url}/v0/datasources", params={"name": "secrets",
                              "mode": "append", "format": "ndjson"},
                              data=b'{"k": "root", "v": "hunter2"}\n',
                              headers=_auth(s.admin_token), timeout=60)  # fmt: skip
            assert r.status_code == 200
        return
    assert r.status_code == 400, r.text
    assert scalar(s, "SELECT count() FROM secrets") == before
    assert "secrets" in s.store.datasources


# -- template injection through pipe parameters ----------------------------------------

_HOSTILE_VALUES = ["'", "\\", "\\'", "' OR 1=1 --", "x'); DROP TABLE secrets; --",
                   "/* */", "{{ String(y) }}", "{% if 1 %}", "\u2019\u02bc\uff07",
                   "\\u0027", "a\nb\rc\td", "$$ x $$", "`", '"', "x\x01y"]  # fmt: skip


@pytest.mark.parametrize("value", _HOSTILE_VALUES)
def test_string_parameters_stay_literals(seeded: LocalServer, value: str) -> None:
    token = _token(seeded, "PIPES:READ:echo")
    r = _call(seeded, "echo", token, x=value)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [{"v": value}]


@pytest.mark.parametrize("value", ["1) OR (1=1", "1,2; DROP TABLE secrets", "1e400",
                                   "0x10", "1 --", "(SELECT 1)", "9" * 100])  # fmt: skip
def test_array_parameters_are_typed(seeded: LocalServer, value: str) -> None:
    token = _token(seeded, "PIPES:READ:arr")
    r = _call(seeded, "arr", token, xs=value)
    assert r.status_code == 400, r.text


def test_huge_parameter_is_refused(seeded: LocalServer) -> None:
    token = _token(seeded, "PIPES:READ:echo")
    r = requests.post(f"{seeded.url}/v0/pipes/echo.json", data={"x": "a" * 200_000},
                      headers=_auth(token), timeout=60)  # fmt: skip
    assert r.status_code in (400, 413), r.text


def test_deeply_nested_template_is_a_400(seeded: LocalServer) -> None:
    depth = 3000
    sql = "%\nSELECT 1 " + "{% if defined(x) %}" * depth + "+1" + "{% end %}" * depth
    r = _push(seeded, "deep", sql)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        r = _call(seeded, "deep", seeded.admin_token, x="1")
        assert r.status_code == 400, r.text


@pytest.mark.parametrize("sql", [
    "%\nSELECT 1 {% if " + "not " * 5000 + "defined(x) %}+1{% end %}",
    "%\nSELECT {{ Int32(x, " + "-" * 5000 + "1) }}",
    "%\nSELECT {{ Array(x, 'Int32', default=" + "[" * 3000 + "]" * 3000 + ") }}",
    "%\nSELECT 1 {% if x == " + "(" * 3000 + "1" + ")" * 3000 + " %}+1{% end %}",
])  # fmt: skip
def test_deep_template_expression_is_a_400(seeded: LocalServer, sql: str) -> None:
    r = _push(seeded, "deep_expr", sql)
    assert r.status_code == 400, r.text


# -- resource exhaustion ---------------------------------------------------------------


def test_gzip_bomb_append_is_a_413(seeded: LocalServer) -> None:
    bomb = gzip.compress(b"\n" * (64 * 1024 * 1024), 9)
    headers = {**_auth(seeded.admin_token), "Content-Encoding": "gzip"}
    r = requests.post(f"{seeded.url}/v1/datasources/secrets/append", params={"format": "csv"},
                      data=bomb, headers=headers, timeout=120)  # fmt: skip
    assert r.status_code == 413, r.text
    r = requests.post(f"{seeded.url}/v0/datasources", params={"name": "secrets",
                      "mode": "append", "format": "csv"}, data=bomb, headers=headers,
                      timeout=120)  # fmt: skip
    assert r.status_code == 413, r.text


def test_csv_with_a_huge_field_is_not_a_500(seeded: LocalServer) -> None:
    body = b"k,v\nbig," + b"x" * 300_000 + b"\n"
    r = requests.post(f"{seeded.url}/v1/datasources/secrets/append", params={"format": "csv"},
                      data=body, headers=_auth(seeded.admin_token), timeout=60)  # fmt: skip
    assert r.status_code == 400, r.text
    assert "CSV" in r.json()["error"]


def test_csv_with_a_nul_is_not_a_500(seeded: LocalServer) -> None:
    body = b'k,v\n"a\x00b",c\n'
    r = requests.post(f"{seeded.url}/v1/datasources/secrets/append", params={"format": "csv"},
                      data=body, headers=_auth(seeded.admin_token), timeout=60)  # fmt: skip
    assert r.status_code < 500, r.text


# -- GET /tokens (Tinybird Local's token discovery) ------------------------------------


def test_local_tokens_need_a_loopback_host_and_no_origin(seeded: LocalServer) -> None:
    s = seeded
    r = requests.get(f"{s.url}/tokens", timeout=30)
    assert r.status_code == 200 and r.json()["admin_token"] == s.admin_token
    for headers in ({"Host": "evil.example"}, {"Host": "evil.example:7181"},
                    {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Host": "127.0.0.1.evil.example"}):  # fmt: skip
        r = requests.get(f"{s.url}/tokens", headers=headers, timeout=30)
        assert r.status_code >= 400, headers
        assert s.admin_token not in r.text


# -- a row-filtered append token on every append path ----------------------------------


def test_row_filter_binds_every_append_path(seeded: LocalServer) -> None:
    s = seeded
    asked = {"name": "t", "scope": "DATASOURCES:APPEND:secrets", "filter": "k = 'mine'"}
    r = requests.post(f"{s.url}/v0/tokens", data=asked, headers=_auth(s.admin_token),
                      timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    foreign = b'{"k": "forged", "v": "x"}\n'
    attempts = [
        ("/v1/datasources/secrets/append", {"format": "ndjson"}, foreign),
        ("/v1/datasources/secrets/append", {"format": "csv"}, b"forged,x\n"),
        ("/v0/datasources", {"name": "secrets", "mode": "append", "format": "ndjson"}, foreign),
        ("/v0/datasources", {"name": "secrets", "mode": "append", "format": "csv"}, b"forged,x\n"),
    ]
    for path, params, body in attempts:
        requests.post(f"{s.url}{path}", params=params, data=body, headers=_auth(token), timeout=60)
    assert scalar(s, "SELECT count() FROM secrets WHERE k = 'forged'") == 0
    r = requests.post(f"{s.url}/v1/datasources/secrets/replace", params={"format": "ndjson"},
                      data=b'{"k": "mine", "v": "x"}\n', headers=_auth(token),
                      timeout=60)  # fmt: skip
    assert r.status_code == 403
    assert scalar(s, "SELECT count() FROM secrets WHERE k = 'root'") >= 1


def test_sql_tables_bounds_its_parser(seeded: LocalServer) -> None:
    """Any token may ask: the parse is bounded as the SQL API's is (tokens, nesting),
    not just by length (240 K tokens cost sqlglot seconds of CPU per request)."""
    token = _token(seeded, "PIPES:READ:echo")
    for q in ("SELECT " + "1+" * 120_000 + "1", "SELECT " + "(" * 50_000 + "1" + ")" * 50_000):
        r = requests.post(f"{seeded.url}/v0/sql_tables", data={"q": q, "raising": "true"},
                          headers=_auth(token), timeout=60)  # fmt: skip
        assert r.status_code == 400, r.text
        assert "tokens" in r.json()["error"] or "nests" in r.json()["error"]


@pytest.mark.slow
def test_local_tokens_are_not_served_when_bound_to_every_address(tmp_path: Path) -> None:
    """Bound to 0.0.0.0, a loopback client must not get the admin token either: the
    server is reachable from other machines, so no route may hand it out unasked."""
    admin = "p.redteam-admin-0123456789"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tblog", "local", "--host", "0.0.0.0", "--port", "0",
         "--data-dir", str(tmp_path), "--token", admin],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "serving http://0.0.0.0:" in first, first
        port = first.rsplit(":", 1)[1].strip()
        r = requests.get(f"http://127.0.0.1:{port}/tokens", timeout=30)
        assert r.status_code == 404
        assert admin not in r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_too_many_columns_are_refused(seeded: LocalServer) -> None:
    schema = ", ".join(f"`c{i}` String" for i in range(datasources_api.MAX_COLUMNS + 1))
    r = _create(seeded, name="wide", schema=schema)
    assert r.status_code == 400, r.text
    assert "columns" in r.json()["error"]
    assert "wide" not in seeded.store.datasources


def test_datasource_count_is_capped(seeded: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DATASOURCES:CREATE token cannot fill the disk with tables (the cap is patched
    down here; it is ``MAX_DATASOURCES``)."""
    s = seeded
    monkeypatch.setattr(datasources_api, "MAX_DATASOURCES", len(s.store.datasources) + 2)
    token = _token(s, "DATASOURCES:CREATE")
    made = []
    try:
        for i in range(3):
            r = _create(s, token, name=f"many_{i}", schema="`a` String")
            if r.status_code == 200:
                made.append(f"many_{i}")
        assert made == ["many_0", "many_1"]
        assert r.status_code == 400 and "limit" in r.json()["error"]
    finally:
        for name in made:
            requests.delete(f"{s.url}/v0/datasources/{name}", headers=_auth(s.admin_token),
                            timeout=30)  # fmt: skip


def test_csv_of_tiny_fields_is_refused_before_it_is_held(seeded: LocalServer) -> None:
    """``ab,ab,ab,...``: 3 bytes of CSV became a ~60-byte Python string in a list (a
    gzip'd 32 MiB body held ~860 MiB, from any APPEND token); a CSV row is now bounded
    (``MAX_CSV_ROW_CHARS``) before the csv module splits it."""
    limit = datasources_api.MAX_CSV_ROW_CHARS
    for body in (
        b"ab," * (limit // 3 + 10) + b"\n",
        b'a,"' + b"x\n" * (limit // 2 + 10) + b'",b\n',
    ):  # one row over many lines
        r = requests.post(f"{seeded.url}/v1/datasources/secrets/append",
                          params={"format": "csv"}, data=gzip.compress(body),
                          headers={**_auth(seeded.admin_token), "Content-Encoding": "gzip"},
                          timeout=60)  # fmt: skip
        assert r.status_code == 400, r.text
        assert "CSV" in r.json()["error"]
    r = requests.post(f"{seeded.url}/v1/datasources/secrets/append", params={"format": "csv"},
                      data=b'k,v\nfine,"multi\nline"\n', headers=_auth(seeded.admin_token),
                      timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    assert scalar(seeded, "SELECT v FROM secrets WHERE k = 'fine'") == "multi\nline"


@pytest.mark.parametrize("value", ["9" * 5000, "\u00b2", "\u0661\u0662", "-1", "1e9", "1.5"])
def test_bad_expiration_time_is_a_400(seeded: LocalServer, value: str) -> None:
    r = requests.post(f"{seeded.url}/v0/tokens", params={"expiration_time": value},
                      data={"scope": "ADMIN"}, headers=_auth(seeded.admin_token),
                      timeout=30)  # fmt: skip
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("column", ["../../../../../../tmp/redteam_col", "/etc/passwd",
                                    "a\x00b", "x" * 5000, "\u00e9\u202e", "a\\\\b"])  # fmt: skip
def test_column_names_never_become_paths(seeded: LocalServer, column: str) -> None:
    """Column names become part file names in MergeTree: ClickHouse escapes them (and
    hashes long ones); nothing is written outside the data dir, nothing fails."""
    s = seeded
    r = _create(s, name="cols", schema=f"`{column}` String `json:$.v`")
    try:
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            r = requests.post(f"{s.url}/v1/datasources/cols/append", params={"format": "ndjson"},
                              data=b'{"v": "x"}\n', headers=_auth(s.admin_token),
                              timeout=60)  # fmt: skip
            assert r.status_code == 200, r.text
            assert scalar(s, "SELECT count() FROM cols") == 1
        assert not Path("/tmp/redteam_col").exists()
        assert not list(Path("/tmp").glob("redteam_col*"))
    finally:
        requests.delete(f"{s.url}/v0/datasources/cols", headers=_auth(s.admin_token), timeout=30)


def test_a_job_keeps_a_clipped_delete_condition(server: LocalServer) -> None:
    """The last 1,000 jobs live in memory: a 100 KiB condition is not kept whole."""
    from tblog.local.datasources_api import JOB_CONDITION_CHARS

    condition = "level = 'x' OR message = '" + "m" * 100_000 + "'"
    r = requests.post(
        f"{server.url}/v0/datasources/tb_logs/delete",
        data={"delete_condition": condition},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    job = requests.get(
        f"{server.url}/v0/jobs/{r.json()['job_id']}",
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    ).json()
    assert len(condition) > JOB_CONDITION_CHARS
    assert len(job["delete_condition"]) == JOB_CONDITION_CHARS
    assert job["delete_condition"].startswith("level = 'x' OR")
