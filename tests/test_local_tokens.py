"""Token scopes and tenant row filters of ``tblog local``, on writes and on reads."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests

import tblog
from tblog.local.server import LocalServer
from tblog.local.tokens import TokenError, Tokens
from tests.localserver import event, ndjson, post, scalar, serve, sql

TENANT_FILTER = "JSONExtractString(extra, 'tenant_id') = 'acme'"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("tokens"))


def _new_token(server: LocalServer, *scopes: str, row_filter: str = "") -> str:
    data: dict[str, object] = {"name": "t", "scope": list(scopes)}
    if row_filter:
        data["filter"] = row_filter
    r = requests.post(
        f"{server.url}/v0/tokens",
        data=data,
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def test_append_token_appends_but_cannot_read(server: LocalServer) -> None:
    token = _new_token(server, "DATASOURCES:APPEND:tb_logs")
    assert post(server, ndjson(event(app_name="appender")), token=token).status_code == 200
    r = sql(server, "SELECT count() FROM tb_logs", token)
    assert r.status_code == 403
    assert "READ" in r.json()["error"]
    assert scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'appender'") == 1


def test_read_token_reads_but_cannot_append_or_create_tokens(server: LocalServer) -> None:
    post(server, ndjson(event(app_name="readable")))
    token = _new_token(server, "DATASOURCES:READ:tb_logs")
    assert post(server, ndjson(event()), token=token).status_code == 403
    assert (
        int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'readable'", token)) == 1
    )
    r = requests.post(
        f"{server.url}/v0/tokens",
        data={"scope": "ADMIN"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403


def test_unknown_scope_is_refused(server: LocalServer) -> None:
    r = requests.post(
        f"{server.url}/v0/tokens",
        data={"scope": "EVERYTHING"},
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert r.status_code == 400
    with pytest.raises(TokenError):
        Tokens().add("x", [])


def test_tenant_filter_holds_on_writes(server: LocalServer) -> None:
    token = _new_token(server, "DATASOURCES:APPEND:tb_logs", row_filter=TENANT_FILTER)
    rows = [
        event(app_name="tw", message="mine", extra={"tenant_id": "acme"}),
        event(app_name="tw", message="theirs", extra={"tenant_id": "globex"}),
        event(app_name="tw", message="nobody's"),
    ]
    r = post(server, ndjson(*rows), token=token)
    assert r.status_code == 422
    assert r.json()["successful_rows"] == 1
    assert r.json()["rejected_rows"] == 2
    messages = sql(server, "SELECT message FROM tb_logs WHERE app_name = 'tw'").json()["data"]
    assert messages == [{"message": "mine"}]
    r = post(server, ndjson(rows[1]), token=token)
    assert r.status_code == 403
    assert r.json()["rejected_rows"] == 1
    # A row ClickHouse cannot parse does not make the tenant's other rows rejected.
    r = post(server, ndjson(rows[0], event(app_name="tw", timestamp="2026-02-30",
                                           extra={"tenant_id": "acme"})), token=token)  # fmt: skip
    assert r.json() == {"successful_rows": 1, "quarantined_rows": 1}
    assert r.status_code == 200


def test_tenant_filter_holds_on_reads(server: LocalServer) -> None:
    post(server, ndjson(
        event(app_name="tr", extra={"tenant_id": "acme"}),
        event(app_name="tr", extra={"tenant_id": "acme"}),
        event(app_name="tr", extra={"tenant_id": "globex"}),
    ))  # fmt: skip
    token = _new_token(server, "DATASOURCES:READ:tb_logs", row_filter=TENANT_FILTER)
    assert int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'tr'")) == 3
    assert int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'tr'", token)) == 2
    escapes = [
        "SELECT count() FROM default.tb_logs",
        "SELECT count() FROM merge('default', 'tb_logs')",
        "SELECT count() FROM system.parts",
    ]
    for query in escapes:
        assert sql(server, query, token).status_code == 403, query
    tenants = sql(
        server,
        "WITH x AS (SELECT * FROM tb_logs) SELECT DISTINCT JSONExtractString(extra, 'tenant_id') "
        "AS t FROM x WHERE app_name = 'tr'",
        token,
    ).json()["data"]
    assert tenants == [{"t": "acme"}]


def test_handler_with_a_tenant_token_delivers_its_own_rows(server: LocalServer) -> None:
    token = _new_token(server, "DATASOURCES:APPEND:tb_logs", row_filter=TENANT_FILTER)
    handler = tblog.TinybirdLoggingHandler(server.url, token, "tenant-app")
    log = logging.getLogger("tests.local.tenant")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        with tblog.bound(tenant_id="acme"):
            for i in range(20):
                log.info("event %d", i)
        assert handler.flush(timeout=30)
    finally:
        log.removeHandler(handler)
        handler.close()
    assert int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'tenant-app'")) == 20


def test_datasources_listing_needs_a_scope(server: LocalServer) -> None:
    token = _new_token(server, "DATASOURCES:READ:tb_logs")
    r = requests.get(f"{server.url}/v0/datasources", headers={"Authorization": f"Bearer {token}"})
    assert [d["name"] for d in r.json()["datasources"]] == ["tb_logs"]
    r = requests.get(f"{server.url}/v0/datasources")
    assert r.status_code == 403


def test_token_repr_hides_the_value() -> None:
    token = Tokens().add("x", ["ADMIN"], value="p.secret-value-123456")
    assert "p.secret-value-123456" not in repr(token)
