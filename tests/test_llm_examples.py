"""The LiteLLM, traces, events and Datasource examples run as scripts and their rows arrive."""

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
    ("script", "datasource", "rows"),
    [
        ("litellm_example.py", "litellm", 2),
        ("llm_traces_example.py", "traces", 2),
        ("events_example.py", "events", 3),
        ("datasource_example.py", "events", 10),
    ],
)
def test_example_runs_and_delivers(
    events_api: EventsAPI, script: str, datasource: str, rows: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "TINYBIRD_"))}
    env.update(
        TB_API_URL=events_api.url, TB_TOKEN=events_api.token, LITELLM_LOCAL_MODEL_COST_MAP="True"
    )
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
    assert len(events_api.rows(datasource)) == rows
    assert events_api.quarantine[datasource] == []
