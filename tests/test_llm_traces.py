"""tblog.llm.TraceRecorder: traces rows, span timings, nesting and per-tenant token routing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest

import tblog
from tblog import llm
from tblog.llm import TraceRecorder, UnknownTenantError
from tests.eventsapi import EventsAPI, Request

TOKENS = {
    "acme": "p.acme-scoped-token-000000000000",
    "globex": "p.globex-scoped-token-1111111111",
    "initech": "p.initech-scoped-token-22222222",
}


class ScopedEventsAPI(EventsAPI):
    """The Events API with one token per tenant, each allowed to write only its tenant's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.tenant_of = {f"Bearer {tok}": tenant for tenant, tok in TOKENS.items()}
        self.violations: list[tuple[str, str]] = []

    def _ingest(self, req: Request, store: bool) -> tuple[int, dict[str, Any]]:
        tenant = self.tenant_of.get(req.headers.get("Authorization", ""))
        if tenant is None:
            return 403, {"error": "invalid authentication token"}
        body = req.body
        if req.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        for line in body.splitlines():
            if line.strip() and json.loads(line).get("tenant_id") != tenant:
                self.violations.append((tenant, json.loads(line).get("tenant_id")))
                return 403, {"error": "row outside the token's scope"}
        headers = req.headers
        req.headers = {**headers, "Authorization": f"Bearer {self.token}"}
        try:
            return super()._ingest(req, store)
        finally:
            req.headers = headers


@pytest.fixture
def scoped() -> Iterator[ScopedEventsAPI]:
    api = ScopedEventsAPI()
    yield api
    api.close()


@pytest.fixture
def recorder(scoped: ScopedEventsAPI) -> Iterator[TraceRecorder]:
    rec = TraceRecorder(TOKENS, api_url=scoped.url, project_id="p1", flush_interval=60)
    yield rec
    rec.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(llm, "_clock", fake)
    return fake


def test_each_tenant_rows_leave_only_with_its_own_token(
    scoped: ScopedEventsAPI, recorder: TraceRecorder
) -> None:
    for i in range(6):
        for tenant in ("acme", "globex", "initech"):
            with recorder.span(f"q{i}", tenant_id=tenant, model="gpt-4o") as span:
                span.set_response(f"a{i}", tokens_prompt=3, tokens_completion=4)
    assert scoped.requests == []  # buffered; nothing on the caller's thread
    assert recorder.flush(10)
    assert scoped.violations == []
    assert scoped.quarantine["traces"] == []
    rows = scoped.rows("traces")
    assert len(rows) == 18
    assert len(scoped.requests) == 3  # one batch per tenant
    for req in scoped.requests:
        tenant = scoped.tenant_of[req.headers["Authorization"]]
        lines = gzip.decompress(req.body).splitlines()
        assert {json.loads(line)["tenant_id"] for line in lines} == {tenant}
        assert all(tok not in req.path + json.dumps(req.params) for tok in TOKENS.values())
    stats = recorder.stats()
    assert stats["sent"] == 18 and stats["dropped_total"] == 0
    assert set(stats["tenants"]) == set(TOKENS)
    assert all(tok not in repr(stats) + repr(recorder) for tok in TOKENS.values())
    row = rows[0]
    assert (row["project_id"], row["environment"], row["model"]) == ("p1", "dev", "gpt-4o")
    assert (row["tokens_prompt"], row["tokens_completion"], row["tokens_total"]) == (3, 4, 7)
    assert row["status"] == 200 and row["parent_span_id"] is None


def test_span_measures_latency_ttfb_and_streaming(
    scoped: ScopedEventsAPI, recorder: TraceRecorder, clock: FakeClock
) -> None:
    metadata = {"feature": "chat"}
    with recorder.span("Tell me", tenant_id="acme", metadata=metadata, context="doc") as span:
        clock.now += 0.25
        for piece in span.stream(["Once ", "upon "]):
            clock.now += 0.5 if piece == "Once " else 0.0
        span.chunk("a time")
        clock.now += 0.25
        span.set_response(finish_reason="stop", response_id="r-1", headers={"x-req": "1"})
        metadata["feature"] = "changed"  # the span keeps what it was given
    assert recorder.flush(10)
    [row] = scoped.rows("traces")
    assert scoped.quarantine["traces"] == []
    assert (row["latency_ms"], row["ttfb_ms"], row["streaming_ms"]) == (1000, 250, 750)
    assert row["response"] == "Once upon a time" and row["response_length"] == 16
    assert row["metadata_json"] == '{"feature":"chat"}' and row["context"] == "doc"
    assert row["headers_json"] == '{"x-req":"1"}'
    assert (row["finish_reason"], row["response_id"]) == ("stop", "r-1")


def test_without_a_first_byte_only_latency_is_set(
    scoped: ScopedEventsAPI, recorder: TraceRecorder, clock: FakeClock
) -> None:
    with recorder.span("q", tenant_id="globex") as span:
        clock.now += 0.042
        span.set_response("whole answer")
    assert recorder.flush(10)
    [row] = scoped.rows("traces")
    assert (row["latency_ms"], row["ttfb_ms"], row["streaming_ms"]) == (42, None, None)


def test_nested_spans_share_the_trace_and_point_at_their_parent(
    scoped: ScopedEventsAPI, recorder: TraceRecorder
) -> None:
    with tblog.trace("trace-from-context"):
        with recorder.span("plan", tenant_id="acme") as outer:
            with recorder.span("retrieve") as inner:
                with recorder.span("rerank") as innermost:
                    pass
            with pytest.raises(ValueError, match="cannot nest"):
                recorder.span("x", tenant_id="globex")
        with recorder.span("after", tenant_id="acme") as sibling:
            pass
    assert recorder.flush(10)
    rows = {r["query"]: r for r in scoped.rows("traces")}
    assert set(rows) == {"plan", "retrieve", "rerank", "after"}
    assert {r["trace_id"] for r in rows.values()} == {"trace-from-context"}
    assert rows["plan"]["parent_span_id"] is None
    assert rows["retrieve"]["parent_span_id"] == outer.span_id
    assert rows["rerank"]["parent_span_id"] == inner.span_id == rows["retrieve"]["span_id"]
    assert rows["rerank"]["span_id"] == innermost.span_id
    assert rows["after"]["parent_span_id"] is None and sibling.span_id != outer.span_id
    assert rows["retrieve"]["tenant_id"] == "acme"


def test_an_exception_is_recorded_and_re_raised(
    scoped: ScopedEventsAPI, recorder: TraceRecorder
) -> None:
    with pytest.raises(TimeoutError), recorder.span("q", tenant_id="initech"):
        raise TimeoutError("model took too long")
    assert recorder.flush(10)
    [row] = scoped.rows("traces")
    assert row["status"] == 500
    assert row["status_text"] == "TimeoutError: model took too long"


def test_routing_mistakes_are_errors_never_silent_loss(
    scoped: ScopedEventsAPI, recorder: TraceRecorder
) -> None:
    with pytest.raises(UnknownTenantError, match="no token for tenant 'hooli'"):
        recorder.span("q", tenant_id="hooli")
    with pytest.raises(ValueError, match="tenant_id"):
        recorder.span("q")
    with pytest.raises(ValueError, match="has no token"):
        TraceRecorder({"acme": ""}, api_url=scoped.url)
    with pytest.raises(ValueError, match="same token"):
        TraceRecorder({"a": TOKENS["acme"], "b": TOKENS["acme"]}, api_url=scoped.url)
    with pytest.raises(ValueError, match="environment"):
        TraceRecorder(TOKENS, api_url=scoped.url, environment="staging")
    with pytest.raises(ValueError, match="already routed"):
        recorder.add_tenant("acme", "p.another-token-for-acme-000000")
    # A tenant removed while its span runs: the row is dropped, counted and logged.
    with recorder.span("q", tenant_id="globex"):
        assert recorder.remove_tenant("globex", 5)
    assert recorder.stats()["dropped"] == {"unknown_tenant": 1}
    with pytest.raises(UnknownTenantError):
        recorder.span("q", tenant_id="globex")
    assert recorder.flush(10)
    assert scoped.rows("traces") == [] and scoped.violations == []


def test_add_tenant_later(scoped: ScopedEventsAPI) -> None:
    rec = TraceRecorder({}, api_url=scoped.url, environment="prod")
    with pytest.raises(UnknownTenantError):
        rec.span("q", tenant_id="acme")
    rec.add_tenant("acme", TOKENS["acme"])
    with rec.span("q", tenant_id="acme", project_id="web"):
        pass
    assert rec.close(10)
    [row] = scoped.rows("traces")
    assert (row["tenant_id"], row["project_id"], row["environment"]) == ("acme", "web", "prod")
