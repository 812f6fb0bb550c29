"""Workspace/token discovery and the Data Sources API of ``tblog local`` (issue 15 items 1
and 2), over HTTP against a real server: Tinybird's names and shapes, and the security
properties that come with them (scopes, row filters, the SQL guard on expressions)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tblog.local.datasources_api import MAX_DECODED
from tblog.local.server import LocalServer
from tblog.local.tokens import TokenError, Tokens
from tests.localserver import event, ndjson, post, scalar, serve

SCHEMA = "`ts` DateTime `json:$.ts`, `tenant` String `json:$.t.id`, `n` Int32 `json:$.n`"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("tbapi"))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(server: LocalServer, *scopes: str, **more: str) -> str:
    r = requests.post(f"{server.url}/v0/tokens", data={"name": "t", "scope": list(scopes),
                      **more}, headers=_auth(server.admin_token))  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _create(server: LocalServer, name: str, token: str | None = None,
            **params: str) -> requests.Response:  # fmt: skip
    return requests.post(f"{server.url}/v0/datasources",
                         params={"name": name, "schema": SCHEMA, **params},
                         headers=_auth(token or server.admin_token))  # fmt: skip


def _append(server: LocalServer, name: str, body: bytes, fmt: str,
            token: str | None = None) -> requests.Response:  # fmt: skip
    return requests.post(f"{server.url}/v0/datasources",
                         params={"name": name, "mode": "append", "format": fmt},
                         files={fmt: (fmt, body)},
                         headers=_auth(token or server.admin_token))  # fmt: skip


# -- workspace and tokens -------------------------------------------------------------


def test_workspace_answers_any_valid_token(server: LocalServer) -> None:
    r = requests.get(f"{server.url}/v0/workspace", headers=_auth(server.admin_token))
    assert r.status_code == 200
    ws = r.json()
    assert ws["name"] == "tblog_local"
    assert len(ws["id"]) == 36
    reader = _token(server, "DATASOURCES:READ:tb_logs")
    again = requests.get(f"{server.url}/v0/workspace", headers=_auth(reader)).json()
    assert again["id"] == ws["id"]
    assert requests.get(f"{server.url}/v0/workspace").status_code == 403


def test_tokens_are_listed_for_admins_only_without_leaking_in_errors(server: LocalServer) -> None:
    reader = _token(server, "DATASOURCES:READ:tb_logs", name="lister")
    r = requests.get(f"{server.url}/v0/tokens", headers=_auth(reader))
    assert r.status_code == 403
    assert reader not in r.text
    listed = requests.get(f"{server.url}/v0/tokens", headers=_auth(server.admin_token)).json()
    mine = [t for t in listed["tokens"] if t["token"] == reader]
    assert mine and mine[0]["scopes"] == [{"type": "DATASOURCES:READ", "resource": "tb_logs"}]
    one = requests.get(f"{server.url}/v0/tokens/{mine[0]['id']}",
                       headers=_auth(server.admin_token))  # fmt: skip
    assert one.status_code == 200 and one.json()["token"] == reader
    by_name = requests.get(f"{server.url}/v0/tokens/admin%20token",
                           headers=_auth(server.admin_token))  # fmt: skip
    assert by_name.json()["scopes"] == [{"type": "ADMIN"}]
    assert requests.get(f"{server.url}/v0/tokens/nope",
                        headers=_auth(server.admin_token)).status_code == 404  # fmt: skip


def test_tinybird_scope_names() -> None:
    tokens = Tokens()
    pipe = tokens.add("p", ["PIPES:READ:errors"])
    assert pipe.can_read_pipe("errors") and not pipe.can_read_pipe("other")
    assert not pipe.can_read("tb_logs") and not pipe.can_append("tb_logs")
    create = tokens.add("c", ["DATASOURCES:CREATE"])
    assert create.create and create.can_append("anything") and not create.can_read("tb_logs")
    filtered = tokens.add("f", ["DATASOURCES:READ:tb_logs:app_name = 'x'"])
    assert filtered.read == {"tb_logs"} and filtered.row_filter == "app_name = 'x'"
    assert filtered.scopes() == ["DATASOURCES:READ:tb_logs"]
    with pytest.raises(TokenError):  # two different filters on one token
        tokens.add("g", ["DATASOURCES:READ:a:x = 1", "DATASOURCES:READ:b:x = 2"])
    with pytest.raises(TokenError):  # a filter cannot limit an admin
        tokens.add("h", ["ADMIN"], row_filter="x = 1")
    with pytest.raises(TokenError):
        tokens.add("i", ["DATASOURCES:APPEND:a:x = 1"])


def test_tokens_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    made = Tokens(path).add("r", ["PIPES:READ:p", "DATASOURCES:CREATE"], description="d",
                            expires=int(time.time()) + 3600)  # fmt: skip
    again = Tokens(path).find(made.value)
    assert again == made


def test_suffix_filter_limits_reads(server: LocalServer) -> None:
    post(server, ndjson(event(app_name="sfx-a"), event(app_name="sfx-b")))
    token = _token(server, "DATASOURCES:READ:tb_logs:app_name = 'sfx-a'")
    assert scalar(server, "SELECT count() FROM tb_logs WHERE app_name LIKE 'sfx-%'", token) == 1


def test_json_token_request(server: LocalServer) -> None:
    body = {"name": "jwt-ish", "scopes": [{"type": "DATASOURCES:READ", "resource": "tb_logs",
                                           "filter": "app_name = 'json-a'"}]}  # fmt: skip
    r = requests.post(f"{server.url}/v0/tokens/", data=json.dumps(body),
                      headers={**_auth(server.admin_token),
                               "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    post(server, ndjson(event(app_name="json-a"), event(app_name="json-b")))
    assert scalar(server, "SELECT count() FROM tb_logs WHERE app_name LIKE 'json-%'", token) == 1
    fixed = {"name": "x", "scopes": [{"type": "PIPES:READ", "resource": "p",
                                      "fixed_params": {"tenant": 1}}]}  # fmt: skip
    r = requests.post(f"{server.url}/v0/tokens", data=json.dumps(fixed),
                      headers={**_auth(server.admin_token),
                               "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "fixed_params" in r.json()["error"]


def test_expired_token_is_refused(server: LocalServer) -> None:
    live = _token(server, "DATASOURCES:READ:tb_logs", expiration_time=str(int(time.time()) + 600))
    dead = _token(server, "DATASOURCES:READ:tb_logs", expiration_time=str(int(time.time()) - 1))
    q = {"q": "SELECT 1"}
    assert requests.get(f"{server.url}/v0/sql", params=q, headers=_auth(live)).status_code == 200
    assert requests.get(f"{server.url}/v0/sql", params=q, headers=_auth(dead)).status_code == 403


# -- the Data Sources API ---------------------------------------------------------------


def test_datasources_have_tinybird_fields(server: LocalServer) -> None:
    r = requests.get(f"{server.url}/v0/datasources/tb_logs", headers=_auth(server.admin_token))
    assert r.status_code == 200
    ds: dict[str, Any] = r.json()
    for key in ("id", "name", "created_at", "updated_at", "columns", "engine", "statistics"):
        assert key in ds
    assert len(ds["created_at"]) == len("2026-01-01 00:00:00.000000")
    assert ds["engine"]["engine"] == "MergeTree"
    appender = _token(server, "DATASOURCES:APPEND:tb_logs")
    other = _token(server, "PIPES:READ:x")
    assert requests.get(f"{server.url}/v0/datasources/tb_logs",
                        headers=_auth(appender)).status_code == 200  # fmt: skip
    assert requests.get(f"{server.url}/v0/datasources/tb_logs",
                        headers=_auth(other)).status_code == 404  # fmt: skip


def test_create_append_csv_ndjson_truncate_delete(server: LocalServer) -> None:
    r = _create(server, "api_ds", engine_sorting_key="ts")
    assert r.status_code == 200, r.text
    assert r.json()["datasource"]["name"] == "api_ds"
    assert _create(server, "api_ds").status_code == 409
    csv = b"ts,tenant,n\n2026-11-22 10:00:00,acme,1\n2026-11-22 10:00:01,globex,2\nbad,row\n"
    r = _append(server, "api_ds", csv, "csv")
    assert r.status_code == 200, r.text  # the bad row is quarantined, the rest kept
    assert (r.json()["successful_rows"], r.json()["quarantine_rows"]) == (2, 1)
    assert r.json()["datasource"]["created_at"] > "2026"
    nd = ndjson({"ts": "2026-11-22 10:00:02", "t": {"id": "acme"}, "n": 4})
    r = requests.post(f"{server.url}/v1/datasources/api_ds/append", params={"format": "ndjson"},
                      data=nd, headers=_auth(server.admin_token))  # fmt: skip
    assert r.status_code == 200, r.text
    assert scalar(server, "SELECT sum(n) FROM api_ds") == 7
    assert scalar(server, "SELECT tenant FROM api_ds WHERE n = 4") == "acme"

    r = requests.post(f"{server.url}/v0/datasources/api_ds/delete",
                      data={"delete_condition": "tenant = 'globex'"},
                      headers=_auth(server.admin_token))  # fmt: skip
    assert r.status_code == 200, r.text
    assert scalar(server, "SELECT sum(n) FROM api_ds") == 5
    r = requests.post(f"{server.url}/v0/datasources/api_ds/delete",
                      data={"delete_condition": "n IN (SELECT 1 FROM system.one)"},
                      headers=_auth(server.admin_token))  # fmt: skip
    assert r.status_code == 400

    r = requests.post(f"{server.url}/v0/datasources/api_ds/truncate",
                      headers=_auth(server.admin_token))  # fmt: skip
    assert r.status_code == 200
    assert scalar(server, "SELECT count() FROM api_ds") == 0
    assert scalar(server, "SELECT count() FROM api_ds_quarantine") == 0

    r = requests.delete(f"{server.url}/v0/datasources/api_ds", headers=_auth(server.admin_token))
    assert r.status_code == 204
    assert "api_ds" not in server.store.datasources
    r = requests.get(f"{server.url}/v0/datasources/api_ds", headers=_auth(server.admin_token))
    assert r.status_code == 404


def test_create_token_scope(server: LocalServer) -> None:
    creator = _token(server, "DATASOURCES:CREATE")
    reader = _token(server, "DATASOURCES:READ:tb_logs")
    assert _create(server, "by_reader", reader).status_code == 403
    assert _create(server, "by_creator", creator).status_code == 200
    assert _append(server, "by_creator", b"2026-11-22 10:00:00,a,1\n", "csv",
                   creator).status_code == 200  # fmt: skip
    r = requests.delete(f"{server.url}/v0/datasources/by_creator", headers=_auth(creator))
    assert r.status_code == 403  # dropping needs ADMIN


@pytest.mark.parametrize("params", [
    {"engine": "File(CSV)"},
    {"engine": "URL('http://127.0.0.1:1/x', CSV)"},
    {"schema": "`a` String DEFAULT file('/etc/passwd')"},
    {"schema": "`a` String DEFAULT currentDatabase()"},
    {"engine_settings": "disk = disk(type = local, path = '/')"},
    {"engine_settings": "storage_policy = 'x'"},
    {"engine_ttl": "ts + INTERVAL 1 DAY) SETTINGS x = (1"},
    {"url": "http://example.com/data.csv"},
    {"schema": "`a` String) ENGINE = File(TSV, '/etc/passwd') /*"},
    {"schema": "`a` String) ENGINE = Memory /*"},
    {"schema": "`a` Nullable(String))"},
    {"schema": "`a` String CODEC(ZSTD(1))) ENGINE = Memory"},
])  # fmt: skip
def test_unsafe_datasource_definitions_are_refused(server: LocalServer,
                                                   params: dict[str, str]) -> None:  # fmt: skip
    r = _create(server, "unsafe_ds", **params)
    assert r.status_code == 400, r.text
    assert "unsafe_ds" not in server.store.datasources


def test_row_filter_holds_on_data_sources_api_appends(server: LocalServer) -> None:
    assert _create(server, "tenant_ds").status_code == 200
    token = _token(server, "DATASOURCES:APPEND:tenant_ds", filter="tenant = 'acme'")
    csv = b"2026-11-22 10:00:00,acme,1\n2026-11-22 10:00:00,globex,2\n"
    r = _append(server, "tenant_ds", csv, "csv", token)
    assert r.status_code == 422
    assert scalar(server, "SELECT groupArray(tenant) FROM tenant_ds") == ["acme"]
    assert requests.post(f"{server.url}/v0/datasources/tenant_ds/truncate",
                         headers=_auth(token)).status_code == 403  # fmt: skip


def test_events_api_refuses_an_unknown_datasource_clearly(server: LocalServer) -> None:
    r = post(server, ndjson(event()), ds="never_created")
    assert r.status_code == 404
    assert "does not infer a schema" in r.json()["error"]
    assert "/v0/datasources" in r.json()["error"]


def test_gzip_appends_are_decoded_within_a_bound(server: LocalServer) -> None:
    assert _create(server, "gz_ds").status_code == 200
    rows = ndjson(*({"ts": "2026-11-22 10:00:00", "t": {"id": "g"}, "n": 1} for _ in range(3)))
    headers = {**_auth(server.admin_token), "Content-Encoding": "gzip"}
    r = requests.post(f"{server.url}/v1/datasources/gz_ds/append", params={"format": "ndjson"},
                      data=gzip.compress(rows), headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text
    assert scalar(server, "SELECT count() FROM gz_ds") == 3
    bomb = gzip.compress(b"\n" * (MAX_DECODED + 1))
    r = requests.post(f"{server.url}/v1/datasources/gz_ds/append", params={"format": "csv"},
                      data=bomb, headers=headers)  # fmt: skip
    assert r.status_code == 413
    assert scalar(server, "SELECT count() FROM gz_ds") == 3
