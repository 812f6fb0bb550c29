"""dictConfig from YAML, in the 3.10+ form and the 3.12+ queue/listener form."""

from __future__ import annotations

import logging
import logging.config
import os
import queue
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tblog
from tests.eventsapi import EventsAPI

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def _configure(name: str, events_api: EventsAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_API_URL", events_api.url)
    monkeypatch.setenv("TB_WRITE_TOKEN", events_api.token)
    config = yaml.safe_load((EXAMPLES / name).read_text())
    logging.config.dictConfig(config)


def test_dictconfig_yaml(
    events_api: EventsAPI, monkeypatch: pytest.MonkeyPatch, restore_root: None
) -> None:
    _configure("logging.yaml", events_api, monkeypatch)
    [handler] = [
        h for h in logging.getLogger().handlers if isinstance(h, tblog.TinybirdLoggingHandler)
    ]
    assert handler.app_name == "checkout-service" and handler.options.batch_size == 500
    logging.getLogger("shop.cart").info("added %d items", 3, extra={"cart": "c1"})
    logging.getLogger("botocore.client").info("ignored by ignore_loggers")
    assert handler.flush(5)
    [row] = events_api.rows()
    assert row["message"] == "added 3 items" and row["environment"] == "production"
    assert row["extra"] == {"service": "checkout", "region": "eu-west-1", "cart": "c1"}
    # Re-configuring (which closes the old handler while holding logging's lock) must not
    # deadlock, and what the old handler buffered is still delivered.
    logging.getLogger("shop").warning("just before reconfiguration")
    _configure("logging.yaml", events_api, monkeypatch)
    assert tblog.flush(5)
    assert [r["message"] for r in events_api.rows()][-1] == "just before reconfiguration"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dictConfig 'listener' needs 3.12+")
def test_dictconfig_queue_listener_yaml(
    events_api: EventsAPI, monkeypatch: pytest.MonkeyPatch, restore_root: None
) -> None:
    _configure("logging-queue.yaml", events_api, monkeypatch)
    [qh] = [h for h in logging.getLogger().handlers if hasattr(h, "listener")]
    assert isinstance(qh.listener, tblog.TinybirdQueueListener)
    with tblog.trace("q-trace"):
        logging.getLogger("svc").info("through the queue")
    qh.listener.stop()
    assert tblog.flush(5)
    [row] = events_api.rows()
    assert row["message"] == "through the queue"
    assert row["trace_id"] == "q-trace"  # read on the caller's thread, not the listener's


def test_listener_starts_itself_as_dictconfig_builds_it(
    make_handler: Any, events_api: EventsAPI
) -> None:
    # What dictConfig does on 3.12+: listener(queue, *handlers, respect_handler_level=...).
    q: queue.Queue[Any] = queue.Queue()
    target = make_handler()
    target.setLevel(logging.WARNING)
    listener = tblog.TinybirdQueueListener(q, target, respect_handler_level=True)
    listener.start()  # idempotent
    qh = logging.handlers.QueueHandler(q)
    log = logging.getLogger("listener.test")
    log.propagate = False
    log.addHandler(qh)
    try:
        log.info("below the handler's level")
        log.warning("kept")
        listener.stop()
        listener.stop()  # idempotent
    finally:
        log.removeHandler(qh)
    assert target.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["kept"]


def test_cfg_and_ext_references_inside_list_and_dict_options_are_resolved(
    events_api: EventsAPI, restore_root: None
) -> None:
    # dictConfig resolves cfg:// and ext:// inside nested lists and dicts only when an item is
    # read by key or index; a handler that copies or iterates them would see the strings.
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,  # other tests' loggers stay as they are
            "app": {"region": "eu-west-1", "secret_field": "session_ref", "noisy": "chatty"},
            "handlers": {
                "tinybird": {
                    "class": "tblog.TinybirdLoggingHandler",
                    "api_url": events_api.url,
                    "token": events_api.token,
                    "app_name": "cfg-app",
                    "static_fields": {
                        "region": "cfg://app.region",
                        "nested": {"sep": "ext://os.sep", "list": ["cfg://app.region"]},
                    },
                    "redact_keys": ["cfg://app.secret_field"],
                    "ignore_loggers": ["cfg://app.noisy"],
                }
            },
            "root": {"level": "INFO", "handlers": ["tinybird"]},
        }
    )
    [handler] = [
        h for h in logging.getLogger().handlers if isinstance(h, tblog.TinybirdLoggingHandler)
    ]
    logging.getLogger("svc").info("resolved", extra={"session_ref": "s3cr3t-value-123"})
    logging.getLogger("chatty.sub").info("never shipped")
    assert handler.flush(5)
    [row] = events_api.rows()
    assert row["extra"]["region"] == "eu-west-1"
    assert row["extra"]["nested"] == {"sep": os.sep, "list": ["eu-west-1"]}
    assert row["extra"]["session_ref"] == "[REDACTED]"
