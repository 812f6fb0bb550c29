"""TinybirdDjangoMiddleware with the real Django: its test clients, sync and async."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tblog-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["tblog.integrations.django.TinybirdDjangoMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

import tblog
from tests.eventsapi import EventsAPI

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-10f067aa0ba902b7-01"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
view_log = logging.getLogger("tests.django.views")
barrier: threading.Barrier | None = None


def article(request: HttpRequest, slug: str) -> HttpResponse:
    view_log.info("article %s", slug)
    if barrier is not None:
        barrier.wait(10)
        view_log.info("after barrier %s", slug)
    return JsonResponse({"slug": slug})


def broken(request: HttpRequest) -> HttpResponse:
    raise ValueError("template missing")


async def async_article(request: HttpRequest, slug: str) -> HttpResponse:
    view_log.info("async article %s", slug)
    await asyncio.sleep(0)
    view_log.info("async after %s", slug)
    return JsonResponse({"slug": slug})


urlpatterns = [
    path("articles/<slug:slug>/", article),
    path("async/<slug:slug>/", async_article),
    path("broken/", broken),
    path("health/", lambda request: HttpResponse("ok")),
]


def by_event(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["extra"].get("http_event") == kind]


@pytest.fixture
def shipped(make_handler: Any) -> Any:
    handler = make_handler()
    view_log.addHandler(handler)
    view_log.setLevel(logging.DEBUG)
    view_log.propagate = False
    yield handler
    view_log.removeHandler(handler)


def test_django_request_event_route_and_traceparent(events_api: EventsAPI, shipped: Any) -> None:
    with override_settings(TBLOG_HTTP={"logger": view_log}):
        resp = Client().get(
            "/articles/hello/", HTTP_TRACEPARENT=TRACEPARENT, HTTP_USER_AGENT="django-test"
        )
    assert resp.status_code == 200
    assert resp["X-Request-ID"] == TRACE
    assert shipped.flush(5)
    rows = events_api.rows()
    assert events_api.quarantine["tb_logs"] == []
    line = next(r for r in rows if r["message"] == "article hello")
    [event] = by_event(rows, "response")
    assert line["trace_id"] == event["trace_id"] == TRACE
    assert line["span_id"] == event["span_id"]
    extra = event["extra"]
    assert extra["method"] == "GET"
    assert extra["path"] == "/articles/hello/"
    assert extra["route"] == "/articles/<slug:slug>/"
    assert extra["status"] == 200
    assert extra["duration_ms"] > 0
    assert extra["client_addr"] == "127.0.0.1"
    assert extra["user_agent"] == "django-test"


def test_django_view_error_skip_paths_and_log_requests(events_api: EventsAPI, shipped: Any) -> None:
    options = {"logger": view_log, "skip_paths": ["/health"], "log_requests": True}
    with override_settings(TBLOG_HTTP=options):
        client = Client(raise_request_exception=False)
        failed = client.get("/broken/", HTTP_X_REQUEST_ID="req-500")
        health = client.get("/health/")
    assert failed.status_code == 500
    assert failed["X-Request-ID"] == "req-500"
    assert HEX32.match(health["X-Request-ID"])
    assert shipped.flush(5)
    rows = events_api.rows()
    [error] = by_event(rows, "error")
    assert error["trace_id"] == "req-500"
    assert error["exception"]["type"] == "ValueError"
    assert error["exception"]["message"] == "template missing"
    assert 'raise ValueError("template missing")' in error["exception"]["stacktrace"]
    assert error["extra"]["route"] == "/broken/"
    assert [r["extra"]["status"] for r in by_event(rows, "response")] == [500]
    assert [r["extra"]["path"] for r in by_event(rows, "request")] == ["/broken/"]


def test_django_concurrent_requests_in_threads(events_api: EventsAPI, shipped: Any) -> None:
    global barrier
    n = 5
    barrier = threading.Barrier(n)
    ids: dict[str, str] = {}

    def call(i: int) -> None:
        resp = Client().get(f"/articles/a{i}/", HTTP_X_REQUEST_ID=f"django-{i}")
        ids[f"a{i}"] = resp["X-Request-ID"]

    try:
        with override_settings(TBLOG_HTTP={"logger": view_log, "log_responses": False}):
            threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        barrier = None
    assert shipped.flush(5)
    rows = events_api.rows()
    assert len(rows) == 2 * n
    for row in rows:
        slug = row["message"].split()[-1]
        assert row["trace_id"] == ids[slug] == f"django-{slug[1:]}"


def test_django_async_requests_in_asyncio_tasks(events_api: EventsAPI, shipped: Any) -> None:
    async def run() -> list[Any]:
        client = AsyncClient()
        return await asyncio.gather(
            *(client.get(f"/async/s{i}/", headers={"X-Request-ID": f"async-{i}"}) for i in range(4))
        )

    with override_settings(TBLOG_HTTP={"logger": view_log}):
        responses = asyncio.run(run())
    assert [r["X-Request-ID"] for r in responses] == [f"async-{i}" for i in range(4)]
    assert shipped.flush(5)
    rows = events_api.rows()
    for row in rows:
        path = row["extra"].get("path") or row["message"]
        i = re.search(r"s(\d)", path)
        assert i is not None
        assert row["trace_id"] == f"async-{i[1]}"
    assert len(by_event(rows, "response")) == 4
    assert tblog.get_trace_id() == ""


def test_django_bad_settings_are_improperly_configured() -> None:
    with override_settings(TBLOG_HTTP={"skip_paths": "/health"}):
        with pytest.raises(ImproperlyConfigured, match="skip_paths must be a list"):
            Client().get("/health/")
