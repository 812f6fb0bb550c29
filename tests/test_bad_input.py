"""Bad input yields a valid event or a counted drop, never an exception or a stuck sender."""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from typing import Any

import pytest

import tblog
from tblog._event.encode import dumps, jsonable
from tests.eventsapi import EventsAPI


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Shouty:
    def __str__(self) -> str:
        return "shouty!"


def test_dumps_never_fails_and_is_valid_json() -> None:
    circular: dict[str, Any] = {"a": 1}
    circular["self"] = circular
    deep: list[Any] = []
    cur = deep
    for _ in range(200):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    values = [
        circular,
        {1: "int key", (1, 2): "tuple key", None: "none key", b"k": "bytes key"},
        b"\xff\xfe bytes",
        "lone \ud800 surrogate",
        {"s": {"\udcff": "key surrogate"}},
        float("nan"),
        [float("inf"), 2**80],
        Unprintable(),
        Shouty(),
        {1, 2},
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        Decimal("1.5"),
        deep,
    ]
    for value in values:
        line = dumps(value)
        assert b"\n" not in line
        json.loads(line)  # valid JSON
    assert json.loads(dumps(circular))["self"] == "<circular reference>"
    assert json.loads(dumps(Unprintable())) == "<unrepresentable Unprintable object>"
    assert json.loads(dumps("lone \ud800 surrogate")) == "lone \ufffd surrogate"
    assert json.loads(dumps([2**80])) == ["1208925819614629174706176"]


def test_jsonable_does_not_mutate_its_input() -> None:
    value: dict[Any, Any] = {1: [b"x", {2: 3}]}
    before = repr(value)
    jsonable(value)
    assert repr(value) == before


def test_bad_records_become_valid_events(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(max_event_bytes=64 * 1024)
    logger.addHandler(handler)
    circular: dict[str, Any] = {}
    circular["me"] = circular
    extra = {"circ": circular, "obj": Unprintable(), "raw": b"\x00\xff", "s": "x\udc80y"}
    original = dict(extra)
    logger.info("extras", extra=extra)
    logger.info("bad %d args", "not a number")
    logger.info("huge " + "x" * (50 * 1024 * 1024))
    logger.info({"msg": "a dict as message"})
    logger.info("surrogate \ud83d in message")
    assert extra == original  # caller's dict untouched
    assert handler.flush(10)
    rows = events_api.rows()
    assert len(rows) == 5 and events_api.quarantine["tb_logs"] == []
    by_msg = {r["message"][:10]: r for r in rows}
    assert by_msg["extras"]["extra"]["obj"] == "<unrepresentable Unprintable object>"
    assert by_msg["extras"]["extra"]["circ"] == {"me": "<circular reference>"}
    assert "message formatting failed" in by_msg["bad %d arg"]["message"]
    huge = by_msg["huge xxxxx"]
    assert huge["truncated"] is True and len(json.dumps(huge)) <= 64 * 1024 + 1024
    assert handler.stats()["dropped_total"] == 0


def test_large_exception_and_extras_are_truncated(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(max_event_bytes=8 * 1024)
    logger.addHandler(handler)
    try:
        raise ValueError("v" * 100_000)
    except ValueError:
        logger.exception("boom", extra={"blob": "b" * 100_000, "list": list(range(10_000))})
    assert handler.flush(5)
    [row] = events_api.rows()
    assert row["truncated"] is True
    assert len(json.dumps(row, ensure_ascii=False).encode()) <= 8 * 1024
    assert row["exception"]["type"] == "ValueError"


def test_drop_policy_newest_counts_drops(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(max_buffer_size=5, drop_policy="newest", flush_interval=3600)
    logger.addHandler(handler)
    # Hold the sender off: the channel only sends on flush (batch_size is large).
    for i in range(8):
        logger.info("n%d", i)
    assert handler.stats()["dropped"] == {"buffer_full": 3}
    assert handler.flush(5) is True  # everything accepted was delivered
    assert [r["message"] for r in events_api.rows()] == [f"n{i}" for i in range(5)]


def test_drop_policy_oldest_keeps_the_latest(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(max_buffer_size=5, drop_policy="oldest", flush_interval=3600)
    logger.addHandler(handler)
    for i in range(8):
        logger.info("n%d", i)
    stats = handler.stats()
    assert stats["dropped"] == {"buffer_full": 3} and stats["queue_depth"] == 5
    handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == [f"n{i}" for i in range(3, 8)]


@pytest.mark.parametrize("how", ["message", "argument merged later", "two arguments"])
def test_buffer_is_bounded_by_bytes(make_handler: Any, logger: logging.Logger, how: str) -> None:
    handler = make_handler(max_buffer_bytes=64 * 1024, flush_interval=3600)
    logger.addHandler(handler)
    for i in range(100):
        text = f"{i:04d}" + "y" * 4000  # a new string each time: the buffer holds each one
        if how == "message":
            logger.info(text)
        elif how == "argument merged later":
            logger.info("text: %s", text)
        else:
            logger.info("text %d: %s", i, text)
    stats = handler.stats()
    assert 10 <= stats["queue_depth"] <= 12  # ~5.6 KB each (with the record) in 64 KiB
    assert stats["queue_bytes"] <= 64 * 1024
    assert stats["dropped"]["buffer_full"] == 100 - stats["queue_depth"]


def test_a_raising_filter_or_formatter_never_reaches_the_caller(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, capsys: Any
) -> None:
    class Broken(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RuntimeError("formatter bug")

    handler = make_handler()
    handler.setFormatter(Broken())
    logger.addHandler(handler)
    logger.info("still fine")  # handleError prints to stderr; nothing raises
    assert "formatter bug" in capsys.readouterr().err
    handler.setFormatter(None)
    logger.info("after")
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["after"]


@pytest.mark.parametrize("schema", ["tblog", "tinybird-python-sdk"])
def test_every_schema_produces_objects(
    schema: str, events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler(schema=schema, ds_name=f"s_{schema.replace('-', '_')}"))
    logger.warning("x %s", Shouty())
    assert tblog.flush(5)
    [rows] = [v for v in events_api.data.values() if v]
    assert rows[0]["message"] == "x shouty!"
