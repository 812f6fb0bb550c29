"""Django integration: ``TinybirdDjangoMiddleware``, one event per request and its trace id.

Add it near the top of ``MIDDLEWARE``::

    MIDDLEWARE = ["tblog.integrations.django.TinybirdDjangoMiddleware", ...]
    TBLOG_HTTP = {"skip_paths": ["/health"], "log_requests": False}  # optional

``TBLOG_HTTP`` takes the options of every tblog web integration (``logger``,
``skip_paths``, ``log_requests``, ``log_responses``, ``response_header``,
``trust_headers``); they are checked when Django builds its middleware chain.
The response event's ``route`` is the URL pattern that matched
(``request.resolver_match.route``); a view that raises gets an error event with
the exception (``process_exception``) before Django turns it into a 500.  The
middleware works in both sync (WSGI) and async (ASGI) deployments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.http import HttpRequest, HttpResponseBase
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tblog.integrations.django needs Django: pip install 'tblog[django]'"
    ) from _exc

from tblog.integrations._http import HttpLogging, RequestState

__all__ = ["SETTING", "TinybirdDjangoMiddleware"]

#: The Django setting holding the middleware's options (a dict).
SETTING = "TBLOG_HTTP"

_STATE_ATTR = "_tblog_request"


class TinybirdDjangoMiddleware:
    """Request events and trace context for Django; options come from ``settings.TBLOG_HTTP``."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], Any],
    ) -> None:
        self.get_response = get_response
        options = getattr(settings, SETTING, None) or {}
        if not isinstance(options, dict):
            raise ImproperlyConfigured(f"{SETTING} must be a dict of tblog HTTP options")
        try:
            self.http = HttpLogging(**options)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"{SETTING}: {exc}") from exc
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        state = self._begin(request)
        with state.activate():
            self.http.started(state)
            response = self.get_response(request)
            return self._end(request, state, response)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        state = self._begin(request)
        with state.activate():
            self.http.started(state)
            response = await self.get_response(request)
            return self._end(request, state, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Log the error event; Django's own handling (a 500 response) goes on."""
        state = getattr(request, _STATE_ATTR, None)
        if isinstance(state, RequestState):
            state.route = _route(request)
            self.http.failed(state, exception)

    def _begin(self, request: HttpRequest) -> RequestState:
        meta = request.META
        state = self.http.begin(
            method=str(request.method or "GET"),
            path=request.path,
            traceparent=meta.get("HTTP_TRACEPARENT"),
            request_id=meta.get("HTTP_X_REQUEST_ID"),
            client=str(meta.get("REMOTE_ADDR") or ""),
            user_agent=str(meta.get("HTTP_USER_AGENT") or ""),
        )
        setattr(request, _STATE_ATTR, state)
        return state

    def _end(
        self, request: HttpRequest, state: RequestState, response: HttpResponseBase
    ) -> HttpResponseBase:
        state.status = response.status_code
        state.route = _route(request)
        for name, value in self.http.response_headers(state):
            response[name] = value
        self.http.finished(state)
        return response


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None) if match is not None else None
    if not isinstance(route, str) or not route:
        return ""
    return route if route.startswith("/") else "/" + route
