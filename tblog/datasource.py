"""Tinybird Python SDK parity: ``Datasource``/``AsyncDatasource`` appends and ``API``/``AsyncAPI``.

``Datasource(name, token)`` buffers NDJSON rows (``ds << {...}``) and hands them
to tblog's shared sender, which batches, gzips, honours rate limits, retries and
delivers what is left at exit; leaving the ``with`` block flushes.
``AsyncDatasource`` is the same for asyncio code: appending never blocks the
event loop, and the flush on ``async with`` exit waits in a worker thread.
With ``redact=True`` (the default, as for the logging handler) each row is
scrubbed of secrets (keys that name one, secret-looking values) as it is appended.

``API(token, api_url)`` sends any request to Tinybird's REST API (``get``,
``post``, ``delete``, ``send``, with the keyword arguments of ``requests``),
waits out rate limits (``Retry-After``, ``X-RateLimit-*``) and retries 429, 5xx
and network errors with backoff.  ``AsyncAPI`` runs the same requests in a
worker thread, so the event loop never blocks.  The token travels only in the
``Authorization`` header and never appears in an exception or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import requests

from tblog import _diag
from tblog._closing import AsyncClosing, Closing
from tblog._config import Options, resolve_api_url, resolve_token
from tblog._delivery.retry import retry_delay
from tblog._delivery.transport import RETRYABLE_STATUS, parse_retry_after
from tblog._event.redact import build_redactor
from tblog._event.rows import RowChannel, RowProducer
from tblog._http import session_for

__all__ = ["API", "APIError", "AsyncAPI", "AsyncDatasource", "Datasource"]


class Datasource(RowProducer, Closing):
    """Buffered NDJSON appends to one datasource through the Events API.

    ``rows`` may be dicts (encoded as JSON), or ``str``/``bytes`` holding NDJSON (one
    JSON object per line).  ``ds << row`` and ``ds += row`` never block and never raise; rows
    that cannot be buffered are counted in ``stats()["dropped"]``.
    """

    def __init__(
        self,
        datasource_name: str,
        token: str | None = None,
        api_url: str | None = None,
        *,
        batch_size: int = 10_000,
        flush_interval: float = 1.0,
        wait: bool = False,
        **options: Any,
    ) -> None:
        self.datasource_name = datasource_name
        self._rows = RowChannel(
            api_url=api_url,
            token=token,
            datasource=datasource_name,
            options=Options(
                batch_size=batch_size, flush_interval=flush_interval, wait=wait, **options
            ),
            label=f"datasource:{datasource_name}",
            option_name="datasource_name",
        )
        self.api_url = self._rows.api_url
        opts = self._rows.options
        self._redactor = build_redactor(opts.redact, opts.redact_keys, opts.redact_patterns)

    def __repr__(self) -> str:
        return f"<tblog {type(self).__name__} {self.datasource_name!r} -> {self.api_url}>"

    def append(self, row: Mapping[str, Any] | str | bytes) -> bool:
        """Buffer one row; True when it was accepted."""
        return self._append(row)

    def _append(self, row: object) -> bool:
        if isinstance(row, str):
            row = row.encode("utf-8", "replace")
        redactor = self._redactor
        if isinstance(row, (bytes, bytearray)):
            lines = [line.strip() for line in bytes(row).splitlines()]
            if redactor is not None:
                lines = [redactor.line(line) for line in lines if line]
            results = [self._rows.put_line(line) for line in lines if line]
            return bool(results) and all(results)
        if isinstance(row, Mapping):
            return self._rows.put_row(redactor.flat(dict(row)) if redactor else dict(row))
        self._rows.count_drop("not_a_row")
        _diag.diag(
            logging.WARNING, f"not-a-row:{self.datasource_name}",
            "tblog: Datasource %r got a %s, not a dict or JSON text; dropped it",
            self.datasource_name, type(row).__name__,
        )  # fmt: skip
        return False

    def __lshift__(self, row: Mapping[str, Any] | str | bytes) -> Datasource:
        self.append(row)
        return self

    def __iadd__(self, row: Mapping[str, Any] | str | bytes) -> Datasource:
        self.append(row)
        return self


class _Appended:
    """What ``ds << row`` returns on an ``AsyncDatasource``: awaiting it yields the datasource."""

    __slots__ = ("_ds",)

    def __init__(self, ds: AsyncDatasource) -> None:
        self._ds = ds

    def __await__(self) -> Generator[Any, None, AsyncDatasource]:
        return self._ds.__await__()

    def __lshift__(self, row: Mapping[str, Any] | str | bytes) -> _Appended:
        return self._ds << row


class AsyncDatasource(AsyncClosing):
    """``Datasource`` for asyncio: ``async with AsyncDatasource(...) as ds: await ds << row``.

    Python reads ``await ds << row`` as ``(await ds) << row``, so the datasource is
    awaitable (it resolves to itself) and ``<<`` buffers the row at once, without
    blocking; ``await (ds << row)`` works as well.  Leaving ``async with`` (or
    ``await ds.close()``) waits for delivery in a worker thread.
    """

    def __init__(
        self,
        datasource_name: str,
        token: str | None = None,
        api_url: str | None = None,
        **options: Any,
    ) -> None:
        self._ds = Datasource(datasource_name, token, api_url, **options)
        self.datasource_name = datasource_name
        self.api_url = self._ds.api_url

    def __repr__(self) -> str:
        return f"<tblog AsyncDatasource {self.datasource_name!r} -> {self.api_url}>"

    def __await__(self) -> Generator[Any, None, AsyncDatasource]:
        yield from ()  # finishes at once: awaiting the datasource never suspends
        return self

    async def append(self, row: Mapping[str, Any] | str | bytes) -> bool:
        """Buffer one row (never blocks the loop); True when it was accepted."""
        return self._ds.append(row)

    def __lshift__(self, row: Mapping[str, Any] | str | bytes) -> _Appended:
        self._ds.append(row)
        return _Appended(self)

    def __iadd__(self, row: Mapping[str, Any] | str | bytes) -> AsyncDatasource:
        self._ds.append(row)
        return self

    async def flush(self, timeout: float | None = None) -> bool:
        """Deliver the rows appended so far, waiting in a worker thread."""
        return await asyncio.to_thread(self._ds.flush, timeout)

    async def close(self, timeout: float | None = None) -> bool:
        """Flush (within ``timeout``, default ``shutdown_timeout``) in a worker thread, detach."""
        return await asyncio.to_thread(self._ds.close, timeout)

    def stats(self) -> dict[str, Any]:
        return self._ds.stats()


class APIError(requests.HTTPError):
    """A Tinybird API request failed for good (after the retries it deserved).

    ``status`` is the HTTP status (0 for a network error); ``response`` is the last
    response, when there was one.  The message never contains the token.
    """

    def __init__(self, message: str, *, status: int = 0, response: Any = None) -> None:
        super().__init__(message, response=response)
        self.status = status


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:300]
    return str(body)[:300]


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class API(Closing):
    """Requests to any Tinybird API endpoint, with rate-limit handling and retries.

    ``path`` is relative to ``{api_url}/{version}/`` (``"pipes/top.json"``,
    ``"datasources?mode=append&name=x"``); keyword arguments go to ``requests``.
    A 429 or a retryable 5xx/network error is retried up to ``max_retries`` times,
    waiting what the server asked for (``Retry-After``, ``X-RateLimit-Reset``) or
    an exponential backoff; when a response says no requests are left in the
    rate-limit window, the next request waits for the window to reset.  A final
    error raises ``APIError``.
    """

    def __init__(
        self,
        token: str | None = None,
        api_url: str | None = None,
        version: str = "v0",
        *,
        max_retries: int = 5,
        timeout: float = 30.0,
        max_wait: float = 60.0,
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self._token = resolve_token(token)
        self.version = version.strip("/")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0")
        self.max_retries = max_retries
        self.timeout = timeout
        self.max_wait = max_wait
        self.rate_limit_limit: int | None = None
        self.rate_limit_remaining: int | None = None
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"<tblog API {self.api_url}/{self.version}>"

    def session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = session_for(self.api_url, pool_maxsize=8)
            return self._session

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def url(self, path: str) -> str:
        return f"{self.api_url}/{self.version}/{path.lstrip('/')}"

    def _wait_for_window(self) -> None:
        with self._lock:
            wait = self._blocked_until - self._clock()
        if wait > 0:
            _diag.diag(
                logging.INFO, "api-rate-limit",
                "tblog: rate limit reached; waiting %.1fs for the window to reset", wait,
            )  # fmt: skip
            self._sleep(min(wait, self.max_wait))

    def _note_limits(self, response: requests.Response) -> None:
        headers = response.headers
        limit = _number(headers.get("X-RateLimit-Limit"))
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        reset = _number(headers.get("X-RateLimit-Reset"))
        with self._lock:
            if limit is not None:
                self.rate_limit_limit = int(limit)
            if remaining is not None:
                self.rate_limit_remaining = int(remaining)
                if remaining <= 0 and reset is not None:
                    self._blocked_until = self._clock() + min(max(reset, 0.0), self.max_wait)

    def send(self, path: str, method: str = "POST", **kwargs: Any) -> requests.Response:
        """Send one request (retrying what deserves it); return the successful response."""
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Authorization"] = f"Bearer {self._token}"
        kwargs.setdefault("timeout", self.timeout)
        url = self.url(path)
        where = f"{method} /{self.version}/{path.lstrip('/').split('?', 1)[0]}"
        attempt = 0
        while True:
            self._wait_for_window()
            attempt += 1
            try:
                response = self.session().request(method, url, headers=headers, **kwargs)
            except requests.RequestException as exc:
                if attempt > self.max_retries:
                    raise APIError(
                        f"{where}: {type(exc).__name__} after {attempt} attempts"
                    ) from None
                self._sleep(retry_delay(attempt, None))
                continue
            self._note_limits(response)
            status = response.status_code
            if status < 400:
                return response
            if status in RETRYABLE_STATUS and attempt <= self.max_retries:
                hint = parse_retry_after(response.headers.get("Retry-After"))
                if hint is None and status == 429:
                    hint = _number(response.headers.get("X-RateLimit-Reset"))
                delay = min(retry_delay(attempt, hint), self.max_wait)
                _diag.diag(
                    logging.INFO, f"api-retry:{status}",
                    "tblog: %s answered HTTP %d; retrying in %.1fs", where, status, delay,
                )  # fmt: skip
                response.close()
                self._sleep(delay)
                continue
            raise APIError(
                f"HTTP {status} from {where}: {_error_text(response)}",
                status=status,
                response=response,
            )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.send(path, method="GET", **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.send(path, method="POST", **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.send(path, method="DELETE", **kwargs)


class AsyncAPI(AsyncClosing):
    """``API`` for asyncio: each request runs in a worker thread, so the loop never blocks."""

    def __init__(
        self, token: str | None = None, api_url: str | None = None, version: str = "v0", **kw: Any
    ) -> None:
        self._api = API(token, api_url, version, **kw)
        self.api_url = self._api.api_url

    def __repr__(self) -> str:
        return f"<tblog AsyncAPI {self.api_url}/{self._api.version}>"

    @property
    def sync(self) -> API:
        """The synchronous ``API`` doing the work (shares its session and rate-limit state)."""
        return self._api

    async def send(self, path: str, method: str = "POST", **kwargs: Any) -> requests.Response:
        return await asyncio.to_thread(self._api.send, path, method, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> requests.Response:
        return await self.send(path, method="GET", **kwargs)

    async def post(self, path: str, **kwargs: Any) -> requests.Response:
        return await self.send(path, method="POST", **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return await self.send(path, method="DELETE", **kwargs)

    async def close(self) -> None:
        await asyncio.to_thread(self._api.close)
