"""tblog.litellm.TinybirdLitellmHandler with real LiteLLM calls (``mock_response``: no network)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

import litellm

from tblog.litellm import TinybirdLitellmHandler, mask_api_key
from tests.eventsapi import EventsAPI

MESSAGES = [{"role": "user", "content": "Hi, I'm testing"}]
SECRET = "sk-test-1234567890abcdefwxyz"


class CountingShips:
    """Mixin for a LiteLLM handler class: counts finished callbacks, so a test can wait for
    LiteLLM's logging thread (``wait_calls``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.cond = threading.Condition()

    def _ship(self, *args: Any) -> None:
        super()._ship(*args)
        with self.cond:
            self.calls += 1
            self.cond.notify_all()

    def wait_calls(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls >= n, timeout=30), self.calls


class Counting(CountingShips, TinybirdLitellmHandler):
    """tblog's LiteLLM handler, counting its finished callbacks."""


@pytest.fixture
def handler(events_api: EventsAPI) -> Iterator[Counting]:
    h = Counting(api_url=events_api.url, tinybird_token=events_api.token, flush_interval=60)
    saved = litellm.callbacks
    litellm.callbacks = [h]
    yield h
    litellm.callbacks = saved
    h.close()


def _bodies(events_api: EventsAPI) -> str:
    return " ".join(gzip.decompress(r.body).decode() for r in events_api.requests)


def test_completion_ships_one_row_with_the_sdk_fields(
    events_api: EventsAPI, handler: Counting
) -> None:
    response = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="Hello there!",
        api_key=SECRET, user="user-7", metadata={"team": "search"},
    )  # fmt: skip
    handler.wait_calls(1)
    assert events_api.requests == []  # the callback only buffered the row
    assert handler.flush(10)
    [row] = events_api.rows("litellm")
    assert events_api.quarantine["litellm"] == []
    assert row["model"] == "gpt-4o-mini" and row["provider"] == "openai"
    assert row["messages"] == MESSAGES and row["user"] == "user-7"
    assert row["id"] and row["call_type"] == "completion" and row["stream"] is False
    assert row["status"] == "success" and row["exception"] == ""
    assert row["response"]["choices"][0]["message"]["content"] == "Hello there!"
    assert row["response"]["id"] == response.id
    usage = response.usage
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
    )  # fmt: skip
    assert row["total_tokens"] > 0
    assert row["cost"] > 0  # gpt-4o-mini has a price in LiteLLM's bundled map
    assert row["start_time"] <= row["end_time"] and row["duration"] >= 0
    assert row["api_key"].count("*") == 4 and len(row["api_key"]) == 12
    assert SECRET not in _bodies(events_api)
    req = events_api.requests[0]
    assert req.params["name"] == "litellm"
    assert req.headers["Authorization"] == f"Bearer {events_api.token}"


def test_failures_are_rows_too(events_api: EventsAPI, handler: Counting) -> None:
    with pytest.raises(Exception, match="boom"):
        litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=Exception("boom"), api_key=SECRET
        )
    handler.wait_calls(1)
    assert handler.flush(10)
    [row] = events_api.rows("litellm")
    assert events_api.quarantine["litellm"] == []
    assert row["status"] == "failure" and "boom" in row["exception"]
    assert row["exception_type"] and row["cost"] == 0


def test_acompletion_streaming_and_failure_are_batched(
    events_api: EventsAPI, handler: Counting
) -> None:
    async def main() -> None:
        stream = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="streamed words", stream=True
        )
        async for _chunk in stream:
            pass
        for i in range(3):
            await litellm.acompletion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response=f"answer {i}"
            )
        with pytest.raises(Exception, match="async boom"):
            await litellm.acompletion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response=Exception("async boom")
            )
        await asyncio.to_thread(handler.wait_calls, 5)

    asyncio.run(main())
    assert handler.flush(10)
    rows = events_api.rows("litellm")
    assert events_api.quarantine["litellm"] == []
    assert len(rows) == 5 and len(events_api.requests) == 1  # one request for all calls
    streamed = [r for r in rows if r["stream"]]
    assert len(streamed) == 1
    assert streamed[0]["response"]["choices"][0]["message"]["content"] == "streamed words"
    assert sorted(r["status"] for r in rows) == ["failure"] + ["success"] * 4
    assert len({r["id"] for r in rows}) == 5


def test_a_broken_call_never_raises_into_litellm(events_api: EventsAPI) -> None:
    h = TinybirdLitellmHandler(api_url=events_api.url, tinybird_token=events_api.token)

    class Boom:
        def model_dump(self) -> Any:
            raise RuntimeError("no")

        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    h.log_success_event({"model": Boom(), "messages": [Boom()]}, Boom(), None, None)
    h.log_success_event(None, None, None, None)
    asyncio.run(h.async_log_failure_event({"exception": Boom()}, None, 1.0, 2.5))
    assert h.flush(5)
    rows = events_api.rows("litellm")
    assert len(rows) == 3 and events_api.quarantine["litellm"] == []
    assert rows[0]["model"].startswith("<unrepresentable")
    assert rows[2]["status"] == "failure" and rows[2]["duration"] == 1.5
    assert h.stats()["dropped_total"] == 0
    h.close()


def test_mask_api_key() -> None:
    assert mask_api_key("sk-abcdefghijkl1234") == "sk-a****1234"
    assert mask_api_key("short") == "****"
    assert mask_api_key(None) == ""
    assert json.dumps(mask_api_key(SECRET)).count(SECRET[4:-4]) == 0


def test_huge_prompts_are_truncated_not_lost(events_api: EventsAPI) -> None:
    h = TinybirdLitellmHandler(
        api_url=events_api.url, tinybird_token=events_api.token, max_event_bytes=8192
    )
    big = [{"role": "user", "content": "x" * 50_000}]
    h.log_success_event(
        {"model": "m", "messages": big, "litellm_call_id": "c1"}, {"id": "r", "usage": {}}, 1.0, 2.0
    )
    assert h.flush(5)
    [row] = events_api.rows("litellm")
    assert row["truncated"] is True and row["id"] == "c1" and row["model"] == "m"
    assert isinstance(row["messages"], str) and row["messages"].endswith("…[truncated]")
    assert 4096 < len(gzip.decompress(events_api.requests[0].body)) <= 8192 + 1
    assert big[0]["content"] == "x" * 50_000  # the caller's data is untouched
    h.close()
