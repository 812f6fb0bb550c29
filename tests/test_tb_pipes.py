"""Tinybird's classic CLI (``tb``, tinybird-cli 6.5.5) pushing and reading pipes on a real
``tblog local``: ``tb push`` of a ``.pipe`` (tblog's shipped ones included), ``tb pipe
ls``, ``tb pipe data`` and ``tb pipe rm``.

``tb`` runs from ``.venv-tinybird`` (the Makefile builds it) as a subprocess against a
server on loopback, with ``HOME`` and its working directory in a temporary directory (no
user config is read or written) and ``TB_VERSION_WARNING=0`` (no PyPI version check).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tblog.local.pipes_api import DEFAULT_PIPES
from tblog.local.server import LocalServer
from tests.cliutil import clean_env
from tests.localserver import event, ndjson, need_client, post, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TB = ROOT / ".venv-tinybird" / "bin" / "tb"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    need_client(TB, "the classic tb tests", ".venv-tinybird")
    yield from serve(tmp_path_factory.mktemp("tbpipes"))


@pytest.fixture(scope="module")
def rows(server: LocalServer) -> None:
    body = ndjson(
        event(app_name="web", level="ERROR", level_no=40, message="boom", trace_id="t1",
              event_id="00000000-0000-4000-8000-000000000001"),
        event(app_name="api", level="INFO", level_no=20, message="fine", trace_id="t1",
              event_id="00000000-0000-4000-8000-000000000002"),
    )  # fmt: skip
    assert post(server, body).status_code == 200


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


def tb(server: LocalServer, cwd: Path, *args: str, timeout: float = 120) -> str:
    """``tb --host URL --token ADMIN ARGS`` in ``cwd`` (its parent is ``HOME``): its
    output, after checking it succeeded."""
    env = clean_env(HOME=str(cwd.parent / "home"), TB_VERSION_WARNING="0",
                    NO_COLOR="1", COLUMNS="200")  # fmt: skip
    result = subprocess.run(
        [str(TB), "--host", server.url, "--token", server.admin_token, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "** Error" not in out and "Error:" not in out, out
    assert server.admin_token not in out
    return result.stdout


def _json(out: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(out[out.index("{") :])
    return data


def test_tb_pipe_ls_lists_the_shipped_pipes(server: LocalServer, project: Path) -> None:
    out = tb(server, project, "pipe", "ls", "--format", "json")
    listed = _json(out)["pipes"]
    assert isinstance(listed, list)
    names = {p["name"] for p in listed}
    assert {"recent_errors", "trace_rows", "level_counts"} <= names
    assert all(len(p["published date"]) == len("2026-01-01 00:00:00") for p in listed)


def test_tb_push_a_new_pipe_then_read_and_remove_it(server: LocalServer, rows: None,
                                                    project: Path) -> None:  # fmt: skip
    text = (DEFAULT_PIPES / "trace_rows.pipe").read_text()
    (project / "my_trace.pipe").write_text(text.replace("trace_rows_node", "my_trace_node"))
    out = tb(server, project, "push", "my_trace.pipe")
    assert "'my_trace' created" in out
    assert "my_trace" in tb(server, project, "pipe", "ls")
    data = _json(tb(server, project, "pipe", "data", "my_trace", "--trace_id", "t1",
                    "--format", "json"))["data"]  # fmt: skip
    assert isinstance(data, list)
    assert [r["message"] for r in data] == ["boom", "fine"]
    tb(server, project, "pipe", "rm", "my_trace", "--yes")
    assert "my_trace" not in tb(server, project, "pipe", "ls")


def test_tb_push_a_pipe_without_type_endpoint_publishes_its_last_node(
    server: LocalServer, rows: None, project: Path
) -> None:
    (project / "per_app.pipe").write_text(
        "NODE counted\nSQL >\n    SELECT app_name, count() AS n FROM tb_logs GROUP BY app_name\n\n"
        "NODE per_app_out\nSQL >\n    SELECT app_name, n FROM counted ORDER BY app_name\n"
    )
    tb(server, project, "push", "per_app.pipe")
    data = _json(tb(server, project, "pipe", "data", "per_app", "--format", "json"))["data"]
    assert data == [{"app_name": "api", "n": 1}, {"app_name": "web", "n": 1}]


def test_tb_push_the_shipped_pipes_over_the_served_ones(server: LocalServer, rows: None,
                                                        project: Path) -> None:  # fmt: skip
    # Replacing a pipe runs tb's regression checks, which read Tinybird's pipe_stats_rt
    # service datasource (not in tblog local): --no-check skips them.
    for path in sorted(DEFAULT_PIPES.glob("*.pipe")):
        shutil.copy(path, project / path.name)
        out = tb(server, project, "push", path.name, "--force", "--no-check")
        assert f"'{path.stem}' created" in out
    data = _json(tb(server, project, "pipe", "data", "recent_errors", "--app", "web",
                    "--format", "json"))["data"]  # fmt: skip
    assert isinstance(data, list)
    assert [r["message"] for r in data] == ["boom"]
