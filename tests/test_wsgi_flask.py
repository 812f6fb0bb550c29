"""TinybirdWSGIMiddleware and TinybirdFlask with the real Flask and Werkzeug."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import flask
import flask.testing
import pytest
from werkzeug.test import Client

import tblog
from tblog.integrations.flask import TinybirdFlask
from tblog.integrations.wsgi import TinybirdWSGIMiddleware
from tests.eventsapi import EventsAPI

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def by_event(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["extra"].get("http_event") == kind]


class BufferedClient(flask.testing.FlaskClient):
    """Reads each whole response and closes it, as a WSGI server does."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def make_app(log: logging.Logger, **options: Any) -> flask.Flask:
    app = flask.Flask("tblog-tests")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        log.info("loading item %d", item_id)
        return {"id": item_id}

    @app.get("/boom")
    def boom() -> str:
        log.info("about to fail")
        raise ZeroDivisionError("division by zero in view")

    @app.get("/health")
    def health() -> str:
        log.info("health check")
        return "ok"

    TinybirdFlask(app, logger=log, **options)
    app.test_client_class = BufferedClient
    return app


def test_flask_request_event_and_traceparent(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    client = make_app(logger).test_client()
    resp = client.get(
        "/items/7", headers={"traceparent": TRACEPARENT, "User-Agent": "pytest-agent/1.0"}
    )
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == TRACE
    assert handler.flush(5)
    rows = events_api.rows()
    assert events_api.quarantine["tb_logs"] == []
    view_line = next(r for r in rows if r["message"] == "loading item 7")
    [event] = by_event(rows, "response")
    assert view_line["trace_id"] == TRACE
    assert event["trace_id"] == TRACE
    assert view_line["span_id"] == event["span_id"] != "00f067aa0ba902b7"
    assert event["message"].startswith("GET /items/7 200 (")
    assert event["level"] == "INFO"
    extra = event["extra"]
    assert extra["method"] == "GET"
    assert extra["path"] == "/items/7"
    assert extra["route"] == "/items/<int:item_id>"
    assert extra["status"] == 200
    assert extra["duration_ms"] > 0
    assert extra["client_addr"] == "127.0.0.1"
    assert extra["user_agent"] == "pytest-agent/1.0"
    assert by_event(rows, "request") == []  # log_requests is off by default


def test_flask_new_trace_id_or_x_request_id(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    client = make_app(logger).test_client()
    first = client.get("/items/1").headers["X-Request-ID"]
    second = client.get("/items/2").headers["X-Request-ID"]
    third = client.get("/items/3", headers={"X-Request-ID": "req-abc.123"}).headers["X-Request-ID"]
    bad = client.get("/items/4", headers={"X-Request-ID": "evil\tvalue", "traceparent": "00-x"})
    assert HEX32.match(first)
    assert HEX32.match(second)
    assert first != second
    assert third == "req-abc.123"
    assert HEX32.match(bad.headers["X-Request-ID"])
    assert handler.flush(5)
    traces = {r["message"]: r["trace_id"] for r in events_api.rows()}
    assert traces["loading item 1"] == first
    assert traces["loading item 2"] == second
    assert traces["loading item 3"] == "req-abc.123"
    assert traces["loading item 4"] == bad.headers["X-Request-ID"]


def test_flask_view_error_is_logged_with_the_exception(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    client = make_app(logger).test_client()
    resp = client.get("/boom", headers={"traceparent": TRACEPARENT})
    assert resp.status_code == 500
    assert handler.flush(5)
    rows = events_api.rows()
    [error] = by_event(rows, "error")
    [response] = by_event(rows, "response")
    assert error["level"] == "ERROR"
    assert error["trace_id"] == TRACE
    assert error["exception"]["type"] == "ZeroDivisionError"
    assert error["exception"]["message"] == "division by zero in view"
    assert 'raise ZeroDivisionError("division by zero in view")' in error["exception"]["stacktrace"]
    assert error["extra"]["route"] == "/boom"
    assert response["extra"]["status"] == 500
    assert response["level"] == "ERROR"


def test_flask_skip_paths_and_log_requests(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    client = make_app(logger, skip_paths=["/health"], log_requests=True).test_client()
    health = client.get("/health")
    client.get("/items/5")
    assert handler.flush(5)
    rows = events_api.rows()
    assert [r["extra"]["path"] for r in by_event(rows, "request")] == ["/items/5"]
    assert [r["extra"]["path"] for r in by_event(rows, "response")] == ["/items/5"]
    health_line = next(r for r in rows if r["message"] == "health check")
    assert health_line["trace_id"] == health.headers["X-Request-ID"]  # still traced


def test_flask_log_responses_off_and_no_response_header(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    client = make_app(logger, log_responses=False, response_header=None).test_client()
    resp = client.get("/items/9")
    assert "X-Request-ID" not in resp.headers
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == ["loading item 9"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"skip_paths": "/health"}, "skip_paths must be a list"),
        ({"skip_paths": ["health"]}, "starting with '/'"),
        ({"log_requests": "yes"}, "log_requests must be true or false"),
        ({"response_header": "X Bad"}, "response_header must be an HTTP header name"),
        ({"logger": 42}, "logger must be"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_options_fail_at_set_up(options: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        TinybirdFlask(flask.Flask("bad"), **options)


def test_wsgi_concurrent_requests_in_threads_keep_their_trace_ids(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    n = 6
    barrier = threading.Barrier(n)

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        name = environ["PATH_INFO"]
        logger.info("before %s", name)
        barrier.wait(10)  # every request is in flight at once
        logger.info("after %s", name)
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            logger.info("streaming %s", name)
            yield name.encode()

        return body()

    wrapped = TinybirdWSGIMiddleware(app, logger=logger)
    ids: dict[str, str] = {}

    def call(i: int) -> None:
        resp = Client(wrapped).get(f"/r{i}", headers={"X-Request-ID": f"req-{i}"})
        assert resp.get_data() == f"/r{i}".encode()
        ids[f"/r{i}"] = resp.headers["X-Request-ID"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handler.flush(5)
    rows = events_api.rows()
    assert len(ids) == n
    for path, trace_id in ids.items():
        assert trace_id == f"req-{path[2:]}"
        mine = [r for r in rows if path in r["message"]]
        assert len(mine) == 4  # before, after, streaming, the response event
        assert {r["trace_id"] for r in mine} == {trace_id}
    assert tblog.get_trace_id() == ""  # nothing leaks into the caller's context


def test_wsgi_exception_escaping_the_app_is_logged_and_re_raised(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("no response")

    with pytest.raises(RuntimeError, match="no response"):
        Client(TinybirdWSGIMiddleware(app, logger=logger)).get("/x")
    assert handler.flush(5)
    rows = events_api.rows()
    assert by_event(rows, "error")[0]["exception"]["type"] == "RuntimeError"
    assert by_event(rows, "response")[0]["extra"]["status"] == 500


def test_flask_propagated_exception_is_logged_once(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    app = make_app(logger)
    app.testing = True  # the exception leaves Flask and crosses the WSGI middleware
    with pytest.raises(ZeroDivisionError):
        app.test_client().get("/boom")
    assert handler.flush(5)
    rows = events_api.rows()
    assert len(by_event(rows, "error")) == 1
    assert [r["extra"]["status"] for r in by_event(rows, "response")] == [500]


def test_wsgi_error_while_streaming_keeps_the_status_sent(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first chunk"
        raise OSError("disk gone")

    wrapped = TinybirdWSGIMiddleware(app, logger=logger)
    with pytest.raises(OSError, match="disk gone"):
        Client(wrapped).get("/stream", buffered=True)
    assert handler.flush(5)
    rows = events_api.rows()
    [error] = by_event(rows, "error")
    assert error["exception"]["type"] == "OSError"
    assert [r["extra"]["status"] for r in by_event(rows, "response")] == [200]
