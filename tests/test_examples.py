"""Every integration example runs as a script and its rows reach the Events API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eventsapi import EventsAPI

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "app_name", "min_rows"),
    [
        ("structlog_example.py", "structlog-example", 2),
        ("json_formatter_example.py", "json-example", 2),
        ("otel_example.py", "otel-example", 1),
        ("flask_example.py", "flask-example", 4),
        ("fastapi_example.py", "fastapi-example", 6),
        ("django_example.py", "django-example", 4),
        ("wsgi_example.py", "wsgi-example", 6),
    ],
)
def test_example_runs_and_delivers(
    events_api: EventsAPI, script: str, app_name: str, min_rows: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "TINYBIRD_"))}
    env.update(TB_API_URL=events_api.url, TB_TOKEN=events_api.token)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=EXAMPLES.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivered: True" in result.stdout
    assert events_api.token not in result.stdout + result.stderr
    rows = events_api.rows()
    assert len(rows) >= min_rows
    assert {r["app_name"] for r in rows} == {app_name}
    assert events_api.quarantine["tb_logs"] == []
    traced = [r for r in rows if r["trace_id"]]
    assert traced, rows
