"""``tblog local``'s SQL API details as Tinybird's: body Content-Type, 64-bit integer quoting,
``pipeline=``, and CORS for browser ingestion from an allowed origin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tblog.local.server import LocalServer
from tests.localserver import event, ndjson, post, serve

ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("sqlapi"), allowed_origins=[ORIGIN])


def _auth(server: LocalServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


def _post_sql(server: LocalServer, body: str, ctype: str | None, **params: str) -> Any:
    headers = _auth(server)
    if ctype is not None:
        headers["Content-Type"] = ctype
    answer = requests.post(
        f"{server.url}/v0/sql", params=params, data=body.encode(), headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_text_plain_body_is_the_query_even_with_an_ampersand_q(server: LocalServer) -> None:
    got = _post_sql(server, "SELECT 'a&q=b' AS s FORMAT JSON", "text/plain")
    assert got["data"] == [{"s": "a&q=b"}]


def test_text_plain_body_starting_like_a_form_is_the_query(server: LocalServer) -> None:
    got = _post_sql(server, "SELECT 1 AS q FORMAT JSON", "text/plain; charset=utf-8")
    assert got["data"] == [{"q": 1}]


def test_form_body_is_read_as_a_form(server: LocalServer) -> None:
    got = _post_sql(
        server, "q=SELECT+'x%26y'+AS+s+FORMAT+JSON", "application/x-www-form-urlencoded"
    )
    assert got["data"] == [{"s": "x&y"}]


def test_form_body_without_q_is_the_query(server: LocalServer) -> None:
    # curl --data "SELECT ..." sends a form Content-Type; Tinybird's docs show it working
    got = _post_sql(server, "SELECT 2 AS n FORMAT JSON", "application/x-www-form-urlencoded")
    assert got["data"] == [{"n": 2}]


def test_64bit_integers_unquoted_by_default_as_tinybird(server: LocalServer) -> None:
    q = "SELECT toUInt64(7) AS u, toInt64(-7) AS i FORMAT JSON"
    answer = requests.get(f"{server.url}/v0/sql", params={"q": q}, headers=_auth(server))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == [{"u": 7, "i": -7}]


@pytest.mark.parametrize(("flag", "want"), [("0", {"u": 7}), ("1", {"u": "7"})])
def test_64bit_integer_quoting_follows_the_parameter(
    server: LocalServer, flag: str, want: dict[str, Any]
) -> None:
    params = {"q": "SELECT toUInt64(7) AS u FORMAT JSON",
              "output_format_json_quote_64bit_integers": flag}  # fmt: skip
    answer = requests.get(f"{server.url}/v0/sql", params=params, headers=_auth(server))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == [want]
    form = _post_sql(server, f"output_format_json_quote_64bit_integers={flag}&q={params['q']}",
                     "application/x-www-form-urlencoded")  # fmt: skip
    assert form["data"] == [want]


def test_64bit_integer_quoting_rejects_other_values(server: LocalServer) -> None:
    params = {"q": "SELECT 1", "output_format_json_quote_64bit_integers": "yes; DROP"}
    answer = requests.get(f"{server.url}/v0/sql", params=params, headers=_auth(server))
    assert answer.status_code == 400
    assert "output_format_json_quote_64bit_integers" in answer.json()["error"]


def test_pipeline_parameter_is_accepted(server: LocalServer) -> None:
    params = {"q": "SELECT 3 AS n FORMAT JSON", "pipeline": "some_pipe",
              "release_replacements": "true"}  # fmt: skip
    answer = requests.get(f"{server.url}/v0/sql", params=params, headers=_auth(server))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == [{"n": 3}]


def test_preflight_allows_browser_ingestion(server: LocalServer) -> None:
    answer = requests.options(
        f"{server.url}/v0/events?name=tb_logs",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    methods = {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


def test_preflight_refused_for_other_origins(server: LocalServer) -> None:
    answer = requests.options(
        f"{server.url}/v0/events",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert answer.status_code == 403
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_browser_ingestion_response_carries_cors_headers(server: LocalServer) -> None:
    answer = post(server, ndjson(event(message="from a browser")), headers={"Origin": ORIGIN})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in answer.headers["Vary"]
    exposed = {
        h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"retry-after", "x-ratelimit-remaining"} <= exposed
    # an error answer carries them too, or the page cannot read why it failed
    bad = post(server, b"not json\n", headers={"Origin": ORIGIN})
    assert bad.status_code == 400
    assert bad.headers["Access-Control-Allow-Origin"] == ORIGIN
