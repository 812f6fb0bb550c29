"""LLM call traces for many tenants: one ``traces`` row per call, each under its tenant's token.

``TraceRecorder({tenant_id: token, ...})`` holds one channel of the shared sender
per tenant, each with that tenant's token (a Tinybird token scoped to
``tenant_id = '...'``, see ``tblog/datasources/traces.datasource``).  A row's
``tenant_id`` is always the one of the channel it leaves through, so a row can
never go out under another tenant's token.  Bad routing is an error, never a
silent loss: an empty or shared token fails at set-up, an unknown tenant fails
when the span starts.

``with recorder.span("question", tenant_id="acme", model="gpt-4o") as span:``
measures the call: ``latency_ms`` from enter to exit, ``ttfb_ms`` until the first
chunk (``span.chunk(text)`` or ``span.first_byte()``) and ``streaming_ms`` from
there to the end.  Spans opened inside another share its ``trace_id`` and point
at it through ``parent_span_id``.  Leaving the block buffers the row (no I/O);
an exception in the block is recorded (``status_text``) and re-raised.  With
``redact=True`` (the default, as for the logging handler) the row's texts and
JSON columns are scrubbed of secrets before it is encoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from tblog import _diag, context
from tblog._closing import Closing
from tblog._config import Options, resolve_api_url, row_options
from tblog._event.encode import to_text
from tblog._event.redact import build_redactor
from tblog._event.rows import RowChannel, json_text
from tblog._event.tb_logs import iso_utc

__all__ = ["ENVIRONMENTS", "LLMSpan", "TraceRecorder", "UnknownTenantError"]

ENVIRONMENTS = ("dev", "prod")
_BIG = ("query", "context", "response", "metadata_json", "headers_json")
_JSON_COLUMNS = ("metadata_json", "headers_json")

#: Monotonic clock of span timings, in seconds (tests replace it).
_clock = time.perf_counter

_current: ContextVar[LLMSpan | None] = ContextVar("tblog_llm_span", default=None)


class UnknownTenantError(LookupError):
    """A span or row names a tenant the recorder has no token for."""


def _opt_str(value: object) -> str | None:
    return None if value is None else value if isinstance(value, str) else to_text(value)


def _opt_uint(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0 or None, not {value!r}")
    return value


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class LLMSpan:
    """One LLM call being measured; becomes one ``traces`` row when the block ends."""

    def __init__(
        self,
        recorder: TraceRecorder,
        *,
        tenant_id: str,
        query: str,
        project_id: str,
        environment: str,
        model: str | None,
        context_text: str | None,
        metadata: Mapping[str, Any] | None,
        trace_id: str,
        parent_span_id: str | None,
    ) -> None:
        self._recorder = recorder
        self.tenant_id = tenant_id
        self.project_id = project_id
        self.environment = environment
        self.query = query
        self.model = model
        self.context = context_text
        self.metadata_json = json_text(metadata)  # a snapshot: the caller may change its dict
        self.trace_id = trace_id
        self.span_id = context.new_span_id()
        self.parent_span_id = parent_span_id
        self.response = ""
        self.tokens_prompt: int | None = None
        self.tokens_completion: int | None = None
        self.tokens_total: int | None = None
        self.status: int | None = None
        self.status_text: str | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.system_fingerprint: str | None = None
        self.headers_json = "{}"
        self._parts: list[str] = []
        self._started = 0.0
        self._wall = 0.0
        self._first: float | None = None
        self._token: Token[LLMSpan | None] | None = None
        self._done = False

    def __repr__(self) -> str:
        return (
            f"<tblog LLMSpan tenant={self.tenant_id!r} trace_id={self.trace_id!r} "
            f"span_id={self.span_id!r}>"
        )

    # -- measuring ---------------------------------------------------------------------

    def __enter__(self) -> LLMSpan:
        self._wall = time.time()
        self._started = _clock()
        self._token = _current.set(self)
        return self

    def first_byte(self) -> None:
        """Mark the first byte of the answer (only the first call counts)."""
        if self._first is None:
            self._first = _clock()

    def chunk(self, text: str) -> None:
        """One streamed piece of the answer: marks the first byte and appends the text."""
        self.first_byte()
        self._parts.append(text)

    def stream(self, chunks: Iterable[str]) -> Iterator[str]:
        """Pass ``chunks`` through, recording each one with ``chunk``."""
        for piece in chunks:
            self.chunk(piece)
            yield piece

    def set_response(
        self,
        response: str | None = None,
        *,
        tokens_prompt: int | None = None,
        tokens_completion: int | None = None,
        tokens_total: int | None = None,
        finish_reason: str | None = None,
        response_id: str | None = None,
        system_fingerprint: str | None = None,
        status: int | None = None,
        status_text: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """What the call answered; ``tokens_total`` defaults to prompt + completion."""
        if response is not None:
            self.response = response if isinstance(response, str) else to_text(response)
            self._parts = []
        self.tokens_prompt = _opt_uint(tokens_prompt, "tokens_prompt")
        self.tokens_completion = _opt_uint(tokens_completion, "tokens_completion")
        total = _opt_uint(tokens_total, "tokens_total")
        if total is None and self.tokens_prompt is not None and self.tokens_completion is not None:
            total = self.tokens_prompt + self.tokens_completion
        self.tokens_total = total
        self.finish_reason = _opt_str(finish_reason)
        self.response_id = _opt_str(response_id)
        self.system_fingerprint = _opt_str(system_fingerprint)
        if status is not None:
            self.status = _opt_uint(status, "status")
        if status_text is not None:
            self.status_text = _opt_str(status_text)
        if headers is not None:
            self.headers_json = json_text(headers)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ended = _clock()
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self._done:
            return
        self._done = True
        if exc is not None:
            if self.status is None:
                self.status = 500
            if self.status_text is None:
                self.status_text = f"{type(exc).__name__}: {to_text(exc)}"[:1000]
        elif self.status is None:
            self.status = 200
            self.status_text = self.status_text or "OK"
        response = self.response or "".join(self._parts)
        first = self._first
        row = {
            "tenant_id": self.tenant_id,
            "project_id": self.project_id,
            "environment": self.environment,
            "timestamp": iso_utc(self._wall),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "query": self.query,
            "context": self.context,
            "model": self.model,
            "metadata_json": self.metadata_json,
            "response": response,
            "response_length": len(response),
            "tokens_prompt": self.tokens_prompt,
            "tokens_completion": self.tokens_completion,
            "tokens_total": self.tokens_total,
            "latency_ms": _ms(ended - self._started),
            "ttfb_ms": _ms(first - self._started) if first is not None else None,
            "streaming_ms": _ms(ended - first) if first is not None else None,
            "status": self.status,
            "status_text": self.status_text,
            "finish_reason": self.finish_reason,
            "response_id": self.response_id,
            "system_fingerprint": self.system_fingerprint,
            "headers_json": self.headers_json,
        }
        self._recorder._ship(self.tenant_id, row)


class TraceRecorder(Closing):
    """Route LLM trace rows to the ``traces`` datasource, each tenant under its own token."""

    def __init__(
        self,
        tenants: Mapping[str, str],
        *,
        api_url: str | None = None,
        datasource: str = "traces",
        project_id: str = "",
        environment: str = "dev",
        **options: Any,
    ) -> None:
        if not isinstance(tenants, Mapping):
            raise TypeError("tenants must be a mapping of tenant_id to that tenant's token")
        self.api_url = resolve_api_url(api_url)
        self.datasource = datasource
        self.project_id = self._check_project(project_id)
        self.environment = self._check_environment(environment)
        self._options = Options(**row_options("TraceRecorder", options))
        opts = self._options
        self._redactor = build_redactor(opts.redact, opts.redact_keys, opts.redact_patterns)
        self._lock = threading.Lock()
        self._channels: dict[str, RowChannel] = {}
        self._dropped: dict[str, int] = {}
        self._tokens: dict[str, str] = {}  # token -> tenant, to refuse a token shared by tenants
        for tenant_id, token in tenants.items():
            self.add_tenant(tenant_id, token)

    def __repr__(self) -> str:
        return f"<tblog TraceRecorder {len(self._channels)} tenants -> {self.api_url}>"

    # -- set-up ------------------------------------------------------------------------

    @staticmethod
    def _check_environment(environment: object) -> str:
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}, not {environment!r}")
        return str(environment)

    @staticmethod
    def _check_project(project_id: object) -> str:
        if not isinstance(project_id, str):
            raise TypeError("project_id must be a str")
        return project_id

    def add_tenant(self, tenant_id: str, token: str) -> None:
        """Route ``tenant_id``'s rows through ``token`` (a token scoped to that tenant)."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError(f"tenant_id must be a non-empty str, not {tenant_id!r}")
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"tenant {tenant_id!r} has no token: give each tenant its own token")
        token = token.strip()
        with self._lock:
            if tenant_id in self._channels:
                raise ValueError(f"tenant {tenant_id!r} is already routed")
            other = self._tokens.get(token)
            if other is not None:
                raise ValueError(
                    f"tenants {other!r} and {tenant_id!r} were given the same token; each "
                    "tenant needs its own token, scoped to its tenant_id"
                )
            self._channels[tenant_id] = RowChannel(
                api_url=self.api_url,
                token=token,
                datasource=self.datasource,
                options=self._options,
                label=f"traces:{self.datasource}:{tenant_id}",
            )
            self._tokens[token] = tenant_id

    def remove_tenant(self, tenant_id: str, timeout: float | None = None) -> bool:
        """Deliver ``tenant_id``'s buffered rows (within ``timeout``) and stop routing it."""
        with self._lock:
            channel = self._channels.pop(tenant_id, None)
            self._tokens = {t: tid for t, tid in self._tokens.items() if tid != tenant_id}
        if channel is None:
            raise UnknownTenantError(f"no tenant {tenant_id!r} in this TraceRecorder")
        return channel.close(timeout)

    @property
    def tenants(self) -> list[str]:
        with self._lock:
            return sorted(self._channels)

    def _require(self, tenant_id: object) -> str:
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError(f"tenant_id must be a non-empty str, not {tenant_id!r}")
        with self._lock:
            known = tenant_id in self._channels
        if not known:
            raise UnknownTenantError(
                f"no token for tenant {tenant_id!r}: add it with "
                "TraceRecorder({tenant_id: token, ...}) or add_tenant()"
            )
        return tenant_id

    # -- recording ---------------------------------------------------------------------

    def span(
        self,
        query: str,
        *,
        tenant_id: str | None = None,
        model: str | None = None,
        context: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        project_id: str | None = None,
        environment: str | None = None,
        trace_id: str | None = None,
    ) -> LLMSpan:
        """A context manager measuring one LLM call of ``tenant_id``.

        Inside another span, ``tenant_id`` defaults to the enclosing span's (and must
        match it), the trace id is shared and ``parent_span_id`` points at it.
        Raises ``UnknownTenantError`` at once for a tenant without a token.
        """
        parent = _current.get()
        if parent is not None and parent._recorder is not self:
            parent = None
        if tenant_id is None and parent is not None:
            tenant_id = parent.tenant_id
        tenant = self._require(tenant_id)
        if parent is not None and parent.tenant_id != tenant:
            raise ValueError(
                f"a span of tenant {tenant!r} cannot nest in a span of tenant {parent.tenant_id!r}"
            )
        if not isinstance(query, str):
            raise TypeError("query must be a str")
        if trace_id is None:
            trace_id = parent.trace_id if parent is not None else ""
            trace_id = trace_id or _context_trace_id() or _new_trace_id()
        return LLMSpan(
            self,
            tenant_id=tenant,
            query=query,
            project_id=self.project_id if project_id is None else self._check_project(project_id),
            environment=(
                self.environment if environment is None else self._check_environment(environment)
            ),
            model=_opt_str(model),
            context_text=_opt_str(context),
            metadata=metadata,
            trace_id=trace_id,
            parent_span_id=parent.span_id if parent is not None else None,
        )

    def _ship(self, tenant_id: str, row: dict[str, Any]) -> None:
        with self._lock:
            channel = self._channels.get(tenant_id)
            if channel is None:
                self._dropped["unknown_tenant"] = self._dropped.get("unknown_tenant", 0) + 1
        if channel is None:
            _diag.diag(
                logging.WARNING, f"traces-unknown:{tenant_id}",
                "tblog: tenant %r was removed while its span ran; its row was dropped", tenant_id,
            )  # fmt: skip
            return
        if self._redactor is not None:
            try:
                row = self._redactor.row(row, _JSON_COLUMNS)
            except Exception:  # noqa: BLE001 - a span never raises for its row; none leaks
                channel.count_drop("encode_error")
                return
        row["tenant_id"] = tenant_id  # always the channel's own tenant (never scrubbed)
        channel.put_row(row, _BIG)

    # -- delivery ----------------------------------------------------------------------

    def _all(self) -> list[RowChannel]:
        with self._lock:
            return list(self._channels.values())

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver every tenant's rows recorded so far; True when all of them arrived."""
        channels = self._all()
        if not channels:
            return True
        return channels[0].sender.flush(timeout, [c.channel for c in channels])

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is buffered (within ``timeout``, default ``shutdown_timeout``)."""
        channels = self._all()
        ok = self.flush(self._options.shutdown_timeout if timeout is None else timeout)
        for channel in channels:
            channel.channel.closed = True
        return ok

    def stats(self) -> dict[str, Any]:
        """Per-tenant counters (``tenants``), their totals, and the recorder's own drops."""
        with self._lock:
            per = {tid: ch.stats() for tid, ch in self._channels.items()}
            dropped = dict(self._dropped)
        for tenant_stats in per.values():
            for reason, n in tenant_stats["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
        return {
            "datasource": self.datasource,
            "tenants": per,
            "enqueued": sum(s["enqueued"] for s in per.values()),
            "sent": sum(s["sent"] for s in per.values()),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
        }


def _context_trace_id() -> str:
    return context.get_trace_id()


def _new_trace_id() -> str:
    return context.new_trace_id()
