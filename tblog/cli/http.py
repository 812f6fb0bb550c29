"""The small HTTP client behind the CLI: SQL queries and Events API posts.

Works the same against ``tblog local`` and Tinybird.  The token goes only in the
``Authorization`` header (the session comes from ``tblog._http``: no ``.netrc`` entry
replaces it); errors carry the server's message, never the token.  ``append`` waits
out 429/503 answers and sends the batch again (``tblog._delivery.foreground``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from tblog._config import resolve_api_url, resolve_token
from tblog._delivery import foreground
from tblog._event.encode import gzip_bytes
from tblog._http import session_for
from tblog._sql import resolve_read_token
from tblog._version import __version__

__all__ = ["ApiClient", "ApiError"]


class ApiError(Exception):
    """A request failed; the message is the server's error (or the network's)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """``host`` falls back to ``TB_API_URL``/``TB_HOST``; ``token`` to the read variables
    (``tblog._sql.READ_TOKEN_ENV``) when ``read``, else to the write ones (``TOKEN_ENV``)."""

    def __init__(
        self,
        host: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        read: bool = False,
    ) -> None:
        self.host = resolve_api_url(host)
        self._token = resolve_read_token(token) if read else resolve_token(token)
        self.timeout = timeout
        self.session = session_for(self.host, user_agent=f"tblog-cli/{__version__}")
        self.session.headers["Authorization"] = f"Bearer {self._token}"
        #: Told of each wait before an append is sent again: (reason, seconds, attempt).
        self.on_retry: Callable[[str, float, int], None] | None = None

    def __repr__(self) -> str:
        return f"<ApiClient host={self.host!r}>"

    def close(self) -> None:
        self.session.close()

    def _check(
        self, response: requests.Response, accept: tuple[int, ...] = ()
    ) -> requests.Response:
        if response.status_code >= 400 and response.status_code not in accept:
            try:
                body = response.json()
                message = body.get("error") if isinstance(body, dict) else None
            except ValueError:
                message = None
            text = message or response.text[:500].strip() or response.reason
            raise ApiError(
                f"{self.host}: HTTP {response.status_code}: {text}", response.status_code
            )
        return response

    def _request(
        self,
        method: str,
        path: str,
        accept: tuple[int, ...] = (),
        *,
        retry: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """``retry``: wait out 429/503 answers (``tblog._delivery.foreground``; a write is not sent
        again after a network error), telling ``on_retry`` of each wait."""
        url = f"{self.host}{path}"
        try:
            if retry:
                response = foreground.call(
                    lambda: self.session.request(method, url, timeout=self.timeout, **kwargs),
                    idempotent=False,
                    what=f"{method} {path}",
                    on_retry=self.on_retry,
                )
            else:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach {self.host}: {type(exc).__name__}") from None
        return self._check(response, accept)

    def sql(self, query: str) -> dict[str, Any]:
        """Run ``query`` with ``FORMAT JSON``; the Tinybird-shaped result (meta, data, rows)."""
        text = query.strip().rstrip(";")
        if " format " not in text.lower().replace("\n", " ")[-40:]:
            text += " FORMAT JSON"
        response = self._request("POST", "/v0/sql", data={"q": text})
        try:
            result = response.json()
        except ValueError:
            raise ApiError("the SQL API did not answer JSON") from None
        if not isinstance(result, dict):
            raise ApiError("the SQL API did not answer a JSON object")
        return result

    def sql_text(self, query: str) -> str:
        """Run ``query`` as given (its own FORMAT) and return the body as text."""
        return self._request("POST", "/v0/sql", data={"q": query}).text

    def append(self, datasource: str, lines: list[bytes], wait: bool = True) -> dict[str, Any]:
        """POST NDJSON ``lines`` (gzipped) to the Events API; the JSON answer."""
        params = {"name": datasource}
        if wait:
            params["wait"] = "true"
        body = gzip_bytes(b"\n".join(lines) + b"\n")
        response = self._request(
            "POST",
            "/v0/events",
            accept=(422,),  # partially ingested: the body says how many rows went where
            retry=True,
            params=params,
            data=body,
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )
        try:
            result = response.json()
        except ValueError:
            return {}
        return result if isinstance(result, dict) else {}

    def datasources(self) -> list[dict[str, Any]]:
        result = self._request("GET", "/v0/datasources").json()
        return list(result.get("datasources", [])) if isinstance(result, dict) else []
