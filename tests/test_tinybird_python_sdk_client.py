"""Tinybird's ``tinybird-python-sdk`` (0.3.7: ``tb.api.API``, ``tb.datasource.Datasource``)
against ``tblog local``: it ingests through the Events API and queries through the SQL API.

The SDK is in the test venv (the ``test`` extra pins it for tests/test_sdk_parity.py); it is
a plain ``requests`` client, so it runs in-process against a real server on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tblog.local.server import LocalServer
from tests.localserver import event, scalar, serve

api_module = pytest.importorskip("tb.api")
datasource_module = pytest.importorskip("tb.datasource")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("pysdk"))


def _api(server: LocalServer, token: str | None = None) -> Any:
    return api_module.API(token or server.admin_token, server.url, retry_total=0)


def test_datasource_ingests_rows(server: LocalServer) -> None:
    ds = datasource_module.Datasource("tb_logs", server.admin_token, api_url=server.url)
    with ds:  # leaving the block flushes the buffer: one POST /v0/events?wait=false
        ds << event(message="pysdk one", app_name="pysdk")
        ds << json.dumps(event(message="pysdk two", app_name="pysdk"))
        ds += json.dumps(event(message="pysdk three", app_name="pysdk")).encode()
    n = scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'pysdk'")
    assert int(n) == 3


def test_api_queries_with_get(server: LocalServer) -> None:
    answer = _api(server).get("sql", params={"q": "SELECT 1 + 1 AS two FORMAT JSON"})
    assert answer.json()["data"] == [{"two": 2}]


def test_api_queries_with_a_plain_post_body(server: LocalServer) -> None:
    text = "SELECT 'a&q=b' AS s FORMAT JSON"
    answer = _api(server).post("sql", data=text.encode())
    assert answer.json()["data"] == [{"s": "a&q=b"}]


def test_api_lists_datasources(server: LocalServer) -> None:
    answer = _api(server).get("datasources")
    names = {d["name"] for d in answer.json()["datasources"]}
    assert "tb_logs" in names


def test_api_raises_on_a_refused_token(server: LocalServer) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        _api(server, "p.not-a-token").get("sql", params={"q": "SELECT 1"})
    assert caught.value.response is not None and caught.value.response.status_code == 403
