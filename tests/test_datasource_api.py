"""tblog.Datasource / AsyncDatasource / API / AsyncAPI against real loopback servers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import tblog
from tblog.datasource import APIError
from tests.eventsapi import EventsAPI, free_port_refusing

TOKEN = "p.api-token-0123456789abcdefghij"


class RestServer:
    """Any path, any method; answers from a script (default 200 with the request echoed)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.gate: threading.Event | None = None  # when set, requests wait on it
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                server._handle(self)

            do_GET = do_POST = do_DELETE = _any  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        req = {
            "method": h.command,
            "path": url.path,
            "query": {k: v[-1] for k, v in parse_qs(url.query).items()},
            "raw_path": h.path,
            "headers": dict(h.headers.items()),
            "body": body,
        }
        self.requests.append(req)
        if self.gate is not None:
            self.gate.wait(10)
        status, headers, answer = (
            self.script.pop(0) if self.script else (200, {}, {"ok": True, "path": url.path})
        )
        raw = json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(raw)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rest() -> Iterator[RestServer]:
    server = RestServer()
    yield server
    server.close()


def _api(rest: RestServer, **kw: Any) -> tuple[tblog.API, list[float]]:
    api = tblog.API(TOKEN, rest.url, **kw)
    slept: list[float] = []
    api._sleep = slept.append  # record waits instead of sleeping
    return api, slept


# -- Datasource ---------------------------------------------------------------------------


def test_datasource_appends_are_batched_and_delivered_on_exit(events_api: EventsAPI) -> None:
    row = {"id": 1, "nested": {"a": [1, 2]}}
    with tblog.Datasource(
        "orders", events_api.token, api_url=events_api.url, flush_interval=60
    ) as ds:
        ds << row << {"id": 2}
        ds += {"id": 3}
        ds.append('{"id": 4}')
        ds.append(b'{"id": 5}\n{"id": 6}\n')
        row["nested"]["a"].append(3)  # after the append: the buffered row is a snapshot
        assert events_api.requests == []  # nothing was sent on the caller's thread
    assert [r["id"] for r in events_api.rows("orders")] == [1, 2, 3, 4, 5, 6]
    assert events_api.rows("orders")[0]["nested"] == {"a": [1, 2]}
    assert row == {"id": 1, "nested": {"a": [1, 2, 3]}}  # never mutated by tblog
    [req] = events_api.requests
    assert req.params["name"] == "orders"
    assert req.headers["Authorization"] == f"Bearer {events_api.token}"
    assert events_api.token not in req.path + json.dumps(req.params)
    stats = ds.stats()
    assert stats["sent"] == 6 and stats["batches"] == 1 and stats["dropped_total"] == 0


def test_datasource_waits_out_a_rate_limit(events_api: EventsAPI) -> None:
    events_api.fail_next(1, status=429, headers={"Retry-After": "0"})
    ds = tblog.Datasource("orders", events_api.token, api_url=events_api.url)
    ds << {"id": 1}
    assert ds.flush(10)
    assert events_api.rows("orders") == [{"id": 1}]
    assert [r.status for r in events_api.requests] == [429, 202]
    assert ds.stats()["retries"] == 1
    ds.close()


def test_datasource_counts_what_it_cannot_take(events_api: EventsAPI) -> None:
    ds = tblog.Datasource("orders", events_api.token, api_url=events_api.url)
    ds << 42  # type: ignore[operator]
    ds.close()
    ds << {"late": True}
    assert ds.stats()["dropped"] == {"not_a_row": 1, "closed": 1}
    assert events_api.rows("orders") == []


def test_datasource_bad_configuration_fails_at_set_up(events_api: EventsAPI) -> None:
    with pytest.raises(ValueError, match="datasource_name"):
        tblog.Datasource("bad name", events_api.token, api_url=events_api.url)
    with pytest.raises(ValueError, match="no Tinybird token"):
        tblog.Datasource("orders", None, api_url=events_api.url)
    ds = tblog.Datasource("orders", events_api.token, api_url=events_api.url)
    assert events_api.token not in repr(ds)
    ds.close()


def test_async_datasource_delivers_with_the_sdk_syntax(events_api: EventsAPI) -> None:
    async def main() -> dict[str, Any]:
        async with tblog.AsyncDatasource("orders", events_api.token, api_url=events_api.url) as ds:
            await ds << {"id": 1}
            await (ds << {"id": 2})
            assert await ds.append({"id": 3})
            ds += {"id": 4}
        return ds.stats()

    stats = asyncio.run(main())
    assert [r["id"] for r in events_api.rows("orders")] == [1, 2, 3, 4]
    assert stats["sent"] == 4 and stats["dropped_total"] == 0


def test_async_datasource_flush_does_not_block_the_loop(events_api: EventsAPI) -> None:
    gate = threading.Event()
    release_after = 20

    def slow(_req: Any) -> None:
        gate.wait(10)  # the server answers only once the loop has ticked enough

    events_api.fault = slow  # type: ignore[assignment]

    async def main() -> tuple[bool, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == release_after:
                    gate.set()
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        ds = tblog.AsyncDatasource("orders", events_api.token, api_url=events_api.url)
        await ds << {"id": 1}
        ok = await ds.flush(10)
        task.cancel()
        await ds.close()
        return ok, ticks

    ok, ticks = asyncio.run(main())
    assert ok and ticks >= release_after  # the loop ran while the request was in flight
    assert events_api.rows("orders") == [{"id": 1}]


# -- API ----------------------------------------------------------------------------------


def test_api_get_and_post_send_the_token_only_in_the_header(rest: RestServer) -> None:
    api, _ = _api(rest)
    headers = {"X-Custom": "1"}
    response = api.get("pipes/top.json", params={"limit": 3}, headers=headers)
    assert response.json() == {"ok": True, "path": "/v0/pipes/top.json"}
    api.post("/datasources", params={"name": "x", "mode": "append"}, data=b"a,b\n")
    assert headers == {"X-Custom": "1"}  # the caller's dict is not touched
    get, post = rest.requests
    assert (get["method"], get["query"]) == ("GET", {"limit": "3"})
    assert get["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert get["headers"]["X-Custom"] == "1"
    assert (post["method"], post["path"], post["body"]) == ("POST", "/v0/datasources", b"a,b\n")
    assert all(TOKEN not in r["raw_path"] for r in rest.requests)
    assert TOKEN not in repr(api)
    api.close()


def test_api_retries_429_as_the_server_asks(rest: RestServer) -> None:
    rest.script = [
        (429, {"Retry-After": "2"}, {"error": "too many"}),
        (429, {"X-RateLimit-Reset": "4"}, {"error": "too many"}),
        (200, {}, {"done": 1}),
    ]
    api, slept = _api(rest)
    assert api.send("sql", data={"q": "select 1"}).json() == {"done": 1}
    assert slept == [2.0, 4.0]
    assert len(rest.requests) == 3


def test_api_waits_for_an_exhausted_rate_limit_window(rest: RestServer) -> None:
    rest.script = [(200, {"X-RateLimit-Limit": "6", "X-RateLimit-Remaining": "0",
                          "X-RateLimit-Reset": "3"}, {})]  # fmt: skip
    api, slept = _api(rest)
    api._clock = lambda: 100.0
    api.get("pipes/a.json")
    assert slept == [] and api.rate_limit_remaining == 0 and api.rate_limit_limit == 6
    api.get("pipes/a.json")
    assert slept == [3.0]


def test_api_gives_up_with_a_clear_token_free_error(rest: RestServer) -> None:
    rest.script = [(503, {"Retry-After": "0"}, {"error": "busy"})] * 3
    api, slept = _api(rest, max_retries=2)
    with pytest.raises(APIError, match=r"HTTP 503 from GET /v0/pipes/p.json: busy") as info:
        api.get("pipes/p.json?x=1")
    assert info.value.status == 503 and len(rest.requests) == 3 and slept == [0.0, 0.0]
    assert TOKEN not in str(info.value)

    rest.script = [(404, {}, {"error": "Pipe not found"})]
    with pytest.raises(APIError, match="HTTP 404") as info:
        api.get("pipes/missing.json")
    assert info.value.status == 404 and len(rest.requests) == 4  # not retried


def test_api_network_errors_are_retried_then_raised() -> None:
    api = tblog.API(TOKEN, free_port_refusing(), max_retries=1)
    slept: list[float] = []
    api._sleep = slept.append
    with pytest.raises(APIError, match="ConnectionError after 2 attempts") as info:
        api.get("pipes/p.json")
    assert info.value.status == 0 and len(slept) == 1
    assert TOKEN not in str(info.value)


def test_async_api_really_sends_and_keeps_the_loop_free(rest: RestServer) -> None:
    rest.gate = threading.Event()

    async def main() -> tuple[Any, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 20:
                    assert rest.gate is not None
                    rest.gate.set()
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        async with tblog.AsyncAPI(TOKEN, rest.url) as api:
            response = await api.post(
                "datasources", params={"name": "ds", "mode": "append", "format": "ndjson"}
            )
            again = await api.get("pipes/x.json")
        task.cancel()
        return (await response.json(), again.status_code), ticks  # aiohttp-like, as the SDK's

    (body, status), ticks = asyncio.run(main())
    assert body == {"ok": True, "path": "/v0/datasources"} and status == 200
    assert ticks >= 20
    assert rest.requests[0]["query"] == {"name": "ds", "mode": "append", "format": "ndjson"}
    assert rest.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_datasource_drops_an_oversized_row_and_counts_it(events_api: EventsAPI) -> None:
    ds = tblog.Datasource("orders", events_api.token, api_url=events_api.url, max_event_bytes=1024)
    ds << {"blob": "x" * 2000} << {"id": 1}
    ds.append(b"\n\n")  # nothing but blank lines: nothing buffered
    assert ds.close(5)
    assert events_api.rows("orders") == [{"id": 1}]
    assert ds.stats()["dropped"] == {"too_large": 1}
