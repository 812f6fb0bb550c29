"""WSGI middleware: one event per request and the request's trace id on every log line.

``app = TinybirdWSGIMiddleware(app, skip_paths=["/health"])`` wraps any WSGI
application.  The response event is logged when the body has been sent (or the
server closes the response iterable, PEP 3333), so ``duration_ms`` includes
streaming the body, and log lines
emitted while the body is produced carry the request's trace id too.  An
exception that escapes the application is logged (error event, status 500) and
re-raised.  Frameworks may put the matched route in ``environ["tblog.route"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tblog.integrations._http import HttpLogging, RequestState

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ROUTE_KEY", "STATE_KEY", "TinybirdWSGIMiddleware"]

#: ``environ`` key where a framework may store the matched route (e.g. ``/items/<id>``).
ROUTE_KEY = "tblog.route"
#: ``environ`` key holding the request's state (for framework integrations).
STATE_KEY = "tblog.request"


class TinybirdWSGIMiddleware:
    """Wrap a WSGI app: request/response/error events and a trace context per request.

    Options are those of every tblog web integration: ``logger``, ``skip_paths``,
    ``log_requests``, ``log_responses``, ``response_header``, ``trust_headers``.
    """

    def __init__(self, app: WSGIApplication, **options: Any) -> None:
        self.app = app
        self.http = HttpLogging(**options)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        http = self.http
        client = environ.get("REMOTE_ADDR") or ""
        state = http.begin(
            method=str(environ.get("REQUEST_METHOD") or "GET"),
            path=_path(environ),
            traceparent=environ.get("HTTP_TRACEPARENT"),
            request_id=environ.get("HTTP_X_REQUEST_ID"),
            client=str(client),
            user_agent=str(environ.get("HTTP_USER_AGENT") or ""),
        )
        environ[STATE_KEY] = state
        extra_headers = http.response_headers(state)

        def _start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            try:
                state.status = int(status.split(None, 1)[0])
            except (ValueError, IndexError):
                state.status = 0
            if extra_headers:
                taken = {name.lower() for name, _ in extra_headers}
                headers = [h for h in headers if h[0].lower() not in taken] + extra_headers
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        with state.activate():
            http.started(state)
            try:
                result = self.app(environ, _start_response)
            except BaseException as exc:
                self._close_failed(environ, state, exc)
                raise
        return _Response(result, self, environ, state)

    def _close_failed(
        self, environ: dict[str, Any], state: RequestState, exc: BaseException
    ) -> None:
        if isinstance(exc, Exception):
            state.route = state.route or str(environ.get(ROUTE_KEY) or "")
            self.http.failed(state, exc)
            state.status = 500  # nothing was sent: the server answers 500
        self.http.finished(state)

    def _finish(self, environ: dict[str, Any], state: RequestState) -> None:
        state.route = state.route or str(environ.get(ROUTE_KEY) or "")
        self.http.finished(state)


class _Response:
    """The app's response iterable, run in the request's trace context; ends with the event."""

    def __init__(
        self,
        result: Iterable[bytes],
        middleware: TinybirdWSGIMiddleware,
        environ: dict[str, Any],
        state: RequestState,
    ) -> None:
        self._result = result
        self._iter: Iterator[bytes] | None = None
        self._middleware = middleware
        self._environ = environ
        self._state = state
        self._closed = False
        self._finished = False
        self._sent = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with self._state.activate():
            try:
                if self._iter is None:
                    self._iter = iter(self._result)
                chunk = next(self._iter)
                self._sent = True
                return chunk
            except StopIteration:
                self._done()  # the body is complete: the event need not wait for close()
                raise
            except Exception as exc:
                if not self._sent:  # else the status line already went out
                    self._state.status = 500
                self._middleware.http.failed(self._state, exc)
                raise

    def _done(self) -> None:
        if not self._finished:
            self._finished = True
            self._middleware._finish(self._environ, self._state)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._state.activate():
            try:
                close = getattr(self._result, "close", None)
                if close is not None:
                    close()
            finally:
                self._done()


def _path(environ: dict[str, Any]) -> str:
    path = str(environ.get("SCRIPT_NAME") or "") + str(environ.get("PATH_INFO") or "")
    if not path:
        return "/"
    # PEP 3333 hands paths as latin-1 decoded bytes: give back the UTF-8 text.
    try:
        return path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return path
