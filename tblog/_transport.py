"""HTTP to Tinybird's Events API, and what each response means for the batch.

One pooled ``requests.Session`` per process (recreated after fork).  ``post``
never raises: every outcome, network errors included, becomes a ``Result`` that
says whether the batch was delivered, should be retried (and after how long the
server asked us to wait), split (413) or dropped (and under which reason).
The token travels only in the ``Authorization`` header; it is never put in a URL
and never appears in a ``Result``, an exception message or a log line.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from tblog import _diag
from tblog._version import __version__

USER_AGENT = f"tblog/{__version__}"

REGION_HOSTS = (
    "https://api.tinybird.co (GCP europe-west3)",
    "https://api.us-east.tinybird.co (GCP us-east4)",
    "https://api.eu-central-1.aws.tinybird.co",
    "https://api.us-east-1.aws.tinybird.co",
    "https://api.us-west-2.aws.tinybird.co",
)

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
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_text(response: requests.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip(), {}
    if isinstance(body, dict):
        text = body.get("error") or body.get("message") or json.dumps(body)[:300]
        return str(text), body
    return str(body)[:300], {}


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
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            # The environment (proxies, CA bundle) is read once per destination by
            # ``_settings``, not on every request; and no ~/.netrc entry can replace the
            # Bearer token in the Authorization header.
            session.trust_env = False
            self._session = session
        return self._session

    def _settings(self, api_url: str, verify: bool | str) -> tuple[dict[str, str], bool | str]:
        """Proxies and TLS verification for ``api_url``, from the environment, as requests does.

        ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` choose the proxy;
        with ``verify=True``, ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` name the CA bundle.
        Read at the first request to a destination (requests would read them on every one).
        """
        key = (api_url, verify)
        settings = self._env.get(key)
        if settings is None:
            try:
                proxies = requests.utils.get_environ_proxies(api_url)
            except Exception:  # noqa: BLE001 - a malformed environment means no proxy
                proxies = {}
            chosen = verify
            if verify is True:
                chosen = (
                    os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
                )
            settings = self._env[key] = (dict(proxies), chosen)
        return settings

    def reset(self) -> None:
        """Forget the pool without closing it (after fork the sockets belong to the parent)."""
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
            except requests.Timeout:
                return Result(RETRY, reason="timeout", error=f"timed out after {timeout:g}s")
            except requests.ConnectionError as exc:
                if reused and _stale_connection(exc):
                    self.stale_retries += 1
                    continue  # a pooled keep-alive connection the server had closed: once more
                return Result(RETRY, reason="network", error=_network_error(exc))
            except Exception as exc:  # noqa: BLE001 - any client failure is a retryable network error
                return Result(RETRY, reason="network", error=f"{type(exc).__name__}")
            if response.headers.get("Connection", "").lower() != "close":
                self._kept.add(api_url)
            return classify(response, datasource, api_url)
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


def classify(response: requests.Response, datasource: str, api_url: str) -> Result:
    """What the Events API's answer means for the batch that was sent."""
    status = response.status_code
    headers = response.headers
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    result = Result(
        DROP,
        status=status,
        rate_remaining=int(remaining) if remaining is not None else None,
        rate_reset=_number(headers.get("X-RateLimit-Reset")),
    )
    if status in (200, 202):
        try:
            body = response.json()
        except ValueError:
            body = {}
        result.action = OK
        result.body = body if isinstance(body, dict) else {}
        _row_counts(result)
        return result
    text, result.body = _error_text(response)
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
    if status == 404:
        error += (
            f" (a 404 usually means the workspace lives in another region than {api_url}; "
            f"region hosts: {', '.join(REGION_HOSTS)})"
        )
    elif status in (401, 403):
        error += " (check that the token has DATASOURCE:APPEND scope on this datasource)"
    elif status == 422:
        error += " (partially ingested; not retried, since a retry would duplicate rows)"
    result.error = error
    return result
