"""``tblog ui``'s server: the web view of ``tblog.ui`` on a loopback port, for an API that
is elsewhere (Tinybird's, or a ``tblog local`` on another port or machine).

The browser calls that API's ``/v0/sql`` itself (Tinybird answers CORS; a ``tblog local``
needs ``--allowed-origin`` with this server's origin), with the token in the
``Authorization`` header.  The page learns the API's address, and the token this server
was given, from ``GET /ui/config``; the token is handed out once (the page keeps it in
memory and in its tab's sessionStorage), never written into the page, a URL or a log.
Only loopback Host names are answered (against DNS rebinding), and a request from
another origin is refused.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tblog._closing import Serving
from tblog._config import resolve_api_url
from tblog.ui import ASSETS, asset, security_headers

__all__ = ["UiServer"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (what a CSP source and CORS compare)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _loopback_host(header: str | None) -> bool:
    """Whether a Host header names this machine's loopback (a name or an address)."""
    host = (header or "").strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that left mid-answer is no error; anything else is one line."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            print(f"tblog ui: request from {client_address[0]} failed: {exc!r}", file=sys.stderr)


class UiServer(Serving):
    """The web view on ``http://host:port/`` reading from ``api_url`` with ``token``.

    ``port=0`` picks a free port (``url`` tells which).  ``token`` (a read token) is given
    to the first page that asks; later pages ask the user for one.
    """

    _thread_name = "tblog-ui"

    def __init__(
        self,
        api_url: str | None,
        token: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 7182,
        logs: str = "tb_logs",
        traces: str = "traces",
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self.logs = logs
        self.traces = traces
        self._token = token
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _make_handler(self))

    def __repr__(self) -> str:
        return f"UiServer(url={self.url!r}, api_url={self.api_url!r})"

    @property
    def api_origin(self) -> str:
        return _origin(self.api_url)

    def config(self) -> bytes:
        """``/ui/config``: the API's address and datasources, and the token (once only)."""
        with self._lock:
            token, self._token = self._token, None
        body: dict[str, Any] = {"api": self.api_url, "logs": self.logs, "traces": self.traces}
        if token:
            body["token"] = token
        return json.dumps(body).encode()


def _make_handler(server: UiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tblog-ui"
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet, like tblog local

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            origin = self.headers.get("Origin")
            own = f"http://{self.headers.get('Host', '')}"
            if not self.path.startswith("/") or not _loopback_host(self.headers.get("Host")):
                self._send(421, b'{"error": "this server answers to loopback names only"}',
                           {"Content-Type": "application/json"})  # fmt: skip
            elif origin is not None and origin != own:
                self._send(403, b'{"error": "cross-origin requests are refused"}',
                           {"Content-Type": "application/json"})  # fmt: skip
            elif path == "/ui/config":
                self._send(200, server.config(), {
                    **security_headers(), "Content-Type": "application/json",
                })  # fmt: skip
            elif path in ASSETS and (found := asset(path, server.api_origin)) is not None:
                self._send(200, found.body, found.headers)
            else:
                self._send(404, b'{"error": "no such page"}', {"Content-Type": "application/json"})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            length = self.headers.get("Content-Length", "0").strip()
            if length not in ("", "0") or "Transfer-Encoding" in self.headers:
                self.close_connection = True  # a GET body is never read: no next request
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    return Handler
