"""``with`` blocks that close: ``Closing`` and ``AsyncClosing``, mixins of tblog's clients.

``Closing``: a ``with`` block returns the object and calls its ``close()`` on the way
out (``Datasource``, ``API``, ``Tracker``, ``TraceRecorder``, ``QueryClient``);
``AsyncClosing`` the same for ``async with`` and an awaitable ``close()``; ``Serving``
an HTTP server of tblog's own (``tblog local``, ``tblog ui``) that a ``with`` block starts
on a thread and stops.
"""

from __future__ import annotations

import socketserver
import threading
from typing import TypeVar

__all__ = ["AsyncClosing", "Closing", "Serving"]

_C = TypeVar("_C", bound="Closing")
_A = TypeVar("_A", bound="AsyncClosing")
_S = TypeVar("_S", bound="Serving")


class Closing:
    """``with obj:`` gives ``obj`` and calls ``obj.close()`` when the block ends."""

    __slots__ = ()

    def close(self) -> object:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClosing:
    """``async with obj:`` gives ``obj`` and awaits ``obj.close()`` when the block ends."""

    __slots__ = ()

    async def close(self) -> object:
        raise NotImplementedError

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Serving(Closing):
    """A server (``_httpd``) served from a daemon thread named ``_thread_name`` by
    ``start()``, or from the caller's by ``serve_forever()``; ``close()`` stops both and
    frees the port.  ``with server:`` starts it and closes it."""

    _httpd: socketserver.TCPServer
    _thread: threading.Thread | None = None
    _thread_name = "tblog-server"

    @property
    def bind_host(self) -> str:
        """The address the server listens on."""
        host = self._httpd.server_address[0]
        return host.decode() if isinstance(host, (bytes, bytearray)) else str(host)

    @property
    def url(self) -> str:
        return f"http://{self.bind_host}:{self._httpd.server_address[1]}"

    def start(self: _S) -> _S:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=self._thread_name, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self: _S) -> _S:
        return self.start()
