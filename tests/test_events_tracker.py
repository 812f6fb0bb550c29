"""tblog.events.Tracker end to end against the loopback Events API (events.datasource)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tblog.events import Tracker
from tests.eventsapi import EventsAPI


@pytest.fixture
def tracker(events_api: EventsAPI) -> Iterator[Tracker]:
    t = Tracker(events_api.url, events_api.token)
    yield t
    t.close()


def test_track_ships_one_schema_valid_row(events_api: EventsAPI, tracker: Tracker) -> None:
    props = {"plan": "pro", "seats": 3}
    when = dt.datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=dt.timezone.utc)
    tracker.track("u1", "Sign up", properties=props, timestamp=when)
    props["plan"] = "changed"  # the event was snapshotted at the call
    assert events_api.requests == []  # buffered, not sent on the caller's thread
    assert tracker.flush(5)
    [row] = events_api.rows("events")
    assert events_api.quarantine["events"] == []
    assert row["user_id"] == "u1" and row["event"] == "Sign up"
    assert row["timestamp"] == "2026-01-31T12:00:00.250000Z"
    assert row["properties"] == '{"plan":"pro","seats":3}'
    assert row["thread_id"] == "" and row["latency_s"] is None
    req = events_api.requests[0]
    assert req.params["name"] == "events"
    assert req.headers["Authorization"] == f"Bearer {events_api.token}"


def test_track_llm_ships_prompt_then_generation(events_api: EventsAPI, tracker: Tracker) -> None:
    when = dt.datetime(2026, 1, 31, 12, 0, 10)  # naive: taken as UTC
    tracker.track_llm(
        "u2", "What is 2+2?", "4", assistant_id="gpt-4o", properties={"cost": 0.01},
        timestamp=when, latency=2.5, thread_id="th-1",
    )  # fmt: skip
    assert tracker.flush(5)
    prompt, generation = events_api.rows("events")
    assert events_api.quarantine["events"] == []
    assert (prompt["event"], generation["event"]) == ("Prompt", "Generation")
    assert prompt["timestamp"] == "2026-01-31T12:00:07.500000Z"
    assert generation["timestamp"] == "2026-01-31T12:00:10.000000Z"
    assert prompt["text"] == "What is 2+2?" and generation["text"] == "4"
    assert generation["prompt"] == "What is 2+2?" and generation["assistant_id"] == "gpt-4o"
    assert generation["latency_s"] == 2.5
    assert {prompt["thread_id"], generation["thread_id"]} == {"th-1"}
    assert prompt["properties"] == generation["properties"] == '{"cost":0.01}'
    assert prompt["event_id"] != generation["event_id"]


def test_batches_follow_flush_batch_size(events_api: EventsAPI) -> None:
    t = Tracker(events_api.url, events_api.token, datasource="events", flush_batch_size=4,
                flush_interval=60)  # fmt: skip
    for i in range(10):
        t.track(f"u{i}", "Click")
    assert t.close(5)
    assert len(events_api.rows("events")) == 10
    assert [r.rows for r in events_api.requests] == [4, 4, 2]
    t.track("late", "Click")
    assert t.stats()["dropped"] == {"closed": 1}


def test_bad_calls_are_logged_and_counted_never_raised(events_api: EventsAPI) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("test.tracker.custom")
    log.addHandler(Keep())
    t = Tracker(events_api.url, events_api.token, logger=log)
    bad: Any = None
    t.track(bad, "Click")
    t.track("u", "")
    t.track("u", "Click", timestamp="yesterday")  # type: ignore[arg-type]
    t.track_llm("u", "p", "g", latency=-1)
    assert t.stats()["dropped"] == {"invalid": 5}
    assert len(records) == 4 and all(r.levelno == logging.ERROR for r in records)
    assert events_api.token not in " ".join(r.getMessage() for r in records)
    assert t.close(5)
    assert events_api.requests == []


def test_set_up_errors_are_clear(events_api: EventsAPI) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Tracker(events_api.url, events_api.token, flush_batch_size=0)
    with pytest.raises(ValueError, match="no Tinybird token"):
        Tracker(events_api.url, None)
    with pytest.raises(ValueError, match="datasource"):
        Tracker(events_api.url, events_api.token, datasource="my-events")
