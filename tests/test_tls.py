"""TLS: verification on by default, a CA bundle option, and the token only in its header."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import tblog
from tblog import _diag
from tests.eventsapi import EventsAPI


@pytest.fixture
def https_api(tmp_path: Path) -> Iterator[tuple[EventsAPI, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    api = EventsAPI(tls=context)
    try:
        yield api, str(ca_file)
    finally:
        api.close()


def _handler(api: EventsAPI, **options: Any) -> tblog.TinybirdLoggingHandler:
    return tblog.TinybirdLoggingHandler(api.url, api.token, "tls", shutdown_timeout=0.5, **options)


def test_an_unknown_ca_is_refused_with_a_clear_counted_error(
    https_api: tuple[EventsAPI, str], logger: logging.Logger
) -> None:
    api, _ = https_api
    handler = _handler(api, max_retries=0)
    logger.addHandler(handler)
    try:
        logger.info("not to an unverified server")
        assert handler.flush(5) is False
        stats = handler.stats()
        assert stats["dropped"] == {"network": 1} and stats["sent"] == 0
        assert "certificate could not be verified" in stats["last_error"]
        assert "ca_bundle" in stats["last_error"]
        assert api.token not in repr(stats)
        assert api.rows() == []
    finally:
        handler.close()


def test_a_ca_bundle_verifies_a_private_ca(
    https_api: tuple[EventsAPI, str], logger: logging.Logger
) -> None:
    api, ca_file = https_api
    handler = _handler(api, ca_bundle=ca_file)
    logger.addHandler(handler)
    try:
        logger.info("over verified TLS")
        assert handler.flush(5)
    finally:
        handler.close()
    [row] = api.rows()
    assert row["message"] == "over verified TLS"
    [req] = api.requests
    assert req.headers["Authorization"] == f"Bearer {api.token}"
    assert api.token not in req.path and api.token not in repr(req.params)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_delivers_and_warns_once(
    https_api: tuple[EventsAPI, str], logger: logging.Logger
) -> None:
    api, _ = https_api
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    collector = Collect(logging.WARNING)
    _diag.logger.addHandler(collector)
    handler = _handler(api, verify=False, batch_size=1)
    logger.addHandler(handler)
    try:
        logger.info("one")
        logger.info("two")
        assert handler.flush(5)
    finally:
        handler.close()
        _diag.logger.removeHandler(collector)
    assert len(api.rows()) == 2
    assert [w for w in warnings if "verification is off" in w] == [warnings[0]]
    assert len(warnings) == 1
