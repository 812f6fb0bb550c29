"""The read side's HTTP and SQL plumbing: literal escaping and the ``/v0/sql`` client.

User input reaches SQL text only through ``string``/``number``/``timestamp_us`` here,
which build ClickHouse literals that cannot end early: every backslash and quote is
escaped, control characters are written as escapes, and text that is not valid UTF-8
is refused.  ``SqlClient`` sends queries with the token in the ``Authorization``
header only (its session comes from ``tblog._http``: no ``.netrc`` entry replaces it),
by GET while the URL stays short and by POST (form body) otherwise; a query (a read)
is sent again on a 429, a 503 or a network error, after the wait the server asked for
or a backoff, within ``tblog._delivery.foreground``'s bounds.  ``pipe_rows`` reads a pipe
endpoint the same way (``QueryClient`` calls tblog's shipped pipes with it).
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime, timezone
from typing import Any

import requests

from tblog._config import resolve_api_url, resolve_token
from tblog._delivery import foreground
from tblog._http import session_for

__all__ = [
    "READ_TOKEN_ENV",
    "QueryFailedError",
    "SqlClient",
    "identifier",
    "number",
    "resolve_read_token",
    "string",
    "to_us",
]

#: Reading prefers a read token: ``$TB_READ_TOKEN``, then ``$TB_TOKEN``, then ``$TINYBIRD_TOKEN``.
READ_TOKEN_ENV = ("TB_READ_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")

#: Above this URL length a query goes by POST (Tinybird allows GET URLs up to ~8 KB).
MAX_GET_URL = 4000

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\0": "\\0", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\b": "\\b", "\f": "\\f"}  # fmt: skip


class QueryFailedError(Exception):
    """The SQL API answered with an error (``status`` is the HTTP status, 0 for network)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def resolve_read_token(token: str | None) -> str:
    """``token``, else the first of ``READ_TOKEN_ENV`` that is set (validated like writes)."""
    if token is None:
        token = next((os.environ[k] for k in READ_TOKEN_ENV if os.environ.get(k)), None)
    if token is None:
        raise ValueError(
            "no Tinybird token to read with: pass token=... or set one of "
            + ", ".join(READ_TOKEN_ENV)
        )
    return resolve_token(token)


def string(value: str) -> str:
    """A ClickHouse string literal holding exactly ``value``."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the text is not valid Unicode (lone surrogate)") from None
    out = []
    for ch in value:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def number(value: float | int) -> str:
    """A finite number as a SQL literal (bools, NaN and infinities are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the number must be finite")
        return repr(value)
    return str(int(value))


def identifier(name: str) -> str:
    """A datasource or column name, checked (names are never quoted user text)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"not a valid datasource name: {name!r}")
    return name


def to_us(ts: datetime | float | int) -> int:
    """Microseconds since the epoch; naive datetimes are taken as UTC."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        delta = ts - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise TypeError("a timestamp must be a datetime or epoch seconds")
    return round(ts * 1_000_000)


class SqlClient:
    """Runs SQL through ``/v0/sql`` and returns the parsed ``FORMAT JSON`` answer."""

    def __init__(
        self,
        token: str | None,
        api_url: str | None,
        timeout: float = 30.0,
        *,
        retrying: foreground.Retrying = foreground.DEFAULT,
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self._token = resolve_read_token(token)
        self.timeout = timeout
        # foreground.ONCE: a caller that retries itself (``tblog tail``) sees each failure
        self.retrying = retrying
        self._session = session_for(self.api_url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r})"

    def close(self) -> None:
        self._session.close()

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    @property
    def token(self) -> str:
        return self._token

    def session(self) -> requests.Session:
        return self._session

    def sql(self, query: str) -> dict[str, Any]:
        """Run ``query`` (FORMAT JSON is appended) and return the answer's JSON."""
        query = f"{query}\nFORMAT JSON"
        url = f"{self.api_url}/v0/sql"
        prepared = requests.Request("GET", url, params={"q": query}).prepare()
        short = len(prepared.url or "") <= MAX_GET_URL

        def send() -> requests.Response:
            if short:
                return self._session.get(
                    url, params={"q": query}, headers=self._headers, timeout=self.timeout
                )
            return self._session.post(
                url, data={"q": query}, headers=self._headers, timeout=self.timeout
            )

        try:
            response = foreground.call(
                send, idempotent=True, what="the SQL API", policy=self.retrying
            )
        except requests.RequestException as exc:
            raise QueryFailedError(f"the SQL API is unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            try:
                detail = str(response.json().get("error", ""))
            except ValueError:
                detail = response.text[:500]
            raise QueryFailedError(
                f"the SQL API answered {response.status_code}: {detail}".replace(
                    self._token, "***"
                ),
                response.status_code,
            )
        result: dict[str, Any] = response.json()
        return result

    def rows(self, query: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.sql(query).get("data", [])
        return data

    def pipe_rows(self, name: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
        """The rows of pipe ``name``'s endpoint (``GET /v0/pipes/NAME.json``, ``params`` in
        the query string: the server binds them as typed literals); None when the pipe is
        not there (404) or the token may not call it (403), so that the caller can run
        the same query as SQL.  Other errors are a ``QueryFailedError``; retries as for SQL.
        """
        url = f"{self.api_url}/v0/pipes/{identifier(name)}.json"

        def send() -> requests.Response:
            return self._session.get(url, params=params, headers=self._headers,
                                     timeout=self.timeout)  # fmt: skip

        try:
            response = foreground.call(
                send, idempotent=True, what="the Pipes API", policy=self.retrying
            )
        except requests.RequestException as exc:
            raise QueryFailedError(f"the Pipes API is unreachable ({type(exc).__name__})") from None
        if response.status_code in (403, 404):
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            detail = str(body.get("error", "")) if isinstance(body, dict) else response.text[:500]
            message = f"the pipe {name} answered {response.status_code}: {detail}"
            raise QueryFailedError(message.replace(self._token, "***"), response.status_code)
        data: list[dict[str, Any]] = body.get("data", [])
        return data
