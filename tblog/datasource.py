"""Tinybird Python SDK parity: ``Datasource``/``AsyncDatasource`` appends and ``API``/``AsyncAPI``.

``Datasource(name, token)`` buffers NDJSON rows (``ds << {...}``) and hands them
to tblog's shared sender, which batches, gzips, honours rate limits, retries and
delivers what is left at exit; leaving the ``with`` block flushes.
``AsyncDatasource`` is the same for asyncio code: appending never blocks the
event loop, and the flush on ``async with`` exit waits in a worker thread.
With ``redact=True`` (the default, as for the logging handler) each row is
scrubbed of secrets (keys that name one, secret-looking values) as it is appended.

``API(token, api_url, version, retry_total, backoff_factor)`` sends any request
to Tinybird's REST API (``get``, ``post``, ``delete``, ``send``, with the keyword
arguments of ``requests``), waits out rate limits (``Retry-After``,
``X-RateLimit-*``) and retries 429, 5xx and network errors: ``retry_total`` (alias
``max_retries``) times, with tblog's backoff or, given ``backoff_factor``, urllib3's
schedule as in the SDK.  ``AsyncAPI`` runs the same requests in a worker thread, so
the event loop never blocks, and returns ``AsyncResponse`` objects shaped like the
SDK's aiohttp responses (``status``, ``await r.json()``), plus ``get_json`` and
``post_json``.  The token travels only in the ``Authorization`` header and never
appears in a repr, an exception or a log line (``API.token`` reads it).

The constructors take the Tinybird Python SDK's positional order and names,
``Datasource(name, token, api_url, buffer)`` included (its ``Buffer`` sets
``flush_interval`` and ``batch_size``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import requests

from tblog import _diag
from tblog._closing import AsyncClosing, Closing
from tblog._config import Options, resolve_api_url, resolve_token, row_options
from tblog._delivery.retry import retry_delay
from tblog._delivery.transport import RETRYABLE_STATUS, parse_retry_after
from tblog._event.redact import build_redactor
from tblog._event.rows import RowChannel, RowProducer
from tblog._http import session_for

__all__ = ["API", "APIError", "AsyncAPI", "AsyncDatasource", "AsyncResponse", "Datasource"]


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
        buffer: Any = None,
        *,
        batch_size: int = 10_000,
        flush_interval: float = 1.0,
        wait: bool = False,
        **options: Any,
    ) -> None:
        if buffer is not None:  # the SDK's Buffer(max_wait_seconds, max_wait_records, ...)
            try:
                flush_interval = float(buffer.max_wait_seconds)
                batch_size = int(buffer.max_wait_records)
            except (AttributeError, TypeError, ValueError):
                raise TypeError(
                    "buffer must be the Tinybird SDK's Buffer (max_wait_seconds, "
                    "max_wait_records); or pass flush_interval= and batch_size="
                ) from None
        self.datasource_name = datasource_name
        self._rows = RowChannel(
            api_url=api_url,
            token=token,
            datasource=datasource_name,
            options=Options(
                batch_size=batch_size,
                flush_interval=flush_interval,
                wait=wait,
                **row_options("Datasource", options),
            ),
            label=f"datasource:{datasource_name}",
            option_name="datasource_name",
        )
        self.api_url = self._rows.api_url
        opts = self._rows.options
        self._redactor = build_redactor(opts.redact, opts.redact_keys, opts.redact_patterns)

    def __repr__(self) -> str:
        return f"<tblog {type(self).__name__} {self.datasource_name!r} -> {self.api_url}>"

    @property
    def batch_size(self) -> int:
        """Rows that make a request without waiting for ``flush_interval``."""
        return self._rows.options.batch_size

    @property
    def flush_interval(self) -> float:
        """Seconds a row waits, at most, for others to share its request."""
        return self._rows.options.flush_interval

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
        buffer: Any = None,
        **options: Any,
    ) -> None:
        self._ds = Datasource(datasource_name, token, api_url, buffer, **options)
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
        retry_total: int | None = None,
        backoff_factor: float | None = None,
        *,
        max_retries: int | None = None,
        timeout: float = 30.0,
        max_wait: float = 60.0,
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self._token = resolve_token(token)
        self.version = version.strip("/")
        if retry_total is not None and max_retries is not None and retry_total != max_retries:
            raise ValueError("pass max_retries or retry_total (the Tinybird SDK's name), not both")
        retries = retry_total if retry_total is not None else max_retries
        retries = 5 if retries is None else retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError("max_retries (retry_total) must be an int >= 0")
        if backoff_factor is not None and (
            not isinstance(backoff_factor, (int, float))
            or isinstance(backoff_factor, bool)
            or not backoff_factor >= 0
        ):
            raise ValueError("backoff_factor must be a number >= 0")
        self.max_retries = self.retry_total = retries
        #: None: tblog's jittered backoff; a number: urllib3's (the SDK's) schedule
        self.backoff_factor = backoff_factor
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

    @property
    def token(self) -> str:
        """The token sent in the ``Authorization`` header (as the SDK's ``API.token``)."""
        return self._token

    @token.setter
    def token(self, value: str) -> None:
        self._token = resolve_token(value)

    def ui_url(self) -> str:
        """The Tinybird UI's address for this API host (as the SDK's ``API.ui_url()``)."""
        return self.api_url.replace("api", "ui")

    def _backoff(self, attempt: int, hint: float | None) -> float:
        """Before retry ``attempt``: the server's hint, else the backoff schedule."""
        factor = self.backoff_factor
        if hint is not None or factor is None:
            return retry_delay(attempt, hint)
        # urllib3's Retry: the first retry at once, then factor * 2 ** (retry - 1)
        return 0.0 if attempt <= 1 else float(factor * 2 ** (attempt - 1))

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
                self._sleep(min(self._backoff(attempt, None), self.max_wait))
                continue
            self._note_limits(response)
            status = response.status_code
            if status < 400:
                return response
            if status in RETRYABLE_STATUS and attempt <= self.max_retries:
                hint = parse_retry_after(response.headers.get("Retry-After"))
                if hint is None and status == 429:
                    hint = _number(response.headers.get("X-RateLimit-Reset"))
                delay = min(self._backoff(attempt, hint), self.max_wait)
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


class AsyncResponse:
    """What ``AsyncAPI`` requests return: shaped like aiohttp's ``ClientResponse``, as the SDK's.

    ``status``, ``reason``, ``headers``, ``url``, ``ok``; ``await r.json()``, ``await
    r.text()``, ``await r.read()``; ``raise_for_status()``; ``async with``.  The body is
    already read (in the worker thread), so awaiting these never waits for the network.
    ``response`` is the underlying ``requests.Response`` (``status_code`` is its alias).
    """

    __slots__ = ("response",)

    def __init__(self, response: requests.Response) -> None:
        self.response = response

    def __repr__(self) -> str:
        return f"<tblog AsyncResponse [{self.status} {self.reason}]>"

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def reason(self) -> str:
        return self.response.reason or ""

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    @property
    def url(self) -> str:
        return self.response.url

    @property
    def ok(self) -> bool:
        return self.response.ok

    @property
    def content_type(self) -> str:
        return self.response.headers.get("Content-Type", "").split(";", 1)[0].strip()

    async def json(
        self, *, encoding: str | None = None, loads: Callable[[str], Any] = json.loads, **_: Any
    ) -> Any:
        """The body as JSON (aiohttp's ``content_type`` check is not made)."""
        return loads(await self.text(encoding))

    async def text(self, encoding: str | None = None, errors: str = "strict") -> str:
        """The body decoded as aiohttp does: ``encoding``, else the charset, else UTF-8."""
        if encoding is None:
            params = self.response.headers.get("Content-Type", "").split(";")[1:]
            charsets = [p.split("=", 1)[1].strip(" \"'") for p in params
                        if p.strip().lower().startswith("charset=")]  # fmt: skip
            encoding = charsets[0] if charsets else "utf-8"
        return self.response.content.decode(encoding, errors)

    async def read(self) -> bytes:
        return self.response.content

    def raise_for_status(self) -> None:
        """Nothing to raise: a request that failed raised ``APIError`` already."""
        self.response.raise_for_status()

    def release(self) -> None:
        self.response.close()

    def close(self) -> None:
        self.response.close()

    async def __aenter__(self) -> AsyncResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class AsyncAPI(AsyncClosing):
    """``API`` for asyncio: each request runs in a worker thread, so the loop never blocks.

    As the SDK's ``AsyncAPI(token, api_url, version, retry_total)``: requests return an
    ``AsyncResponse`` (``status``, ``await r.json()``...), and ``get_json``/``post_json``
    return the decoded body.  Failures raise ``APIError`` (a ``requests.HTTPError``).
    """

    def __init__(
        self,
        token: str | None = None,
        api_url: str | None = None,
        version: str = "v0",
        retry_total: int | None = None,
        **kw: Any,
    ) -> None:
        self._api = API(token, api_url, version, retry_total, **kw)
        self.api_url = self._api.api_url
        self.version = self._api.version
        self.retry_total = self._api.retry_total

    def __repr__(self) -> str:
        return f"<tblog AsyncAPI {self.api_url}/{self._api.version}>"

    @property
    def sync(self) -> API:
        """The synchronous ``API`` doing the work (shares its session and rate-limit state)."""
        return self._api

    @property
    def token(self) -> str:
        return self._api.token

    @token.setter
    def token(self, value: str) -> None:
        self._api.token = value

    def ui_url(self) -> str:
        return self._api.ui_url()

    async def send(self, path: str, method: str = "POST", **kwargs: Any) -> AsyncResponse:
        response = await asyncio.to_thread(self._api.send, path, method, **kwargs)
        return AsyncResponse(response)

    async def get(self, path: str, **kwargs: Any) -> AsyncResponse:
        return await self.send(path, method="GET", **kwargs)

    async def post(self, path: str, **kwargs: Any) -> AsyncResponse:
        return await self.send(path, method="POST", **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> AsyncResponse:
        return await self.send(path, method="DELETE", **kwargs)

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON body."""
        return await (await self.get(path, **kwargs)).json()

    async def post_json(self, path: str, **kwargs: Any) -> Any:
        """POST to ``path`` and return its JSON body."""
        return await (await self.post(path, **kwargs)).json()

    async def close(self) -> None:
        await asyncio.to_thread(self._api.close)
