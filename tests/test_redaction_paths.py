"""Redaction on every path that ships rows: the SDK schema, the tracker, Datasource, LiteLLM.

Each test goes end to end through the loopback Events API server and looks at the rows
(and the raw bodies) that arrived: no secret may be in them.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from typing import Any

import tblog
from tblog._event.redact import REDACTED
from tests.eventsapi import EventsAPI

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1IjoiYWJjIn0.c2lnbmF0dXJlLXRleHQ"
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

GH = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"


def _bodies(api: EventsAPI) -> bytes:
    return b"".join(
        gzip.decompress(r.body) if r.headers.get("Content-Encoding") == "gzip" else r.body
        for r in api.requests
    )


def test_the_sdk_schema_scrubs_the_formatted_message_and_the_exception(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(schema="tinybird-python-sdk", ds_name="sdk_logs")
    logger.addHandler(handler)
    logger.info("login with password=hunter2-pw")  # no exception, no extra
    try:
        raise PermissionError(f"rejected Authorization: Bearer {JWT}")
    except PermissionError:
        logger.exception("denied")
    logger.warning("token %s leaked", GH, extra={"userPassword": "pw-12345678"})
    assert handler.flush(5)

    rows = events_api.rows("sdk_logs")
    assert [r["message"] for r in rows] == [
        f"login with password={REDACTED}",
        "denied",
        f"token {REDACTED} leaked",
    ]
    assert rows[0]["formatted_message"] == f"login with password={REDACTED}"
    exc = rows[1]["exc_info"]
    assert f"Bearer {REDACTED}" in exc["value"]
    assert exc["traceback"] is None  # as the SDK's: the record's exc_text when it emits
    assert JWT not in rows[1]["formatted_message"]
    assert rows[2]["extra"]["userPassword"] == REDACTED
    body = _bodies(events_api)
    for secret in (b"hunter2-pw", JWT.encode(), GH.encode(), b"pw-12345678"):
        assert secret not in body


def test_the_tracker_scrubs_properties_prompts_and_generations(events_api: EventsAPI) -> None:
    from tblog.events import Tracker

    with Tracker(events_api.url, events_api.token, flush_interval=60) as tracker:
        tracker.track("u1", "login", properties={"password": "pw-12345678", "tokens": 3})
        tracker.track_llm(
            "u1", prompt=f"use my key {GH} please", generation=f"ok: Bearer {JWT}",
            properties={"session": {"accessToken": "at-abcdef99"}, "prompt_tokens": 12},
        )  # fmt: skip
        assert tracker.flush(5)
    login, prompt, generation = events_api.rows("events")
    assert json.loads(login["properties"]) == {"password": REDACTED, "tokens": 3}
    assert prompt["text"] == f"use my key {REDACTED} please"
    assert generation["text"] == f"ok: Bearer {REDACTED}" and GH not in generation["prompt"]
    assert json.loads(generation["properties"]) == {"session": REDACTED, "prompt_tokens": 12}
    body = _bodies(events_api)
    for secret in (b"pw-12345678", GH.encode(), JWT.encode(), b"at-abcdef99"):
        assert secret not in body


def test_a_tracker_with_redact_off_ships_what_it_was_given(events_api: EventsAPI) -> None:
    from tblog.events import Tracker

    with Tracker(events_api.url, events_api.token, flush_interval=60, redact=False) as tracker:
        tracker.track("u1", "login", properties={"password": "pw-12345678"})
        assert tracker.flush(5)
    [row] = events_api.rows("events")
    assert json.loads(row["properties"]) == {"password": "pw-12345678"}


def test_datasource_rows_and_ndjson_lines_are_scrubbed(events_api: EventsAPI) -> None:
    with tblog.Datasource("app_rows", events_api.token, events_api.url) as ds:
        ds << {"user": "ana", "api_key": "k-123456789", "note": f"Bearer {JWT}", "n": 1}
        ds << b'{"user": "bob", "dsn": "postgres://app:pgpw-99@db:5432/app"}\n{"user": "eve"}'
        ds << '{"user": "joe", "nested": {"client_secret": "cs-42424242"}}'
        assert ds.flush(5)
    with tblog.Datasource("raw_rows", events_api.token, events_api.url, redact=False) as raw:
        raw << {"user": "ana", "api_key": "k-123456789"}
        assert raw.flush(5)
    assert events_api.rows("app_rows") == [
        {"user": "ana", "api_key": REDACTED, "note": f"Bearer {REDACTED}", "n": 1},
        {"user": "bob", "dsn": f"postgres://app:{REDACTED}@db:5432/app"},
        {"user": "eve"},
        {"user": "joe", "nested": {"client_secret": REDACTED}},
    ]
    assert events_api.rows("raw_rows") == [{"user": "ana", "api_key": "k-123456789"}]


def test_the_litellm_callback_scrubs_messages_metadata_and_errors(events_api: EventsAPI) -> None:
    from tblog.litellm import TinybirdLitellmHandler

    handler = TinybirdLitellmHandler(events_api.url, events_api.token, flush_interval=60)
    try:
        kwargs = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": f"my password=hunter2-pw and {GH}"}],
            "litellm_params": {"metadata": {"user_api_key": "sk-abcdefghij0123456789xyz"}},
            "api_key": "sk-abcdefghij0123456789xyz",
            "exception": RuntimeError(f"upstream said Authorization: Bearer {JWT}"),
        }
        handler.log_failure_event(kwargs, None, 1.0, 2.0)
        assert handler.flush(5)
    finally:
        handler.close()
    [row] = events_api.rows("litellm")
    assert row["api_key"] == "sk-a****9xyz"  # tblog's own masked column stays
    assert row["messages"][0]["content"] == f"my password={REDACTED} and {REDACTED}"
    assert row["proxy_metadata"] == {"user_api_key": REDACTED}
    assert row["exception"] == f"upstream said Authorization: Bearer {REDACTED}"
    body = _bodies(events_api)
    for secret in (b"hunter2-pw", GH.encode(), JWT.encode(), b"0123456789xyz"):
        assert secret not in body


def test_trace_rows_are_scrubbed(events_api: EventsAPI) -> None:
    from tblog.llm import TraceRecorder

    recorder = TraceRecorder({"acme": events_api.token}, api_url=events_api.url, flush_interval=60)
    try:
        with recorder.span(
            "connect with postgres://u:pw-5555@db/x", tenant_id="acme",
            metadata={"api_key": "k-77777777", "user": "ana"},
        ) as span:  # fmt: skip
            span.set_response(f"token={GH}", headers={"set-cookie": "sid=s-31313131"})
        assert recorder.flush(5)
    finally:
        recorder.close()
    [row] = events_api.rows("traces")
    assert row["query"] == f"connect with postgres://u:{REDACTED}@db/x"
    assert row["response"] == f"token={REDACTED}"
    assert json.loads(row["metadata_json"]) == {"api_key": REDACTED, "user": "ana"}
    assert json.loads(row["headers_json"]) == {"set-cookie": REDACTED}
    body = _bodies(events_api)
    for secret in (b"pw-5555", b"k-77777777", GH.encode(), b"s-31313131"):
        assert secret not in body
