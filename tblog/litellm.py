"""LiteLLM callback: one row per LLM call in the ``litellm`` datasource.

``TinybirdLitellmHandler`` is a ``litellm`` ``CustomLogger``; put it in
``litellm.callbacks`` and every ``completion``/``acompletion`` (streaming or not,
successful or failed) becomes one row of ``tblog/datasources/litellm.datasource``
with the fields of the Tinybird SDK's handler: model, messages, user, start and
end time, call id, stream, call type, provider, response, cost, token usage,
duration, exception and the API key masked to its first and last 4 characters.

The callbacks only build and encode the row, then buffer it for the shared
sender: no request per call, no I/O on LiteLLM's thread or the event loop, and
no exception ever reaches LiteLLM (failures are counted in ``stats()``).  With
``redact=True`` (the default, as for the logging handler) the row's texts and
nested data (messages, response, metadata, headers, the error) are scrubbed of
secrets before it is encoded; the masked ``api_key`` column stays as it is.
Requires the ``litellm`` extra: ``pip install 'tblog[litellm]'``.

``TinybirdLitellmSyncHandler`` and ``TinybirdLitellmAsyncHandler`` are the SDK's
names for it, with the SDK's signature ``(api_url, tinybird_token,
datasource_name, api_version)``; each ships every call, sync or async.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Mapping
from typing import Any

from tblog import _diag
from tblog._config import Options, row_options
from tblog._event.encode import jsonable, to_text
from tblog._event.redact import build_redactor
from tblog._event.rows import RowChannel, RowProducer, text_or_empty
from tblog._event.tb_logs import iso_utc

try:
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("tblog.litellm needs LiteLLM: pip install 'tblog[litellm]'") from exc

__all__ = [
    "TinybirdLitellmAsyncHandler",
    "TinybirdLitellmHandler",
    "TinybirdLitellmSyncHandler",
    "mask_api_key",
]

_BIG = ("messages", "response", "traceback", "response_headers", "proxy_metadata")


def mask_api_key(key: object) -> str:
    """``sk-abcd****wxyz``-style: the first and last 4 characters; ``****`` when short."""
    if not key:
        return ""
    text = key if isinstance(key, str) else to_text(key)
    if len(text) <= 8:
        return "****"
    return f"{text[:4]}****{text[-4:]}"


def _epoch(value: object) -> float | None:
    if isinstance(value, _dt.datetime):
        return value.timestamp()  # a naive one (LiteLLM's datetime.now()) is local time
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _as_dict(obj: Any) -> Any:
    """A response object (pydantic model, dict or other) as JSON-able data."""
    if obj is None:
        return None
    for method in ("model_dump", "dict"):
        dump = getattr(obj, method, None)
        if callable(dump):
            try:
                return jsonable(dump())
            except Exception:  # noqa: BLE001, S112 - try the next way
                continue
    return jsonable(obj)


def _usage(response: Any, slo: Mapping[str, Any]) -> tuple[int, int, int]:
    usage: Any = None
    if isinstance(response, Mapping):
        usage = response.get("usage")
    if isinstance(usage, Mapping):
        values = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    else:
        values = [slo.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    ints = [v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0 for v in values]
    return ints[0], ints[1], ints[2]


def _cost(kwargs: Mapping[str, Any], response_obj: Any, slo: Mapping[str, Any]) -> float:
    cost = slo.get("response_cost")
    if cost is None:
        cost = kwargs.get("response_cost")
    if cost is None and response_obj is not None:
        try:
            cost = litellm.completion_cost(
                completion_response=response_obj,
                custom_llm_provider=kwargs.get("custom_llm_provider"),
            )
        except Exception:  # noqa: BLE001 - unknown models have no price
            cost = None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else 0.0


class TinybirdLitellmHandler(RowProducer, CustomLogger):
    """Ship one row per LiteLLM call to ``datasource_name`` through the shared sender."""

    def __init__(
        self,
        api_url: str | None = None,
        tinybird_token: str | None = None,
        datasource_name: str = "litellm",
        api_version: str = "v0",
        **options: Any,
    ) -> None:
        if api_version != "v0":  # the SDK's argument; the Events API is /v0/events
            raise ValueError(f"api_version must be 'v0' (the Events API's), not {api_version!r}")
        super().__init__()
        self.api_version = api_version
        self._rows = RowChannel(
            api_url=api_url,
            token=tinybird_token,
            datasource=datasource_name,
            options=Options(**row_options(type(self).__name__, options)),
            label=f"litellm:{datasource_name}",
            option_name="datasource_name",
        )
        self.api_url = self._rows.api_url
        self.datasource_name = datasource_name
        opts = self._rows.options
        self._redactor = build_redactor(opts.redact, opts.redact_keys, opts.redact_patterns)

    def __repr__(self) -> str:
        return f"<tblog {type(self).__name__} {self.datasource_name!r} -> {self.api_url}>"

    @property
    def token(self) -> str:
        """The token rows are sent with (the SDK's handler has it as ``token``)."""
        return self._rows.channel._token

    # -- the row -----------------------------------------------------------------------

    def build_row(
        self, kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> dict[str, Any]:
        """The row for one call (a new dict; nothing of LiteLLM's is modified)."""
        slo = kwargs.get("standard_logging_object") or {}
        if not isinstance(slo, Mapping):
            slo = {}
        litellm_params = kwargs.get("litellm_params") or {}
        if not isinstance(litellm_params, Mapping):
            litellm_params = {}
        now = time.time()
        start = _epoch(start_time)
        end = _epoch(end_time)
        start = start if start is not None else (end if end is not None else now)
        end = end if end is not None else now
        response = _as_dict(response_obj)
        prompt, completion, total = _usage(response, slo)
        exception = kwargs.get("exception")
        failed = exception is not None or slo.get("status") == "failure"
        return {
            "id": text_or_empty(kwargs.get("litellm_call_id")),
            "model": text_or_empty(kwargs.get("model")),
            "messages": jsonable(kwargs.get("messages")),
            "user": text_or_empty(kwargs.get("user")),
            "start_time": iso_utc(start),
            "end_time": iso_utc(end),
            "stream": bool(kwargs.get("stream", False)),
            "call_type": text_or_empty(kwargs.get("call_type") or "completion"),
            "provider": text_or_empty(kwargs.get("custom_llm_provider")),
            "status": "failure" if failed else "success",
            "log_event_type": text_or_empty(kwargs.get("log_event_type")),
            "llm_api_duration_ms": _num(kwargs.get("llm_api_duration_ms")),
            "response_headers": jsonable(kwargs.get("response_headers") or {}),
            "cache_hit": bool(kwargs.get("cache_hit") or False),
            "standard_logging_object_id": text_or_empty(slo.get("id")),
            "standard_logging_object_status": text_or_empty(slo.get("status")),
            "standard_logging_object_response_time": _num(slo.get("response_time")),
            "standard_logging_object_saved_cache_cost": _num(slo.get("saved_cache_cost")),
            "api_key": mask_api_key(kwargs.get("api_key") or litellm_params.get("api_key")),
            "proxy_metadata": jsonable(litellm_params.get("metadata") or {}),
            "response": response if response is not None else {},
            "cost": _cost(kwargs, response_obj, slo) if not failed else 0.0,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "duration": max(0.0, end - start),
            "exception": to_text(exception) if exception is not None else "",
            "exception_type": type(exception).__name__ if exception is not None else "",
            "traceback": text_or_empty(kwargs.get("traceback_exception")),
        }

    def _ship(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            row = self.build_row(kwargs if isinstance(kwargs, Mapping) else {}, response_obj,
                                 start_time, end_time)  # fmt: skip
            if self._redactor is not None:
                row = self._redactor.row(row)
        except Exception as exc:  # noqa: BLE001 - a callback never raises into LiteLLM
            self._rows.count_drop("callback_error")
            _diag.diag(
                logging.WARNING, f"litellm-callback:{self.datasource_name}",
                "tblog: could not build the LiteLLM row (%s); dropped it", type(exc).__name__,
            )  # fmt: skip
            return
        self._rows.put_row(row, _BIG)

    # -- LiteLLM's callbacks -----------------------------------------------------------

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ship(kwargs, response_obj, start_time, end_time)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ship(kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ship(kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ship(kwargs, response_obj, start_time, end_time)


class TinybirdLitellmSyncHandler(TinybirdLitellmHandler):
    """The Tinybird SDK's name for its synchronous LiteLLM handler; same signature.

    Unlike the SDK's (which sends one request per call, and ships only the callbacks
    LiteLLM makes synchronously), it is the complete ``TinybirdLitellmHandler``: every
    ``completion`` and ``acompletion`` is one buffered row.  Register one handler, not
    this one and ``TinybirdLitellmAsyncHandler``: both would ship each call.
    """


class TinybirdLitellmAsyncHandler(TinybirdLitellmHandler):
    """The Tinybird SDK's name for its async LiteLLM handler; same signature.

    The complete ``TinybirdLitellmHandler`` as well: its async callbacks buffer the row and
    return (nothing waits on the event loop), and sync ``completion`` calls are rows too.
    """


def _num(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
