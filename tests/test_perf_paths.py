"""The shortcuts of the sender's hot paths give the same answers as the long way round."""

from __future__ import annotations

import json
import logging
from typing import Any

from tblog._event.build import EventBuilder
from tblog._event.redact import REDACTED, Redactor
from tblog._event.snapshot import snapshot

CARD = "4111 1111 1111 1111"


def test_screen_of_repeated_texts_is_the_screen_of_each_text() -> None:
    # Repeated messages are scanned once (``screen``); the flags must be those of the
    # full scan (``_screen``), on either route (hint words, or text by text).
    redactor = Redactor()
    secret = "login with password=hunter22"
    plain = ["user 42 logged in", "GET /health 200", "ok"]
    batches = [
        plain * 5,  # repeats only, nothing to flag
        [*plain, secret, *plain, secret],  # a repeated secret among repeats
        [secret, "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", *plain * 3, secret],
        [*plain * 2, f"paid with {CARD}", "İstanbul office", *plain],  # text by text
        ["İstanbul office", "İstanbul office", secret, secret],
    ]
    for texts in batches:
        assert len(set(texts)) < len(texts)
        flags = redactor.screen(texts)
        assert flags == redactor._screen(texts), texts
        if flags is not None:
            for text, flag in zip(texts, flags, strict=True):
                if redactor.text(text) != text:
                    assert flag, text
    assert redactor.screen(plain * 3) is None


def test_repeated_secrets_are_scrubbed_in_every_event() -> None:
    builder = EventBuilder(
        app_name="a",
        environment="",
        schema="tblog",
        static_fields={},
        max_event_bytes=1 << 20,
        redactor=Redactor(),
    )
    records = [
        logging.LogRecord("x", logging.INFO, __file__, 10 + i % 2, msg, None, None)
        for i, msg in enumerate(["token=abcdefgh12345678", "fine", "token=abcdefgh12345678"] * 3)
    ]
    snaps = [snapshot(r, 0, None)[0] for r in records]
    chunks, count = builder.encode_batch(snaps)
    events = [json.loads(line) for chunk in chunks for line in chunk.split(b"\n")]
    assert count == len(records) == len(events)
    assert [e["message"] for e in events] == [f"token={REDACTED}", "fine", f"token={REDACTED}"] * 3


def test_interleaved_call_sites_keep_their_own_heads() -> None:
    # Consecutive records of one call site reuse its head; a record of another call site
    # (another line, logger or level) in between must get its own.
    builder = EventBuilder(
        app_name="a",
        environment="",
        schema="tblog",
        static_fields={},
        max_event_bytes=1 << 20,
    )
    sites = [("a", logging.INFO, 1), ("a", logging.INFO, 1), ("b", logging.INFO, 1),
             ("a", logging.WARNING, 1), ("a", logging.INFO, 2), ("a", logging.INFO, 1)]  # fmt: skip
    records = [
        logging.LogRecord(name, level, __file__, line, f"m{i}", None, None)
        for i, (name, level, line) in enumerate(sites)
    ]
    chunks, count = builder.encode_batch([snapshot(r, 0, None)[0] for r in records])
    events = [json.loads(line) for chunk in chunks for line in chunk.split(b"\n")]
    assert count == len(sites)
    got = [(e["logger"], e["level_no"], e["lineno"], e["message"]) for e in events]
    assert got == [(n, lv, ln, f"m{i}") for i, (n, lv, ln) in enumerate(sites)]


def test_interleaved_extras_and_a_refused_line_keep_every_event_its_own_fields() -> None:
    # Consecutive records with the same attribute names reuse their extras' names; the one
    # dict every line is encoded from must carry nothing over, also after a record that
    # orjson refuses (a non-str extra key: the general path takes it).
    builder = EventBuilder(
        app_name="a",
        environment="",
        schema="tblog",
        static_fields={},
        max_event_bytes=1 << 20,
        redactor=Redactor(),
    )
    extras: list[dict[Any, Any]] = [
        {"user": "bob"},
        {"user": "ann"},
        {"password": "hunter2222"},
        {"user": "eve"},
        {5: "five"},
        {},
        {"user": "joe", "password": "s3cr3t-pw"},
        {"user": "kim"},
    ]
    snaps = []
    for i, extra in enumerate(extras):
        record = logging.LogRecord("x", logging.INFO, __file__, 7, f"m{i}", None, None)
        record.__dict__.update(extra)
        snaps.append(snapshot(record, 0, None)[0])
    chunks, count = builder.encode_batch(snaps)
    events = [json.loads(line) for chunk in chunks for line in chunk.split(b"\n")]
    assert count == len(extras)
    assert [e["message"] for e in events] == [f"m{i}" for i in range(len(extras))]
    assert [e["extra"] for e in events] == [
        {"user": "bob"},
        {"user": "ann"},
        {"password": REDACTED},
        {"user": "eve"},
        {"5": "five"},
        {},
        {"user": "joe", "password": REDACTED},
        {"user": "kim"},
    ]
    assert len({e["event_id"] for e in events}) == len(extras)
