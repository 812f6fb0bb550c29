"""A 404 from the Events API is explained by where it came from: Tinybird's hosts suggest
the other regions; ``tblog local`` (or any other host) does not, since no region would help.

The 404s are real answers of the loopback Events API (tests/eventsapi.py); ``classify`` is
given the api_url the handler was configured with.
"""

from __future__ import annotations

import pytest
import requests

from tblog._delivery.transport import classify
from tests.eventsapi import EventsAPI, Fault


def _a_404(events_api: EventsAPI) -> requests.Response:
    events_api.fault = lambda req: Fault(status=404, body={"error": "Data Source not found"})
    return requests.post(
        f"{events_api.url}/v0/events",
        params={"name": "tb_logs"},
        data=b"{}\n",
        headers={"Authorization": f"Bearer {events_api.token}"},
        timeout=10,
    )


@pytest.mark.parametrize(
    "api_url",
    ["https://api.tinybird.co", "https://api.us-east.tinybird.co",
     "https://api.eu-central-1.aws.tinybird.co/"],
)  # fmt: skip
def test_a_404_from_tinybird_suggests_the_regions(events_api: EventsAPI, api_url: str) -> None:
    result = classify(_a_404(events_api), "tb_logs", api_url, events_api.token)
    assert result.error is not None
    assert "HTTP 404" in result.error and "region" in result.error
    assert "api.us-east.tinybird.co" in result.error


@pytest.mark.parametrize(
    "api_url",
    ["http://127.0.0.1:7181", "http://localhost:7181", "https://logs.example.com",
     "https://tinybird.co.evil.example", "https://nottinybird.co"],
)  # fmt: skip
def test_a_404_from_another_host_has_no_region_hint(events_api: EventsAPI, api_url: str) -> None:
    result = classify(_a_404(events_api), "tb_logs", api_url, events_api.token)
    assert result.error is not None
    assert "HTTP 404" in result.error and "Data Source not found" in result.error
    assert "region" not in result.error and "api.us-east.tinybird.co" not in result.error
    assert "check api_url" in result.error and "'tb_logs'" in result.error
    assert events_api.token not in result.error
