"""HTTP to Tinybird's Events API, and what each response means for the batch.

One pooled ``requests.Session`` per process (recreated after fork).  Each request has a
total deadline: requests' timeouts bound each read, so an answer trickled a byte at a time
would never time out; a thread that calls ``watch()`` before posting has the socket of its
request recorded, and ``abort(ident)`` (called by the sender when the deadline passes) shuts
that socket down, which ends the request at once with a timeout.  ``post``
never raises: every outcome, network errors included, becomes a ``Result`` that
says whether the batch was delivered, should be retried (and after how long the
server asked us to wait), split (413) or dropped (and under which reason).
The token travels only in the ``Authorization`` header; it is never put in a URL
and never appears in a ``Result``, an exception message or a log line.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import http.client
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tblog import _diag
from tblog._http import environment_settings, new_session

REGION_HOSTS = (
    "https://api.tinybird.co (GCP europe-west3)",
    "https://api.us-east.tinybird.co (GCP us-east4)",
    "https://api.eu-central-1.aws.tinybird.co",
    "https://api.us-east-1.aws.tinybird.co",
    "https://api.us-west-2.aws.tinybird.co",
)


def _tinybird_host(api_url: str) -> bool:
    """Whether ``api_url`` is one of Tinybird's hosts (``*.tinybird.co``), where a 404 for a
    datasource usually means a workspace in another region."""
    host = (urlsplit(api_url).hostname or "").rstrip(".").lower()
    return host == "tinybird.co" or host.endswith(".tinybird.co")


OK, RETRY, SPLIT, DROP = "ok", "retry", "split", "drop"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class Result:
    """What one request achieved."""

    action: str  # OK, RETRY, SPLIT or DROP
    status: int = 0  # HTTP status, 0 for a network error
    reason: str = ""  # drop/retry reason, e.g. "http_403", "network"
    error: str = ""  # one line for stats()/diagnostics, token-free
    retry_after: float | None = None  # seconds the server asked us to wait
    rate_remaining: int | None = None  # X-RateLimit-Remaining
    rate_reset: float | None = None  # X-RateLimit-Reset (seconds)
    successful_rows: int | None = None
    quarantined_rows: int | None = None
    body: dict[str, Any] = field(default_factory=dict)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # the asctime form and "-0000": every HTTP-date is GMT (RFC 9110)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


#: An ``X-RateLimit-Reset`` above this is an epoch time (some proxies send one), not seconds.
EPOCH_SECONDS = 1e9
EPOCH_MILLISECONDS = 1e12
#: The longest wait an epoch ``X-RateLimit-Reset`` may ask for.
MAX_EPOCH_WAIT = 60.0


def parse_rate_reset(value: str | None, now: float | None = None) -> float | None:
    """``X-RateLimit-Reset`` as seconds from now.

    Tinybird sends the seconds left in the window; a value that can only be an epoch time
    (above 10^9: seconds, above 10^12: milliseconds) becomes the time left until then,
    at least 0 and at most ``MAX_EPOCH_WAIT``.
    """
    number = _number(value)
    if number is None or math.isnan(number):
        return None
    if number > EPOCH_SECONDS:
        epoch = number / 1000 if number > EPOCH_MILLISECONDS else number
        number = min(max(0.0, epoch - (time.time() if now is None else now)), MAX_EPOCH_WAIT)
    return max(0.0, number)


_BEARER = re.compile(r"(?i)\b(bearer|token)(\s+|=)[^\s\"'&,;]+")


def _scrubbed(text: str, token: str) -> str:
    """An answer's text without the token, and without any credential it echoes, *before* it
    is cut to length (a cut could leave a prefix of the token that no replace would find)."""
    if token:
        text = text.replace(token, "<token>")
    return _BEARER.sub(r"\1\2<token>", text)


def _error_text(response: requests.Response, token: str = "") -> tuple[str, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return _scrubbed(response.text, token)[:300].strip(), {}
    if isinstance(body, dict):
        text = body.get("error") or body.get("message") or json.dumps(body)
        return _scrubbed(str(text), token)[:300], body
    return _scrubbed(str(body), token)[:300], {}


# -- the total deadline: sockets of watched threads, shut down on demand --------------------

#: thread ident -> the socket its request uses now (None: not connected yet)
_watched: dict[int, socket.socket | None] = {}
#: threads whose request passed its deadline: their sockets are shut down as soon as seen
_aborted: set[int] = set()


def watch() -> None:
    """The calling thread's next requests can be aborted by ``abort(its ident)``."""
    _watched[threading.get_ident()] = None


def unwatch() -> bool:
    """Stop watching the calling thread; True when its request was aborted."""
    ident = threading.get_ident()
    _watched.pop(ident, None)
    if ident in _aborted:
        _aborted.discard(ident)
        return True
    return False


def abort(ident: int) -> None:
    """End the request of thread ``ident`` now (past its deadline): shut its socket down.

    A shutdown wakes a ``recv`` blocked in that thread (``close`` alone may not).  When the
    thread has no socket yet, it gets shut down as soon as the connection is made.
    """
    if ident not in _watched:
        return
    _aborted.add(ident)
    _shut(_watched.get(ident))


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.shutdown(socket.SHUT_RDWR)


def _track(sock: socket.socket | None) -> None:
    ident = threading.get_ident()
    if ident in _watched:
        _watched[ident] = sock
        if ident in _aborted:
            _shut(sock)


class _WatchedHTTPConnection(HTTPConnection):
    """Records its socket for the deadline watchdog: when made, and at each request."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self.sock)  # a reused keep-alive connection: no _new_conn
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)  # the TCP socket under TLS: a hung handshake is interrupted too
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections (direct or through a proxy) can be aborted."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class Transport:
    """The process's connection pool to the Events API."""

    def __init__(self) -> None:
        self._session: requests.Session | None = None
        self._env: dict[tuple[str, bool | str], tuple[dict[str, str], bool | str]] = {}
        self.stale_retries = 0  # requests resent at once on a stale pooled connection
        # Destinations whose last request got an answer on a connection kept alive: only a
        # request on such a reused connection can meet a "stale" close and be resent at once.
        self._kept: set[str] = set()

    def session(self) -> requests.Session:
        if self._session is None:
            # Requests to one host run side by side (one per datasource, see batch.InFlight):
            # room for as many kept-alive connections, or urllib3 warns and discards them.
            # The session ignores the environment (no ~/.netrc entry replaces the Bearer
            # token); proxies and the CA bundle are read once per destination (``_settings``).
            self._session = new_session(
                adapter=_WatchedAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            )
        return self._session

    def _settings(self, api_url: str, verify: bool | str) -> tuple[dict[str, str], bool | str]:
        """Proxies and TLS verification for ``api_url``, read at the first request to it."""
        key = (api_url, verify)
        settings = self._env.get(key)
        if settings is None:
            settings = self._env[key] = environment_settings(api_url, verify)
        return settings

    def reset(self) -> None:
        """Forget the pool without closing it (after fork the sockets belong to the parent)."""
        _watched.clear()
        _aborted.clear()
        self._session = None
        self._env = {}
        self._kept = set()

    def close(self) -> None:
        self._kept = set()
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def post(
        self,
        *,
        api_url: str,
        token: str,
        datasource: str,
        body: bytes,
        gzipped: bool,
        wait: bool,
        timeout: float,
        verify: bool | str = True,
    ) -> Result:
        """POST one NDJSON body to ``/v0/events?name=datasource``. Never raises."""
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-ndjson",
        }
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        params = {"name": datasource}
        if wait:
            params["wait"] = "true"
        if verify is False:
            _diag.warn_once(
                "tls-verify-off",
                "tblog: TLS certificate verification is off (verify=False); the token "
                "could be sent to an impostor. Prefer ca_bundle=<path>",
            )
        proxies, verify = self._settings(api_url, verify)
        for _ in (1, 2):  # a second time only after a stale reused connection
            reused = api_url in self._kept
            self._kept.discard(api_url)
            try:
                response = self.session().post(
                    f"{api_url}/v0/events",
                    params=params,
                    data=body,
                    headers=headers,
                    timeout=(min(timeout, 10.0), timeout),
                    verify=verify,
                    proxies=proxies,
                )
            except Exception as exc:  # noqa: BLE001 - any client failure is retryable
                text = _network_error(exc) if isinstance(exc, requests.ConnectionError) else ""
                if isinstance(exc, requests.Timeout) or (
                    threading.get_ident() in _aborted and not text.endswith(_NO_CONNECTION)
                ):  # (an abort at the deadline breaks the connection: it reads as a reset)
                    return Result(RETRY, reason="timeout", error=f"timed out after {timeout:g}s")
                if not text:
                    return Result(RETRY, reason="network", error=f"{type(exc).__name__}")
                if reused and _stale_connection(exc):
                    self.stale_retries += 1
                    continue  # a pooled keep-alive connection the server had closed: once more
                return Result(RETRY, reason="network", error=text)
            if response.headers.get("Connection", "").lower() != "close":
                self._kept.add(api_url)
            result = classify(response, datasource, api_url, token)
            if result.action != OK and threading.get_ident() in _aborted:
                # cut at the deadline mid-answer: what was read of it is not an answer
                return Result(RETRY, reason="timeout", error=f"timed out after {timeout:g}s")
            if token in result.error:  # a page that echoes the request's headers
                result.error = result.error.replace(token, "<token>")
            return result
        return Result(RETRY, reason="network", error="connection error")  # pragma: no cover


def _stale_connection(exc: BaseException) -> bool:
    """The server closed a reused connection before answering (nothing was processed).

    requests wraps urllib3's ``ProtocolError("Connection aborted.", RemoteDisconnected(...))``;
    the wrapped exceptions are searched through ``args``, ``__cause__`` and ``__context__``.
    Connection refused or a name that does not resolve are not stale connections: those are
    retried with backoff like any outage.
    """
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < 16:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _STALE):
            return True
        nested = [*current.args, current.__cause__, current.__context__]
        todo.extend(e for e in nested if isinstance(e, BaseException))
    return False


_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
#: Errors that happen before a connection exists: an abort did not cause them.
_NO_CONNECTION = (
    "Connection refused",
    "Name or service not known",
    "Temporary failure in name resolution",
    "TLS error",
)


def _network_error(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            "TLS error: the server's certificate could not be verified "
            "(pass ca_bundle=<path to the CA's PEM> for a private CA)"
            if "CERTIFICATE_VERIFY_FAILED" in str(exc)
            else "TLS error"
        )
    text = str(exc)
    # urllib3 messages can be long and nested; keep the useful tail, never any header.
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
        "RemoteDisconnected",
        "timed out",
        "Temporary failure in name resolution",
    ):
        if marker in text:
            return f"connection error: {marker}"
    return f"connection error: {type(exc).__name__}"


def _row_counts(result: Result) -> None:
    ok_rows = result.body.get("successful_rows")
    bad_rows = result.body.get("quarantined_rows")
    result.successful_rows = ok_rows if isinstance(ok_rows, int) else None
    result.quarantined_rows = bad_rows if isinstance(bad_rows, int) else None


def _events_answer(response: requests.Response) -> dict[str, Any] | None:
    """The body of a 200/202 when it is the Events API's JSON object; None when it is not.

    Tinybird answers ``application/json`` with ``successful_rows``/``quarantined_rows``; an
    HTML page or any other body is some other server answering in its place.
    """
    kind = (response.headers.get("Content-Type") or "").lower()
    if kind and "json" not in kind:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def classify(response: requests.Response, datasource: str, api_url: str, token: str = "") -> Result:
    """What the Events API's answer means for the batch that was sent (``token``: what its
    text must never show)."""
    status = response.status_code
    headers = response.headers
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    result = Result(
        DROP,
        status=status,
        rate_remaining=int(remaining) if remaining is not None else None,
        rate_reset=parse_rate_reset(headers.get("X-RateLimit-Reset")),
    )
    if status in (200, 202):
        body = _events_answer(response)
        if body is None:  # a proxy, captive portal or load balancer answered, not Tinybird
            kind = (headers.get("Content-Type") or "no Content-Type").split(";")[0].strip()
            text = " ".join(_scrubbed(response.text[:4096], token)[:120].split())
            result.action = RETRY
            result.reason = "bad_response"
            result.error = (
                f"HTTP {status} from {api_url} for datasource {datasource!r} is not an Events "
                f"API answer ({kind}: {text!r}); is a proxy or captive portal answering for "
                "Tinybird? (check api_url and the proxy settings)"
            )
            return result
        result.action = OK
        result.body = body
        _row_counts(result)
        return result
    text, result.body = _error_text(response, token)
    _row_counts(result)  # a 422 (partially ingested) says how many rows it took
    result.reason = f"http_{status}"
    if status in RETRYABLE_STATUS:
        result.action = RETRY
        result.error = f"HTTP {status} from {datasource}: {text}"
        result.retry_after = parse_retry_after(headers.get("Retry-After"))
        if result.retry_after is None and status == 429:
            result.retry_after = result.rate_reset
        return result
    if status == 413:
        result.action = SPLIT
        result.error = f"HTTP 413 from {datasource}: {text}"
        return result
    error = f"HTTP {status} from datasource {datasource!r}: {text}"
    if status == 404 and _tinybird_host(api_url):
        error += (
            f" (a 404 usually means the workspace lives in another region than {api_url}; "
            f"region hosts: {', '.join(REGION_HOSTS)})"
        )
    elif status == 404:  # tblog local, Tinybird Local or a proxy: no region would help
        error += (
            f" (the server at {api_url} has no datasource {datasource!r} to append to: "
            "check api_url and the datasource name)"
        )
    elif status in (401, 403):
        error += " (check that the token has DATASOURCE:APPEND scope on this datasource)"
    elif status == 422:
        error += " (partially ingested; not retried, since a retry would duplicate rows)"
    result.error = error
    return result
