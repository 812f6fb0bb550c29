"""The framework-neutral half of the web integrations: trace ids from headers, request events.

A request's trace id is, in order: the trace id of a valid W3C ``traceparent``
header, else a well-formed ``X-Request-ID`` header, else the current
OpenTelemetry span's trace id, else a new random id.  The request gets a new span
id of its own.  Both are set in tblog's trace context (a ``contextvars`` value, so
concurrent requests in threads or asyncio tasks never see each other's ids) for
as long as the framework runs the request, and the trace id is returned in a
response header.

The events go through the standard ``logging`` module; logging them never raises
into the application.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from tblog import context

__all__ = ["DEFAULT_LOGGER", "HttpLogging", "RequestState", "trace_id_from_headers"]

DEFAULT_LOGGER = "http.requests"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
# What may be echoed back in a response header: no spaces, no control characters.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def trace_id_from_headers(traceparent: str | None, request_id: str | None) -> str | None:
    """The trace id a request brings: W3C ``traceparent`` first, then ``X-Request-ID``."""
    if traceparent:
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if (
            m is not None
            and m[1] != "ff"
            and m[2] != "0" * 32
            and m[3] != "0" * 16
            and not (m[1] == "00" and m[5])
        ):
            return m[2]
    if request_id:
        rid = request_id.strip()
        if _REQUEST_ID.match(rid):
            return rid
    return None


class RequestState:
    """One request's data, from its start to its response event."""

    __slots__ = (
        "client",
        "error_logged",
        "method",
        "path",
        "route",
        "skipped",
        "span_id",
        "start",
        "status",
        "trace_id",
        "user_agent",
    )

    def __init__(
        self,
        *,
        method: str,
        path: str,
        client: str,
        user_agent: str,
        trace_id: str,
        span_id: str,
        skipped: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.route = ""
        self.status = 0
        self.client = client
        self.user_agent = user_agent
        self.trace_id = trace_id
        self.span_id = span_id
        self.skipped = skipped
        self.error_logged = False
        self.start = time.perf_counter()

    def activate(self) -> context.trace:
        """A ``with`` block in which this request's trace and span ids are current."""
        return context.trace(self.trace_id, self.span_id)

    def duration_ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000.0, 3)


class HttpLogging:
    """The options every web integration shares, checked once at set-up.

    ``logger``: a ``logging.Logger`` or a logger name (default ``http.requests``).
    ``skip_paths``: paths (and their sub-paths) whose request and response events
    are not logged; their log lines still get the trace id, and errors are still
    logged.  ``log_requests``: an event when a request starts (default False).
    ``log_responses``: an event when it ends, with status and duration (default
    True).  ``response_header``: the header that returns the trace id (None: none).
    ``trust_headers``: take the trace id from ``traceparent``/``X-Request-ID``
    (default True; False always makes a new one).
    """

    def __init__(
        self,
        *,
        logger: logging.Logger | str | None = None,
        skip_paths: Iterable[str] = (),
        log_requests: bool = False,
        log_responses: bool = True,
        response_header: str | None = "X-Request-ID",
        trust_headers: bool = True,
    ) -> None:
        if logger is None:
            logger = DEFAULT_LOGGER
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            raise TypeError("logger must be a logging.Logger, a logger name or None")
        if isinstance(skip_paths, str):
            raise TypeError("skip_paths must be a list of paths, not one string")
        paths = tuple(skip_paths)
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(
                    f"skip_paths entries must be paths starting with '/', not {path!r}"
                )
        for name, flag in (
            ("log_requests", log_requests),
            ("log_responses", log_responses),
            ("trust_headers", trust_headers),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be true or false")
        if response_header is not None and (
            not isinstance(response_header, str) or not _HEADER_NAME.match(response_header)
        ):
            raise ValueError(
                f"response_header must be an HTTP header name, not {response_header!r}"
            )
        self.logger = logger
        self.skip_paths = paths
        self.log_requests = log_requests
        self.log_responses = log_responses
        self.response_header = response_header
        self.trust_headers = trust_headers

    def is_skipped(self, path: str) -> bool:
        for skip in self.skip_paths:
            if path == skip or path.startswith(skip.rstrip("/") + "/"):
                return True
        return False

    def begin(
        self,
        *,
        method: str,
        path: str,
        traceparent: str | None,
        request_id: str | None,
        client: str,
        user_agent: str,
    ) -> RequestState:
        """A new request: its trace id (from the headers, OpenTelemetry or new) and span id."""
        trace_id = trace_id_from_headers(traceparent, request_id) if self.trust_headers else None
        if trace_id is None:
            otel = context.otel_ids()
            trace_id = otel[0] if otel is not None else context.new_trace_id()
        return RequestState(
            method=method,
            path=path,
            client=client,
            user_agent=user_agent,
            trace_id=trace_id,
            span_id=context.new_span_id(),
            skipped=self.is_skipped(path),
        )

    def response_headers(self, state: RequestState) -> list[tuple[str, str]]:
        if self.response_header is None:
            return []
        return [(self.response_header, state.trace_id)]

    # -- the events (call them with the request's trace context active) ----------------

    def started(self, state: RequestState) -> None:
        if self.log_requests and not state.skipped:
            self._log(
                logging.INFO,
                "%s %s",
                (state.method, state.path),
                self._fields(state, "request"),
                None,
            )

    def failed(self, state: RequestState, exc: BaseException) -> None:
        """The error event: the exception a view raised (once per request)."""
        if state.error_logged:
            return
        state.error_logged = True
        fields = self._fields(state, "error")
        fields["duration_ms"] = state.duration_ms()
        self._log(
            logging.ERROR,
            "%s %s raised %s",
            (state.method, state.path, type(exc).__name__),
            fields,
            exc,
        )

    def finished(self, state: RequestState) -> None:
        if not self.log_responses or state.skipped:
            return
        fields = self._fields(state, "response")
        fields["status"] = state.status
        fields["duration_ms"] = duration = state.duration_ms()
        status = state.status
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        self._log(
            level,
            "%s %s %d (%.1f ms)",
            (state.method, state.path, status, duration),
            fields,
            None,
        )

    @staticmethod
    def _fields(state: RequestState, kind: str) -> dict[str, Any]:
        return {
            "http_event": kind,
            "method": state.method,
            "path": state.path,
            "route": state.route,
            "client_addr": state.client,
            "user_agent": state.user_agent,
        }

    def _log(
        self,
        level: int,
        msg: str,
        args: tuple[Any, ...],
        fields: dict[str, Any],
        exc: BaseException | None,
    ) -> None:
        try:
            if self.logger.isEnabledFor(level):
                self.logger.log(level, msg, *args, extra=fields, exc_info=exc, stacklevel=3)
        except Exception:  # noqa: BLE001, S110 - logging must never break a request
            pass
