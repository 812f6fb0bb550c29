"""ASGI middleware (FastAPI, Starlette, any ASGI app): request events and trace context.

``app.add_middleware(TinybirdASGIMiddleware, skip_paths=["/health"])`` in FastAPI
or Starlette, or ``app = TinybirdASGIMiddleware(app)`` for any ASGI application.
Each HTTP request runs with its own trace id in tblog's trace context (a
``contextvars`` value: concurrent requests in separate asyncio tasks never see
each other's), returned in a response header; the response event carries the
matched route when the framework records it (Starlette and FastAPI put it in
``scope["route"]``).  An exception that escapes the application is logged (error
event, status 500) and re-raised.  Other scope types (websocket, lifespan) pass
through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tblog.integrations._http import HttpLogging

__all__ = ["TinybirdASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TinybirdASGIMiddleware:
    """Wrap an ASGI app: request/response/error events and a trace context per request.

    Options are those of every tblog web integration: ``logger``, ``skip_paths``,
    ``log_requests``, ``log_responses``, ``response_header``, ``trust_headers``.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.http = HttpLogging(**options)
        header = self.http.response_header
        self._header = header.lower().encode("latin-1") if header else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        http = self.http
        headers = _headers(scope)
        client = scope.get("client")
        state = http.begin(
            method=str(scope.get("method") or "GET"),
            path=str(scope.get("root_path") or "") + str(scope.get("path") or "/"),
            traceparent=headers.get("traceparent"),
            request_id=headers.get("x-request-id"),
            client=str(client[0]) if client else "",
            user_agent=headers.get("user-agent", ""),
        )
        extra = (
            [(self._header, state.trace_id.encode("latin-1", "replace"))] if self._header else []
        )

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "http.response.start":
                state.status = int(message.get("status") or 0)
                if extra:
                    message = dict(message)  # never modify the application's message
                    kept = [h for h in message.get("headers") or () if h[0].lower() != self._header]
                    message["headers"] = [*kept, *extra]
            await send(message)

        with state.activate():
            http.started(state)
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                state.route = _route(scope)
                http.failed(state, exc)
                if not state.status:  # no response started: the server answers 500
                    state.status = 500
                http.finished(state)
                raise
            state.route = _route(scope)
            http.finished(state)


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers this middleware reads, decoded (first value wins)."""
    wanted = {b"traceparent", b"x-request-id", b"user-agent"}
    found: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        key = bytes(name).lower()
        if key in wanted:
            text = bytes(value).decode("latin-1")
            found.setdefault(key.decode("latin-1"), text)
    return found


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None) if route is not None else None
    return path if isinstance(path, str) else ""
