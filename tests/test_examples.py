"""Every example runs as a script against a real ``tblog local`` and its rows arrive.

Each example gets exactly the two variables the README's quick start exports (``TB_HOST`` and
``TB_TOKEN``, as ``tblog local`` prints them) and nothing else of Tinybird's; the rows are then
counted in the server's datasources with SQL. Without a token an example stops with one line
on stderr and exit status 2 (no fake token, no traceback, nothing sent).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tblog.local.server import LocalServer
from tests.cliutil import clean_env
from tests.localserver import scalar, serve

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> (datasource, the WHERE condition of its rows, rows it must deliver at least).
# Every row the example reports as sent must be in the datasource, and no more.
CASES: dict[str, tuple[str, str, int]] = {
    "basic.py": ("tb_logs", "app_name = 'basic-example'", 2),
    "structlog_example.py": ("tb_logs", "app_name = 'structlog-example'", 2),
    "json_formatter_example.py": ("tb_logs", "app_name = 'json-example'", 2),
    "otel_example.py": ("tb_logs", "app_name = 'otel-example'", 1),
    "flask_example.py": ("tb_logs", "app_name = 'flask-example'", 4),
    "fastapi_example.py": ("tb_logs", "app_name = 'fastapi-example'", 6),
    "django_example.py": ("tb_logs", "app_name = 'django-example'", 4),
    "wsgi_example.py": ("tb_logs", "app_name = 'wsgi-example'", 6),
    "events_example.py": ("events", "user_id = 'user-42'", 3),
    "datasource_example.py": ("events", "user_id = 'datasource-example'", 10),
    "litellm_example.py": ("litellm", "1", 2),
    "llm_traces_example.py": ("traces", "project_id = 'support-bot'", 2),
}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("examples-local"))


def run_example(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TBLOG_QUIET": ""}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=EXAMPLES.parent,
        check=False,
    )


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_against_tblog_local_with_the_quick_start_exports(
    local: LocalServer, script: str
) -> None:
    ds, where, rows = CASES[script]
    query = f"SELECT count() FROM {ds} WHERE {where}"
    before = int(scalar(local, query))
    result = run_example(script, clean_env(TB_HOST=local.url, TB_TOKEN=local.admin_token))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "delivered: True" in result.stdout, output
    assert local.admin_token not in output
    arrived = int(scalar(local, query)) - before
    assert arrived >= rows, output
    sent = re.search(r"'sent': (\d+)", result.stdout)
    if sent:  # the example printed its stats(): what they call sent is what arrived
        assert arrived == int(sent.group(1)), output
    assert int(scalar(local, f"SELECT count() FROM {ds}_quarantine")) == 0
    if ds == "tb_logs":
        traced = f"SELECT countIf(trace_id != '') FROM tb_logs WHERE {where}"
        assert int(scalar(local, traced)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_example_without_a_token_says_so_in_one_line_and_exits_2(script: str) -> None:
    # A host that must never be reached: the example has to stop before it sends anything.
    result = run_example(script, clean_env(TB_HOST="http://127.0.0.1:9"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TB_TOKEN" in lines[0] and "tblog local" in lines[0]
    assert "Traceback" not in result.stderr
    assert "delivered" not in result.stdout


@pytest.mark.slow
def test_datasource_example_tells_rows_the_server_refused(tmp_path: Path) -> None:
    # A tblog local without the example's datasource (only tb_logs): its rows get a 404.
    # The example says how many rows were dropped and why, and exits 1 (issue 16.7: the 8
    # rows sent before the API call were dropped without a word).
    only = tmp_path / "datasources"
    only.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "tblog" / "datasources"
    (only / "tb_logs.datasource").write_text((shipped / "tb_logs.datasource").read_text())
    server = subprocess.Popen(
        [sys.executable, "-m", "tblog", "local", "--port", "0", "--datasources", str(only),
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        exports: dict[str, str] = {}
        for line in server.stdout:  # bounded: the server prints its exports at start, or exits
            if "export " in line:
                words = line.split("export ", 1)[1].split()
                exports = dict(w.split("=", 1) for w in words)
                break
        assert exports, "tblog local printed no exports"
        result = run_example("datasource_example.py", clean_env(**exports))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Datasource: 0 of 5 rows sent, dropped: {'http_404': 5}" in result.stdout
    assert "AsyncDatasource: 0 of 3 rows sent, dropped: {'http_404': 3}" in result.stdout
    assert "API: HTTP 404" in result.stdout
    assert "delivered: False" in result.stdout
    assert "Traceback" not in result.stderr
    assert exports["TB_TOKEN"] not in result.stdout + result.stderr
