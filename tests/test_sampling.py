"""Sampling per logger and level (issue 18.1): ``sample={"app.db": {"DEBUG": 0.1}}``.

Decided on the caller's thread; a kept record carries its rate (the ``sample_rate`` column),
so ``sum(1 / sample_rate)`` estimates the true count; a record not kept is counted in
``stats()["sampled"]``.  ERROR and above are never sampled unless a rate names them.
Counts are exact: the handler's random function is seeded.
"""

from __future__ import annotations

import json
import logging
import logging.config
import queue
import random
from typing import Any

import pytest

import tblog
from tblog._event.gate import RATE_KEY, rate_of, rules_of
from tblog.structlog import TinybirdProcessor
from tests.eventsapi import EventsAPI

URL = "http://127.0.0.1:9"  # never contacted by the construction-only tests
TOKEN = "p.sample-test-token-0123456789"


def _seed(handler: tblog.TinybirdLoggingHandler, seed: int = 18) -> None:
    assert handler._gate is not None
    handler._gate._rand = random.Random(seed).random


# -- the option ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "error", "words"),
    [
        ("DEBUG=0.1", TypeError, "sample must be a mapping of logger names"),
        ({"app": 0.1}, TypeError, "sample['app'] must be a mapping of level names to rates"),
        ({"app": {"DEBUGG": 0.1}}, ValueError, "sample['app']: 'DEBUGG' is not a level name"),
        ({"app": {"DEBUG": 1.5}}, ValueError, "must be a rate from 0 to 1, not 1.5"),
        ({"app": {"DEBUG": -0.1}}, ValueError, "must be a rate from 0 to 1, not -0.1"),
        ({"app": {"DEBUG": float("nan")}}, ValueError, "must be a rate from 0 to 1, not nan"),
        ({"app": {"DEBUG": "0.1"}}, TypeError, "must be a number from 0 to 1, not str"),
        ({"app": {"DEBUG": True}}, TypeError, "must be a number from 0 to 1, not bool"),
        ({5: {"DEBUG": 0.1}}, TypeError, "logger names must be str"),
    ],
)
def test_a_bad_sample_option_is_refused_at_construction(
    sample: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as info:
        tblog.TinybirdLoggingHandler(URL, TOKEN, "s", sample=sample)
    assert words in str(info.value)
    assert TOKEN not in str(info.value)
    with pytest.raises(error, match="sample"):
        TinybirdProcessor(URL, TOKEN, "s", sample=sample)


def test_the_option_takes_level_names_in_any_case_and_numbers() -> None:
    handler = tblog.TinybirdLoggingHandler(
        URL, TOKEN, "s", sample={"app": {"debug": 0.5, "Info": 1, 25: 0.2}, "": {}}
    )
    try:
        assert handler.options.sample == {"app": {10: 0.5, 20: 1.0, 25: 0.2}}
    finally:
        handler.close()


def test_dict_config_builds_a_sampling_handler_from_yaml_shaped_dicts() -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "tb": {
                "class": "tblog.TinybirdLoggingHandler",
                "api_url": URL,
                "token": TOKEN,
                "app_name": "s",
                "sample": {"app.db": {"DEBUG": 0.1}, "": {"INFO": 0.5}},
                "dedup_limit": 10,
                "dedup_window": 30,
            }
        },
        "loggers": {"tests.sampling.dictconfig": {"handlers": ["tb"]}},
    }
    logging.config.dictConfig(config)
    log = logging.getLogger("tests.sampling.dictconfig")
    try:
        [handler] = log.handlers
        assert isinstance(handler, tblog.TinybirdLoggingHandler)
        assert handler.options.sample == {"app.db": {10: 0.1}, "": {20: 0.5}}
        assert (handler.options.dedup_limit, handler.options.dedup_window) == (10, 30)
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()


def test_without_sampling_or_dedup_emit_asks_nothing() -> None:
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "s")
    try:
        assert handler._admit is None and handler._gate is None
        stats = handler.stats()
        assert (stats["sampled"], stats["collapsed"]) == (0, 0)
    finally:
        handler.close()


# -- which rate a record gets ------------------------------------------------------------


def test_the_longest_prefix_that_names_the_level_wins() -> None:
    rules = rules_of(
        {"": {10: 0.5}, "app": {10: 0.2, 20: 0.3}, "app.db": {10: 0.1}, "app.dbx": {10: 0.9}}
    )
    assert rate_of(rules, "app.db", 10) == 0.1
    assert rate_of(rules, "app.db.pool", 10) == 0.1
    assert rate_of(rules, "app.dbx", 10) == 0.9  # a prefix is a whole name, not its start
    assert rate_of(rules, "app.db", 20) == 0.3  # app.db names no INFO rate: app's
    assert rate_of(rules, "app", 10) == 0.2
    assert rate_of(rules, "application", 10) == 0.5  # not below "app": the root's
    assert rate_of(rules, "other", 20) == 1.0  # no rule names INFO there


def test_error_and_above_are_kept_unless_a_rate_names_them() -> None:
    rules = rules_of({"": {10: 0.0, 20: 0.0, 30: 0.0}})
    assert rate_of(rules, "any", logging.ERROR) == 1.0
    assert rate_of(rules, "any", logging.CRITICAL) == 1.0
    assert rate_of(rules_of({"": {40: 0.5}}), "any", logging.ERROR) == 0.5


# -- counts and rows -------------------------------------------------------------------


def test_ten_thousand_debug_at_a_tenth_ship_about_a_thousand_each_with_its_rate(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(sample={logger.name: {"DEBUG": 0.1}}, max_buffer_size=20_000)
    _seed(handler)
    logger.addHandler(handler)
    for i in range(10_000):
        logger.debug("query %d took %s ms", i, 3)
    for i in range(50):
        logger.info("not sampled %d", i)
        logger.error("never sampled %d", i)
    assert handler.flush(30)

    rows = events_api.rows()
    assert events_api.quarantine["tb_logs"] == []
    debug = [r for r in rows if r["level"] == "DEBUG"]
    stats = handler.stats()
    assert 900 <= len(debug) <= 1100, len(debug)
    assert stats["sampled"] + len(debug) == 10_000  # every record shipped or counted
    assert stats["sent"] == len(rows) == len(debug) + 100
    assert {r["sample_rate"] for r in debug} == {0.1}
    assert all("sample_rate" not in r for r in rows if r["level"] != "DEBUG")  # column: 1
    estimate = sum(1 / r.get("sample_rate", 1) for r in rows)
    assert 9_000 + 100 <= estimate <= 11_000 + 100
    # the message was merged as usual; no private key leaks into extra
    assert debug[0]["message"].startswith("query ") and debug[0]["extra"] == {}


def test_rate_zero_ships_none_and_rate_one_ships_all(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(sample={logger.name: {"DEBUG": 0, "INFO": 1}})
    logger.addHandler(handler)
    for _ in range(100):
        logger.debug("gone")
        logger.info("kept")
    assert handler.flush(10)
    rows = events_api.rows()
    assert [r["message"] for r in rows] == ["kept"] * 100
    assert all("sample_rate" not in r for r in rows)
    assert handler.stats()["sampled"] == 100


def test_the_callers_record_is_not_changed(make_handler: Any, logger: logging.Logger) -> None:
    handler = make_handler(sample={"": {"INFO": 0.999999}})
    _seed(handler)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(handler)
    logger.addHandler(Keep())
    logger.info("hello %s", "there", extra={"k": 1})
    [record] = seen
    assert RATE_KEY not in record.__dict__


def test_a_sampled_row_is_the_same_on_the_fast_and_the_general_path(
    make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(sample={"": {"INFO": 0.999999}}, static_fields={"region": "eu"})
    _seed(handler)
    items: list[Any] = []
    handler._put = lambda item, size, pid=None: items.append(item) or True  # type: ignore[func-returns-value]
    logger.addHandler(handler)
    logger.info("user %s", 42, extra={"tenant": "t1"})
    logger.info("plain")
    builder = handler._builder
    chunks, count = builder.encode_batch(items)
    assert count == 2
    fast = [json.loads(line) for chunk in chunks for line in chunk.split(b"\n")]
    general = [json.loads(builder._encode_one(item) or b"") for item in items]
    for f, g in zip(fast, general):
        assert f.pop("event_id") != g.pop("event_id")
        assert f == g
    assert [r["sample_rate"] for r in fast] == [0.999999, 0.999999]
    assert fast[0]["extra"] == {"region": "eu", "tenant": "t1"}


def test_the_queue_handler_samples_on_the_callers_thread(
    events_api: EventsAPI, logger: logging.Logger
) -> None:
    q: queue.Queue[Any] = queue.Queue()
    handler = tblog.TinybirdLoggingQueueHandler(
        q, events_api.url, events_api.token, "tests", sample={"": {"DEBUG": 0.25}}
    )
    try:
        _seed(handler.handler)
        logger.addHandler(handler)
        for i in range(2000):
            logger.debug("tick %d", i)
        assert handler.flush(30)
        rows = events_api.rows()
        assert 400 <= len(rows) <= 600
        assert handler.stats()["sampled"] + len(rows) == 2000
        assert {r["sample_rate"] for r in rows} == {0.25}
    finally:
        handler.close()


# -- the structlog processor -------------------------------------------------------------


def test_the_structlog_processor_samples_by_logger_and_level(events_api: EventsAPI) -> None:
    import structlog

    processor = TinybirdProcessor(
        events_api.url, events_api.token, "tests", sample={"svc": {"DEBUG": 0.1}}
    )
    assert processor._gate is not None
    processor._gate._rand = random.Random(7).random
    log = structlog.wrap_logger(
        None,
        processors=[structlog.processors.add_log_level, processor, _drop],
        context_class=dict,
    )
    try:
        svc = log.bind(logger="svc")
        for i in range(1000):
            svc.debug("cache miss", key=i)
        svc.info("kept")
        log.bind(logger="other").debug("other kept")
        assert processor.flush(30)
        rows = events_api.rows()
        debug = [r for r in rows if r["logger"] == "svc" and r["level"] == "DEBUG"]
        assert 70 <= len(debug) <= 130
        assert processor.stats()["sampled"] + len(debug) == 1000
        assert {r["sample_rate"] for r in debug} == {0.1}
        others = [r for r in rows if r not in debug]
        assert sorted(r["message"] for r in others) == ["kept", "other kept"]
        assert all("sample_rate" not in r for r in others)
        assert all("_tblog" not in json.dumps(r["extra"]) for r in rows)
    finally:
        processor.close()


def _drop(logger: Any, method_name: str, event_dict: Any) -> Any:
    import structlog

    raise structlog.DropEvent
