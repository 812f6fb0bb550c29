"""OpenTelemetry: an active span's ids fill the event; nothing is imported without it."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider

import tblog
from tests.eventsapi import EventsAPI

tracer = TracerProvider().get_tracer("tblog-tests")


def ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def test_active_span_fills_trace_and_span_ids(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler())
    with tblog.trace("a" * 32, "b" * 16):
        logger.info("tblog only")
        with tracer.start_as_current_span("outer") as outer:
            logger.info("in outer")
            with tracer.start_as_current_span("inner") as inner:
                logger.info("in inner")
        logger.info("after")
    with otel_trace.use_span(otel_trace.INVALID_SPAN):
        logger.info("invalid span")
    assert tblog.flush(5)
    rows = {r["message"]: (r["trace_id"], r["span_id"]) for r in events_api.rows()}
    assert rows["tblog only"] == ("a" * 32, "b" * 16)
    assert rows["in outer"] == ids(outer)
    assert rows["in inner"] == ids(inner)
    assert ids(inner)[0] == ids(outer)[0]
    assert ids(inner)[1] != ids(outer)[1]
    assert rows["after"] == ("a" * 32, "b" * 16)
    assert rows["invalid span"] == ("", "")


def test_spans_in_threads_do_not_mix(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler())
    spans: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            spans[name] = span
            barrier.wait(5)  # both spans are current at once, each in its thread
            logger.info(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tblog.flush(5)
    got = {r["message"]: (r["trace_id"], r["span_id"]) for r in events_api.rows()}
    assert got == {"t1": ids(spans["t1"]), "t2": ids(spans["t2"])}


def test_structlog_and_preset_formatter_pick_up_the_span(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    import io

    import structlog

    from tblog.structlog import TinybirdProcessor

    handler = make_handler()
    handler.setFormatter(tblog.TinybirdJsonFormatter(app_name="otel"))
    logger.addHandler(handler)
    proc = TinybirdProcessor(events_api.url, events_api.token, "otel")
    structlog.configure(
        processors=[proc, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(io.StringIO()),
        cache_logger_on_first_use=False,
    )
    try:
        with tracer.start_as_current_span("s") as span:
            logger.info("preset")
            structlog.get_logger().info("structlog")
        assert tblog.flush(5)
    finally:
        structlog.reset_defaults()
        proc.close()
    rows = {r["message"]: (r["trace_id"], r["span_id"]) for r in events_api.rows()}
    assert rows == {"preset": ids(span), "structlog": ids(span)}


def test_no_opentelemetry_import_without_it() -> None:
    code = (
        "import sys, logging\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "import tblog, tblog.structlog, tblog.integrations.wsgi, tblog.integrations.asgi\n"
        "from tblog.context import capture\n"
        "h = tblog.TinybirdLoggingHandler('http://127.0.0.1:9', 'p.tok-xxxxxxxxxxxxxxxx', 'a')\n"
        "log = logging.getLogger('x'); log.addHandler(h); log.warning('hi')\n"
        "with tblog.trace('t', 's'):\n"
        "    assert capture()[:2] == ('t', 's')\n"
        "h._channel.drop_remaining('test'); h._channel.closed = True\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.')], sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_web_middleware_adopts_the_active_span_trace(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    from werkzeug.test import Client

    from tblog.integrations.wsgi import TinybirdWSGIMiddleware

    logger.addHandler(make_handler())

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logger.info("in view")
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = TinybirdWSGIMiddleware(app, logger=logger)
    # As an OpenTelemetry instrumentation outside the middleware would do:
    with tracer.start_as_current_span("server") as span:
        resp = Client(wrapped).get("/", buffered=True)
    assert resp.headers["X-Request-ID"] == ids(span)[0]
    assert tblog.flush(5)
    rows = events_api.rows()
    assert {(r["trace_id"], r["span_id"]) for r in rows} == {ids(span)}
