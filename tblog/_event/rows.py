"""One producer of JSON rows for one datasource, on the shared sender (internal).

The LiteLLM handler, the trace recorder, the event ``Tracker`` and ``Datasource``
all ship plain JSON rows.  ``RowChannel`` encodes a row on the caller's thread
(one ``dumps``: CPU only, no I/O, and a snapshot, so the caller may change its
dicts afterwards), caps its size and hands the line to a ``Channel`` of the
shared sender, which batches, gzips, retries and delivers at exit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tblog._config import Options, check_datasource, resolve_api_url, resolve_token
from tblog._delivery.batch import line_size
from tblog._delivery.channel import Channel
from tblog._delivery.sender import get_sender
from tblog._event.encode import dumps, to_text, truncate_text

__all__ = ["RowChannel", "RowProducer", "cap_line", "json_text", "text_or_empty"]


def _identity(line: bytes) -> bytes:
    return line


def cap_line(row: dict[str, Any], max_bytes: int, big_fields: Iterable[str] = ()) -> bytes | None:
    """``row`` as one JSON line of at most ``max_bytes``; None when it cannot fit.

    When too large, the ``big_fields`` (as JSON text when not already text) are cut,
    largest first, and ``truncated: true`` is set.  ``row`` itself is not modified.
    """
    line = dumps(row)
    if len(line) <= max_bytes:
        return line
    shrunk = dict(row)
    shrunk["truncated"] = True
    names = [name for name in big_fields if shrunk.get(name) is not None]
    for name in names:
        value = shrunk[name]
        shrunk[name] = value if isinstance(value, str) else dumps(value).decode("utf-8")
    names.sort(key=lambda n: len(shrunk[n]), reverse=True)
    for name in names:
        excess = len(line) - max_bytes
        if excess <= 0:
            break
        text = shrunk[name]
        shrunk[name] = truncate_text(text, max(64, len(text.encode("utf-8")) - excess - 256))
        line = dumps(shrunk)
    return line if len(line) <= max_bytes else None


class RowChannel:
    """Rows for one datasource under one token, delivered by the shared sender."""

    def __init__(
        self,
        *,
        api_url: str | None,
        token: str | None,
        datasource: str,
        options: Options,
        label: str,
        option_name: str = "datasource",
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        token = resolve_token(token)
        self.datasource = check_datasource(datasource, option_name)
        self.options = options
        self.sender = get_sender()
        self.channel = Channel(
            self.sender,
            api_url=self.api_url,
            token=token,
            datasource=self.datasource,
            options=options,
            encode=_identity,
            label=label,
        )

    def __repr__(self) -> str:
        return f"<tblog RowChannel {self.channel.label!r} -> {self.api_url} {self.datasource!r}>"

    @property
    def closed(self) -> bool:
        return self.channel.closed

    def put_row(self, row: dict[str, Any], big_fields: Iterable[str] = ()) -> bool:
        """Encode ``row`` now and buffer it. Never blocks, never raises; drops are counted."""
        try:
            if self.channel.closed:
                self.channel.count_drop("closed")
                return False
            line = cap_line(row, self.options.max_event_bytes, big_fields)
            if line is None:
                self.channel.count_drop("too_large")
                return False
            return self.channel.put(line, line_size(line))
        except Exception:  # noqa: BLE001 - a row never raises into the app
            self.channel.count_drop("encode_error")
            return False

    def put_line(self, line: bytes) -> bool:
        """Buffer one already-encoded NDJSON line (no trailing newline)."""
        if self.channel.closed:
            self.channel.count_drop("closed")
            return False
        if len(line) > self.options.max_event_bytes:
            self.channel.count_drop("too_large")
            return False
        return self.channel.put(line, line_size(line))

    def count_drop(self, reason: str, n: int = 1) -> None:
        self.channel.count_drop(reason, n)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what was buffered before the call; True when all of it arrived."""
        return self.sender.flush(timeout, [self.channel])

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is buffered (within ``timeout``, default ``shutdown_timeout``), detach."""
        if self.channel.closed:
            return True
        try:
            return self.flush(self.options.shutdown_timeout if timeout is None else timeout)
        finally:
            self.channel.closed = True

    def stats(self) -> dict[str, Any]:
        return self.channel.stats()


class RowProducer:
    """``flush``/``close``/``stats`` handed to the ``RowChannel`` in ``self._rows``.

    The ones of ``Datasource``, ``Tracker`` and the LiteLLM handler.
    """

    __slots__ = ()
    _rows: RowChannel

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver the rows buffered so far; True when all of them arrived."""
        return self._rows.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is buffered (within ``timeout``, default ``shutdown_timeout``), detach.

        Idempotent.
        """
        return self._rows.close(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: enqueued, sent, batches, drops by reason, last error, and more."""
        return self._rows.stats()


def text_or_empty(value: object) -> str:
    """``value`` as text for a String column (``""`` for None)."""
    return "" if value is None else value if isinstance(value, str) else to_text(value)


def json_text(value: Mapping[str, Any] | None) -> str:
    """A mapping as its JSON text (``"{}"`` for None), snapshotting it."""
    return "{}" if value is None else dumps(value).decode("utf-8")
