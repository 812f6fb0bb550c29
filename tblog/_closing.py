"""``with`` blocks that close: ``Closing`` and ``AsyncClosing``, mixins of tblog's clients.

``Closing``: a ``with`` block returns the object and calls its ``close()`` on the way
out (``Datasource``, ``API``, ``Tracker``, ``TraceRecorder``, ``QueryClient``);
``AsyncClosing`` the same for ``async with`` and an awaitable ``close()``.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["AsyncClosing", "Closing"]

_C = TypeVar("_C", bound="Closing")
_A = TypeVar("_A", bound="AsyncClosing")


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
