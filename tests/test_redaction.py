"""Redaction: secrets in extras, bound fields, exceptions and messages never leave the process."""

from __future__ import annotations

import copy
import gzip
import logging
from typing import Any

import pytest
import structlog

import tblog
from tblog._event.redact import REDACTED, Redactor
from tblog.structlog import TinybirdProcessor
from tests.eventsapi import EventsAPI

CARD = "4111 1111 1111 1111"  # a test Visa number (passes the Luhn check)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1IjoiYWJjIn0.c2lnbmF0dXJlLXRleHQ"


def _bodies(api: EventsAPI) -> bytes:
    return b"".join(
        gzip.decompress(r.body) if r.headers.get("Content-Encoding") == "gzip" else r.body
        for r in api.requests
    )


def test_secret_keys_and_values_are_scrubbed_before_sending(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    extra = {
        "password": "hunter2-pw",
        "user": {"name": "ana", "api_key": "k-123456789", "cards": [f"card {CARD}"]},
        "X-Auth-Token": "t-987654321",
        "prompt_tokens": 321,  # a count, not a secret
        "header": f"Authorization: Bearer {JWT}",
        "note": "no secrets in here at all",
    }
    original = copy.deepcopy(extra)
    with tblog.bound(session_cookie="c-abcdefgh", request="r-1"):
        logger.info("login for ana with password=hunter2-pw", extra=extra)
        try:
            raise PermissionError(f"token rejected: Bearer {JWT}")
        except PermissionError:
            logger.exception("denied")
    assert handler.flush(5)
    assert extra == original  # the caller's dicts are untouched

    rows = {r["message"]: r for r in events_api.rows()}
    login = rows[f"login for ana with password={REDACTED}"]
    assert login["extra"] == {
        "session_cookie": REDACTED,
        "request": "r-1",
        "password": REDACTED,
        "user": {"name": "ana", "api_key": REDACTED, "cards": [f"card {REDACTED}"]},
        "X-Auth-Token": REDACTED,
        "prompt_tokens": 321,
        "header": f"Authorization: Bearer {REDACTED}",
        "note": "no secrets in here at all",
    }
    denied = rows["denied"]["exception"]
    assert denied["type"] == "PermissionError"
    assert JWT not in denied["message"] and JWT not in denied["stacktrace"]
    assert f"Bearer {REDACTED}" in denied["message"]
    body = _bodies(events_api)
    for secret in (b"hunter2-pw", b"k-123456789", b"t-987654321", b"c-abcdefgh", JWT.encode()):
        assert secret not in body
    assert b"4111 1111 1111 1111" not in body


def test_user_keys_and_patterns_add_to_the_defaults_and_redact_can_be_off(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    scrubbing = make_handler(redact_keys=["ssn"], redact_patterns=[r"\bACCT-\d{6}\b"])
    logger.addHandler(scrubbing)
    logger.info("moved ACCT-123456 funds", extra={"ssn": "078-05-1120", "password": "p"})
    assert scrubbing.flush(5)
    logger.removeHandler(scrubbing)
    raw = make_handler(redact=False, ds_name="raw_logs")
    logger.addHandler(raw)
    logger.info("moved ACCT-123456 funds", extra={"ssn": "078-05-1120", "password": "p"})
    assert raw.flush(5)

    [scrubbed] = events_api.rows("tb_logs")
    assert scrubbed["message"] == f"moved {REDACTED} funds"
    assert scrubbed["extra"] == {"ssn": REDACTED, "password": REDACTED}
    [kept] = events_api.rows("raw_logs")
    assert kept["message"] == "moved ACCT-123456 funds"
    assert kept["extra"] == {"ssn": "078-05-1120", "password": "p"}


def test_ids_timestamps_and_counts_are_not_taken_for_secrets() -> None:
    r = Redactor()
    for text in (
        "1732345678901",  # a millisecond timestamp
        "1234567890123456789",  # a snowflake id
        "4111 1111 1111 1112",  # card-shaped but fails the Luhn check
        "tokens used: 1234",
        "user 42 logged in",
    ):
        assert r.text(text) == text
    assert r.mapping({"tokens": 5, "total_tokens": 9, "keyboard": "qwerty"}) == {
        "tokens": 5, "total_tokens": 9, "keyboard": "qwerty",
    }  # fmt: skip


def test_a_circular_extra_stays_a_valid_event(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    loop: dict[str, Any] = {"secret": "s3cr3t-value"}
    loop["self"] = loop
    logger.info("loop", extra={"loop": loop})
    assert handler.flush(5)
    [row] = events_api.rows()
    assert row["extra"]["loop"] == {"secret": REDACTED, "self": "<circular reference>"}


def test_bad_patterns_are_a_clear_error(events_api: EventsAPI) -> None:
    with pytest.raises(ValueError, match="redact_patterns"):
        tblog.TinybirdLoggingHandler(events_api.url, events_api.token, "a", redact_patterns=["("])
    with pytest.raises(TypeError, match="redact_keys"):
        tblog.TinybirdLoggingHandler(events_api.url, events_api.token, "a", redact_keys=[3])


def test_the_structlog_processor_and_json_formatter_paths_redact(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    proc = TinybirdProcessor(events_api.url, events_api.token, "structlog-app")
    try:
        structlog.configure(processors=[proc, structlog.processors.JSONRenderer()])
        structlog.get_logger().info("structlog event", api_key="k-abcdefgh", user="ana")
        assert proc.flush(5)
    finally:
        structlog.reset_defaults()
        proc.close()
    handler = make_handler(ds_name="json_logs")
    handler.setFormatter(tblog.TinybirdJsonFormatter(app_name="json-app"))
    logger.addHandler(handler)
    logger.info("json event", extra={"password": "pw-12345678", "trace": "5" * 16})
    assert handler.flush(5)

    [row] = events_api.rows("tb_logs")
    assert row["extra"] == {"api_key": REDACTED, "user": "ana"}
    [shaped] = events_api.rows("json_logs")
    assert shaped["extra"] == {"password": REDACTED, "trace": "5" * 16}
    assert b"pw-12345678" not in _bodies(events_api)


def test_secrets_in_an_argument_merged_on_the_sender_are_scrubbed(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # One plain %-argument is merged on the sender thread: the screen sees the merged text,
    # also when the secret only appears once template and argument meet.
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("login with password=%s", "hunter2-pw")
    logger.info("api_ke%s", "y=k-123456789")
    logger.info("card 4111 1111 %s", "1111 1111")
    logger.info("header Bearer %s", JWT)
    assert handler.flush(5)
    messages = [r["message"] for r in events_api.rows()]
    assert messages == [
        f"login with password={REDACTED}",
        f"api_key={REDACTED}",
        f"card {REDACTED}",
        f"header Bearer {REDACTED}",
    ]
    body = _bodies(events_api)
    for secret in (b"hunter2", b"k-123456789", b"1111 1111 1111", JWT.encode()):
        assert secret not in body
