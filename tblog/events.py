"""Product and LLM event tracking, in the manner of the Trubrics SDK.

``Tracker(api_url, token)`` ships one row per ``track(user_id, event, ...)`` to
the ``events`` datasource (``tblog/datasources/events.datasource``), and two
per ``track_llm(...)``: the user's prompt, then the assistant's generation,
sharing a ``thread_id``.  Calls only encode the row and buffer it: the shared
sender delivers every ``flush_interval`` seconds or ``flush_batch_size`` rows,
whichever comes first, and ``close()`` delivers what is left.  ``track`` never
raises into the app: a bad argument is logged on ``logger`` and counted.  With
``redact=True`` (the default, as for the logging handler) the properties, prompts
and generations are scrubbed of secrets before they are encoded.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Mapping
from typing import Any

from tblog._closing import Closing
from tblog._config import Options, row_options
from tblog._event.redact import build_redactor
from tblog._event.rows import RowChannel, RowProducer, json_text
from tblog._event.tb_logs import iso_utc, new_event_id

__all__ = ["Tracker"]

_BIG = ("text", "prompt", "properties")


def _epoch(timestamp: _dt.datetime | float | None) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC."""
    if timestamp is None:
        return time.time()
    if isinstance(timestamp, _dt.datetime):
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=_dt.timezone.utc)
        return timestamp.timestamp()
    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        return float(timestamp)
    raise TypeError(f"timestamp must be a datetime or epoch seconds, not {timestamp!r}")


class Tracker(RowProducer, Closing):
    """Track user and LLM events to a Tinybird datasource without blocking the caller."""

    def __init__(  # noqa: PLR0917 - the Trubrics SDK's positional order
        self,
        api_url: str | None = None,
        token: str | None = None,
        datasource: str = "events",
        flush_interval: float = 10,
        flush_batch_size: int = 20,
        logger: logging.Logger | None = None,
        **options: Any,
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger("tblog.events")
        self._rows = RowChannel(
            api_url=api_url,
            token=token,
            datasource=datasource,
            options=Options(
                batch_size=flush_batch_size,
                flush_interval=flush_interval,
                **row_options("Tracker", options),
            ),
            label=f"events:{datasource}",
        )
        self.datasource = datasource
        self.api_url = self._rows.api_url
        opts = self._rows.options
        self._redactor = build_redactor(opts.redact, opts.redact_keys, opts.redact_patterns)

    def __repr__(self) -> str:
        return f"<tblog Tracker {self.datasource!r} -> {self.api_url}>"

    def _row(
        self,
        *,
        user_id: str,
        event: str,
        when: float,
        properties: Mapping[str, Any] | None,
        thread_id: str | None = None,
        assistant_id: str | None = None,
        text: str | None = None,
        prompt: str | None = None,
        latency: float | None = None,
    ) -> dict[str, Any]:
        redactor = self._redactor
        if redactor is not None:
            if properties and isinstance(properties, Mapping):
                properties = redactor.mapping(properties)
            text = redactor.text(text) if text else text
            prompt = redactor.text(prompt) if prompt else prompt
        return {
            "timestamp": iso_utc(when),
            "event_id": new_event_id(),
            "user_id": user_id,
            "event": event,
            "thread_id": thread_id or "",
            "assistant_id": assistant_id or "",
            "text": text or "",
            "prompt": prompt or "",
            "latency_s": latency,
            "properties": json_text(properties),
        }

    def _check(self, what: str, **values: Any) -> bool:
        for name, value in values.items():
            if not isinstance(value, str) or (name in ("user_id", "event") and not value):
                self._rows.count_drop("invalid")
                self.logger.error(
                    "tblog: %s: %s must be a non-empty str, not %r; event dropped",
                    what, name, type(value).__name__,
                )  # fmt: skip
                return False
        return True

    def track(
        self,
        user_id: str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | float | None = None,
    ) -> None:
        """Record that ``user_id`` did ``event`` (at ``timestamp``, default now)."""
        try:
            if not self._check("track", user_id=user_id, event=event):
                return
            row = self._row(
                user_id=user_id, event=event, when=_epoch(timestamp), properties=properties
            )
            if not self._rows.put_row(row, _BIG):
                self.logger.debug("tblog: track: event %r not buffered", event)
        except Exception as exc:  # noqa: BLE001 - tracking never raises into the app
            self._rows.count_drop("invalid")
            self.logger.error("tblog: track(%r) failed: %s", event, exc)

    def track_llm(  # noqa: PLR0917 - the Trubrics SDK's positional order
        self,
        user_id: str,
        prompt: str,
        generation: str,
        assistant_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: _dt.datetime | float | None = None,
        latency: float | None = None,
        thread_id: str | None = None,
        prompt_event_name: str = "Prompt",
        generation_event_name: str = "Generation",
    ) -> None:
        """Record a prompt and its generation as two events of one thread.

        The generation happens at ``timestamp`` (default now); the prompt ``latency``
        seconds before it.  ``properties`` go on both events.
        """
        try:
            if not self._check(
                "track_llm", user_id=user_id, prompt=prompt, generation=generation,
                prompt_event_name=prompt_event_name,
                generation_event_name=generation_event_name,
            ):  # fmt: skip
                return
            if latency is not None and (
                isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0
            ):
                raise ValueError(f"latency must be seconds >= 0, not {latency!r}")
            generated_at = _epoch(timestamp)
            prompted_at = generated_at - latency if latency else generated_at
            prompt_row = self._row(
                user_id=user_id, event=prompt_event_name, when=prompted_at,
                properties=properties, thread_id=thread_id, text=prompt,
            )  # fmt: skip
            generation_row = self._row(
                user_id=user_id, event=generation_event_name, when=generated_at,
                properties=properties, thread_id=thread_id, assistant_id=assistant_id,
                text=generation, prompt=prompt,
                latency=float(latency) if latency is not None else None,
            )  # fmt: skip
            self._rows.put_row(prompt_row, _BIG)
            self._rows.put_row(generation_row, _BIG)
        except Exception as exc:  # noqa: BLE001 - tracking never raises into the app
            self._rows.count_drop("invalid", 2)
            self.logger.error("tblog: track_llm failed: %s; 2 events dropped", exc)
