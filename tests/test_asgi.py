"""TinybirdASGIMiddleware with the real FastAPI and Starlette, driven through httpx."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tblog
from tblog.integrations.asgi import TinybirdASGIMiddleware
from tests.eventsapi import EventsAPI

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def by_event(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["extra"].get("http_event") == kind]


def fastapi_app(log: logging.Logger, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        log.info("async view %d", user_id)
        return {"id": user_id}

    @app.get("/sync/{n}")
    def sync_view(n: int) -> dict[str, int]:  # runs in a worker thread
        log.info("sync view %d", n)
        return {"n": n}

    @app.get("/fail")
    async def fail() -> None:
        raise LookupError("nothing here")

    @app.get("/health")
    async def health() -> str:
        return "ok"

    app.add_middleware(TinybirdASGIMiddleware, logger=log, **options)
    return app


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def test_fastapi_request_event_route_and_traceparent(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    app = fastapi_app(logger, log_requests=True)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with client(app) as c:
            first = await c.get(
                "/users/42", headers={"traceparent": TRACEPARENT, "user-agent": "httpx-test"}
            )
            second = await c.get("/sync/3")
            return first, second

    first, second = asyncio.run(run())
    assert first.status_code == 200
    assert first.headers["x-request-id"] == TRACE
    assert HEX32.match(second.headers["x-request-id"])
    assert handler.flush(5)
    rows = events_api.rows()
    assert events_api.quarantine["tb_logs"] == []
    lines = {r["message"]: r for r in rows}
    assert lines["async view 42"]["trace_id"] == TRACE
    assert lines["sync view 3"]["trace_id"] == second.headers["x-request-id"]
    response = next(r for r in by_event(rows, "response") if r["trace_id"] == TRACE)
    extra = response["extra"]
    assert extra["method"] == "GET"
    assert extra["path"] == "/users/42"
    assert extra["route"] == "/users/{user_id}"
    assert extra["status"] == 200
    assert extra["duration_ms"] > 0
    assert extra["user_agent"] == "httpx-test"
    assert extra["client_addr"] == "127.0.0.1"
    assert response["span_id"] == lines["async view 42"]["span_id"]
    assert [r["extra"]["path"] for r in by_event(rows, "request")] == ["/users/42", "/sync/3"]


def test_fastapi_error_event_and_skip_paths(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    app = fastapi_app(logger, skip_paths=["/health"])

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with client(app) as c:
            return await c.get("/fail", headers={"x-request-id": "req-77"}), await c.get("/health")

    failed, health = asyncio.run(run())
    assert failed.status_code == 500
    assert health.status_code == 200
    assert handler.flush(5)
    rows = events_api.rows()
    [error] = by_event(rows, "error")
    assert error["trace_id"] == "req-77"
    assert error["exception"]["type"] == "LookupError"
    assert error["exception"]["message"] == "nothing here"
    assert 'raise LookupError("nothing here")' in error["exception"]["stacktrace"]
    assert error["extra"]["route"] == "/fail"
    [response] = by_event(rows, "response")
    assert response["extra"]["path"] == "/fail"
    assert response["extra"]["status"] == 500
    assert response["level"] == "ERROR"


def test_concurrent_asyncio_requests_keep_their_trace_ids(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    n = 8
    arrived = 0
    all_in: asyncio.Event | None = None

    async def endpoint(request: Request) -> PlainTextResponse:
        nonlocal arrived
        assert all_in is not None
        name = request.path_params["name"]
        logger.info("start %s", name)
        arrived += 1
        if arrived == n:
            all_in.set()
        await all_in.wait()  # every request is in flight at once, interleaved on one loop
        logger.info("end %s", name)
        return PlainTextResponse(name)

    app = TinybirdASGIMiddleware(
        Starlette(routes=[Route("/r/{name}", endpoint)]), logger=logger, log_responses=False
    )

    async def run() -> list[httpx.Response]:
        nonlocal all_in
        all_in = asyncio.Event()
        async with client(app) as c:
            return await asyncio.gather(
                *(c.get(f"/r/n{i}", headers={"x-request-id": f"id-{i}"}) for i in range(n))
            )

    responses = asyncio.run(run())
    assert [r.headers["x-request-id"] for r in responses] == [f"id-{i}" for i in range(n)]
    assert handler.flush(5)
    rows = events_api.rows()
    assert len(rows) == 2 * n
    for row in rows:
        name = row["message"].split()[1]
        assert row["trace_id"] == f"id-{name[1:]}", row
    assert tblog.get_trace_id() == ""


def test_other_scopes_pass_through_and_app_headers_are_kept(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x", headers={"x-app": "1", "x-request-id": "from-app"})

    app = TinybirdASGIMiddleware(
        Starlette(routes=[Route("/", endpoint)]), logger=logger, response_header="X-Request-ID"
    )

    async def run() -> httpx.Response:
        async with client(app) as c:
            return await c.get("/", headers={"traceparent": TRACEPARENT})

    resp = asyncio.run(run())
    assert resp.headers["x-app"] == "1"
    assert resp.headers.get_list("x-request-id") == [TRACE]
    seen: list[str] = []

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(
        TinybirdASGIMiddleware(lifespan_app, logger=logger)({"type": "lifespan"}, None, None)
    )  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert handler.flush(5)
    assert len(events_api.rows()) == 1


def test_bad_options_fail_at_set_up() -> None:
    with pytest.raises(ValueError, match="skip_paths"):
        TinybirdASGIMiddleware(Starlette(), skip_paths=["health"])
