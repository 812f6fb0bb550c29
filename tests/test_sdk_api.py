"""The Tinybird Python SDK's names and signatures, accepted by tblog (issue 17 item 2).

Keyword names of the SDK's handlers (``tinybird_admin_token=``, ``tinybird_api_url=``,
``ds_name=None``), ``API``'s ``retry_total``/``backoff_factor``/``token``, ``AsyncAPI``'s
aiohttp-like responses and ``get_json``/``post_json``, and the LiteLLM handler names; all
against real loopback servers (tests/eventsapi.py and a small REST server).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import tblog
from tblog.datasource import APIError
from tests.eventsapi import EventsAPI

# -- the handlers' keyword names ------------------------------------------------------------


def _log_one(handler: logging.Handler, text: str) -> None:
    log = logging.getLogger(f"sdk-names.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        log.info(text)
    finally:
        log.removeHandler(handler)


def test_handler_takes_the_sdks_keyword_names(events_api: EventsAPI) -> None:
    handler = tblog.TinybirdLoggingHandler(
        tinybird_admin_token=events_api.token,
        tinybird_api_url=events_api.url,
        app_name="kw-app",
        ds_name=None,
    )
    try:
        assert handler.ds_name == "tb_logs" and handler.api_url == events_api.url
        _log_one(handler, "by the SDK's keywords")
        assert handler.flush(5)
    finally:
        handler.close()
    [row] = events_api.rows("tb_logs")
    assert row["message"] == "by the SDK's keywords" and row["app_name"] == "kw-app"
    assert events_api.token not in repr(handler)


def test_queue_handler_takes_the_sdks_keyword_names(events_api: EventsAPI) -> None:
    handler = tblog.TinybirdLoggingQueueHandler(
        queue.Queue(),
        tinybird_admin_token=events_api.token,
        tinybird_api_url=events_api.url,
        app_name="kw-app",
        ds_name=None,
    )
    try:
        assert handler.handler.ds_name == "tb_logs"
        _log_one(handler, "queued by the SDK's keywords")
        assert handler.flush(5)
    finally:
        handler.close()
    assert [r["message"] for r in events_api.rows("tb_logs")] == ["queued by the SDK's keywords"]


def test_the_sdks_code_order_works_too(events_api: EventsAPI) -> None:
    """The SDK's code takes (token, api_url, app_name, ds_name); its README (api_url, token...)."""
    with pytest.warns(UserWarning, match="look like \\(token, api_url\\)"):
        handler = tblog.TinybirdLoggingHandler(events_api.token, events_api.url, "pos-app", None)
    try:
        _log_one(handler, "positional, SDK code order")
        assert handler.flush(5)
    finally:
        handler.close()
    assert [r["app_name"] for r in events_api.rows("tb_logs")] == ["pos-app"]


def test_one_name_per_argument() -> None:
    with pytest.raises(TypeError, match=r"token.*tinybird_admin_token"):
        tblog.TinybirdLoggingHandler(
            token="p.aaaaaaaaaaaaaaaaaaaaaaaa", tinybird_admin_token="p.bbbbbbbbbbbbbbbbbbbbbbbb"
        )
    with pytest.raises(TypeError, match=r"api_url.*tinybird_api_url"):
        tblog.TinybirdLoggingHandler(api_url="http://127.0.0.1:9", tinybird_api_url="http://x")


def test_the_same_value_under_both_names_is_accepted(events_api: EventsAPI) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handler = tblog.TinybirdLoggingHandler(
            events_api.url, tinybird_api_url=events_api.url, token=events_api.token
        )
    handler.close()


# -- API: retry_total, backoff_factor, token --------------------------------------------------

TOKEN = "p.sdk-api-token-0123456789abcdef"
NDJSON = b'{"id": 1}\n{"id": 2}\n'


def _sdk_api(events_api: EventsAPI, **kw: Any) -> tuple[tblog.API, list[float]]:
    api = tblog.API(events_api.token, events_api.url, **kw)
    slept: list[float] = []
    api._sleep = slept.append
    return api, slept


def test_api_retry_total_and_backoff_factor_drive_real_retries(events_api: EventsAPI) -> None:
    """As urllib3's ``Retry(total, backoff_factor)`` under the SDK: the first retry at once,
    then ``backoff_factor * 2 ** (retry - 1)``."""
    events_api.fail_next(3, status=503)
    api, slept = _sdk_api(events_api, retry_total=3, backoff_factor=0.25)
    with api:
        response = api.post("events?name=orders", data=NDJSON)
    assert response.status_code == 202 and response.json()["successful_rows"] == 2
    assert [r.status for r in events_api.requests] == [503, 503, 503, 202]
    assert slept == [0.0, 0.5, 1.0]
    assert events_api.rows("orders") == [{"id": 1}, {"id": 2}]
    assert api.max_retries == api.retry_total == 3 and api.backoff_factor == 0.25


def test_api_retry_total_bounds_the_attempts(events_api: EventsAPI) -> None:
    events_api.fail_next(3, status=503)
    api, slept = _sdk_api(events_api, retry_total=1)
    with pytest.raises(APIError, match="HTTP 503") as info:
        api.post("events?name=orders", data=NDJSON)
    assert info.value.status == 503 and len(events_api.requests) == 2 and len(slept) == 1
    api.close()


def test_api_retry_total_covers_network_errors(events_api: EventsAPI) -> None:
    events_api.fail_next(2, reset=True)  # the connection drops without an answer
    api, slept = _sdk_api(events_api, retry_total=2, backoff_factor=0.1)
    with api:
        assert api.post("events?name=orders", data=NDJSON).status_code == 202
    assert slept == [0.0, 0.2] and len(events_api.requests) == 3


def test_api_retry_total_positional_as_in_the_sdk(events_api: EventsAPI) -> None:
    """The SDK's ``API(token, api_url, version, retry_total, backoff_factor)``."""
    api = tblog.API(events_api.token, events_api.url, "v0", 0, 0.5)
    events_api.fail_next(1, status=503)
    with pytest.raises(APIError):
        api.post("events?name=orders", data=NDJSON)
    assert len(events_api.requests) == 1 and api.backoff_factor == 0.5
    with pytest.raises(ValueError, match="retry_total"):
        tblog.API(TOKEN, events_api.url, retry_total=2, max_retries=3)
    with pytest.raises(ValueError, match="backoff_factor"):
        tblog.API(TOKEN, events_api.url, backoff_factor=-1)
    api.close()


def test_api_token_attribute_is_exposed_but_never_shown(events_api: EventsAPI) -> None:
    api = tblog.API(events_api.token, events_api.url)
    assert api.token == events_api.token
    assert events_api.token not in repr(api) and events_api.token not in str(api)
    api.token = "p.wrong-token-0123456789abcdefgh"
    with pytest.raises(APIError, match="HTTP 403") as info:
        api.post("events?name=orders", data=NDJSON)  # the new token is the one sent
    assert "p.wrong-token" not in str(info.value)
    assert (
        events_api.requests[-1].headers["Authorization"]
        == "Bearer p.wrong-token-0123456789abcdefgh"
    )
    api.close()
    async_api = tblog.AsyncAPI(events_api.token, events_api.url, "v0", 1)
    assert async_api.token == events_api.token and async_api.retry_total == 1
    assert events_api.token not in repr(async_api)


# -- AsyncAPI: what the SDK returns ------------------------------------------------------------


class _Rest:
    """GET/POST/DELETE on any path: a scripted answer, else 200 echoing the path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        rest = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rest.requests.append((self.command, self.path, dict(self.headers.items())))
                status, headers, body = (
                    rest.script.pop(0)
                    if rest.script
                    else (200, {"Content-Type": "application/json"},
                          json.dumps({"path": self.path}).encode())
                )  # fmt: skip
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _any  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rest() -> Iterator[_Rest]:
    server = _Rest()
    yield server
    server.close()


def test_async_api_responses_are_shaped_like_the_sdks(rest: _Rest) -> None:
    rest.script = [(200, {"Content-Type": "text/plain", "X-Thing": "1"}, "héllo".encode())]

    async def main() -> dict[str, Any]:
        async with tblog.AsyncAPI(TOKEN, rest.url) as api:
            response = await api.get("pipes/top.json", params={"q": 1})
            text, body = await response.text(), await response.read()
            status, headers, ok = response.status, response.headers, response.ok
            again = await api.post("datasources", params={"name": "x"})
            data = await again.json()
            response.raise_for_status()
            async with await api.delete("datasources/x") as deleted:
                gone = deleted.status
            return {"text": text, "body": body, "status": status, "thing": headers["x-thing"],
                    "ok": ok, "data": data, "code": again.status_code, "gone": gone}  # fmt: skip

    got = asyncio.run(main())
    assert got == {"text": "héllo", "body": "héllo".encode(), "status": 200, "thing": "1",
                   "ok": True, "data": {"path": "/v0/datasources?name=x"}, "code": 200,
                   "gone": 200}  # fmt: skip
    assert [r[0] for r in rest.requests] == ["GET", "POST", "DELETE"]
    assert all(r[2]["Authorization"] == f"Bearer {TOKEN}" for r in rest.requests)


def test_async_api_get_json_and_post_json(rest: _Rest, events_api: EventsAPI) -> None:
    async def main() -> tuple[Any, Any]:
        async with tblog.AsyncAPI(TOKEN, rest.url) as api:
            got = await api.get_json("pipes/p.json", params={"limit": 2})
        async with tblog.AsyncAPI(events_api.token, events_api.url) as api:
            posted = await api.post_json("events?name=orders", data=NDJSON)
        return got, posted

    got, posted = asyncio.run(main())
    assert got == {"path": "/v0/pipes/p.json?limit=2"}
    assert posted == {"successful_rows": 2, "quarantined_rows": 0}
    assert events_api.rows("orders") == [{"id": 1}, {"id": 2}]


def test_async_api_errors_raise_without_the_token(rest: _Rest) -> None:
    rest.script = [(404, {"Content-Type": "application/json"}, b'{"error": "Pipe not found"}')]

    async def main() -> None:
        async with tblog.AsyncAPI(TOKEN, rest.url, retry_total=0) as api:
            await api.get_json("pipes/missing.json")

    with pytest.raises(APIError, match=r"HTTP 404.*Pipe not found") as info:
        asyncio.run(main())
    assert info.value.status == 404 and TOKEN not in str(info.value)


# -- LiteLLM: the SDK's handler names ----------------------------------------------------------


def _counting(cls: type) -> type:
    """``cls`` counting its finished callbacks (``tests.test_litellm.CountingShips``)."""
    from tests.test_litellm import CountingShips  # imports litellm: only when needed

    return type(f"Counting{cls.__name__}", (CountingShips, cls), {})


@pytest.mark.parametrize("name", ["TinybirdLitellmSyncHandler", "TinybirdLitellmAsyncHandler"])
def test_litellm_sdk_handler_names_and_signature(events_api: EventsAPI, name: str) -> None:
    """``TinybirdLitellmSyncHandler``/``AsyncHandler(api_url, tinybird_token, datasource_name,
    api_version)``: either one ships every call, sync or async, once."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download
    import litellm

    import tblog.litellm

    cls = getattr(tblog.litellm, name)
    assert name in tblog.litellm.__all__ and issubclass(cls, tblog.litellm.TinybirdLitellmHandler)
    handler = _counting(cls)(events_api.url, events_api.token, "llm_calls", "v0")
    assert handler.api_version == "v0" and handler.datasource_name == "llm_calls"
    assert handler.token == events_api.token and events_api.token not in repr(handler)
    messages = [{"role": "user", "content": "hi"}]
    saved = litellm.callbacks
    litellm.callbacks = [handler]
    try:
        litellm.completion(model="gpt-4o-mini", messages=messages, mock_response="sync answer")
        handler.wait_calls(1)

        async def main() -> None:
            await litellm.acompletion(
                model="gpt-4o-mini", messages=messages, mock_response="async answer"
            )
            await asyncio.to_thread(handler.wait_calls, 2)

        asyncio.run(main())
        assert handler.flush(10)
    finally:
        litellm.callbacks = saved
        handler.close()
    rows = events_api.rows("llm_calls")
    answers = sorted(r["response"]["choices"][0]["message"]["content"] for r in rows)
    assert answers == ["async answer", "sync answer"], answers  # each call once
    keyword = cls(
        api_url=events_api.url, tinybird_token=events_api.token, datasource_name="llm_calls",
        api_version="v0", flush_interval=60,
    )  # fmt: skip
    keyword.close()
    with pytest.raises(ValueError, match="api_version"):
        cls(events_api.url, events_api.token, "litellm", "v1")
