"""Tinybird's Forward CLI (``tinybird`` 5.0.3, ``tb --local``) against ``tblog local``.

The CLI runs from its own venv, ``.venv-tinybird-forward`` (the Makefile builds it), as a
subprocess pointed at a ``tblog local`` on a free loopback port through ``TB_LOCAL_HOST``
and ``TB_LOCAL_PORT``; ``HOME`` and the project folder are in ``tmp_path``; telemetry and
the version check (both network calls) are off.

``tb --local`` asks ``GET /tokens`` for the tokens, then makes a workspace per project
folder (``GET /v1/user/workspaces``, ``POST /v1/workspaces``) before the command itself:
tblog.local.compat_api answers those.  tests/tinybird_compat.py records which commands
work; the ones that do are proved here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tblog.local.server import LocalServer
from tests.localserver import event, ndjson, need_client, post, scalar, serve

ROOT = Path(__file__).resolve().parent.parent
TB = ROOT / ".venv-tinybird-forward" / "bin" / "tb"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("tbfwd"))


def _tb(server: LocalServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    need_client(TB, "the Forward CLI tests", ".venv-tinybird-forward")
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir(exist_ok=True)
    project.mkdir(exist_ok=True)
    port = server.url.rsplit(":", 1)[1]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "TB_LOCAL_HOST": "localhost",
        "TB_LOCAL_PORT": port,
        "TB_CLI_TELEMETRY_OPTOUT": "1",
        "TB_VERSION_WARNING": "0",
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [str(TB), "--local", *args],
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_local_tokens_are_the_admin_token_for_loopback_clients(server: LocalServer) -> None:
    answer = requests.get(f"{server.url}/tokens", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "user_token": server.admin_token,
        "admin_token": server.admin_token,
        "workspace_admin_token": server.admin_token,
    }


def test_local_tokens_refused_to_web_pages(server: LocalServer) -> None:
    answer = requests.get(
        f"{server.url}/tokens", headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert answer.status_code == 403
    assert server.admin_token not in answer.text


def test_workspaces_need_the_admin_token(server: LocalServer) -> None:
    reader = server.create_token("fwd_reader", ["DATASOURCES:READ:tb_logs"])
    for token in ("", reader):
        answer = requests.get(
            f"{server.url}/v1/user/workspaces",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=10,
        )
        assert answer.status_code == 403, answer.text


def test_tb_local_sql(server: LocalServer, tmp_path: Path) -> None:
    assert post(server, ndjson(event(message="forward one"), event(message="forward two")))
    done = _tb(
        server, tmp_path, "sql", "SELECT count() AS n FROM tb_logs WHERE message LIKE 'forward%'"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "2" in lines, done.stdout


def test_tb_local_sql_reports_a_bad_query(server: LocalServer, tmp_path: Path) -> None:
    done = _tb(server, tmp_path, "sql", "SELECT * FROM no_such_table")
    assert done.returncode != 0 or "no_such_table" in done.stdout + done.stderr
    assert "no_such_table" in done.stdout + done.stderr


def test_tb_local_datasource_ls(server: LocalServer, tmp_path: Path) -> None:
    done = _tb(server, tmp_path, "datasource", "ls")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "name: tb_logs" in done.stdout and "name: traces" in done.stdout


def test_tb_local_token_ls(server: LocalServer, tmp_path: Path) -> None:
    done = _tb(server, tmp_path, "token", "ls")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "admin token" in done.stdout


def test_tb_local_pipe_ls(server: LocalServer, tmp_path: Path) -> None:
    done = _tb(server, tmp_path, "pipe", "ls")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recent_errors" in done.stdout, done.stdout


def test_tb_local_datasource_truncate(server: LocalServer, tmp_path: Path) -> None:
    post(server, ndjson(event(message="to truncate")), ds="tb_logs")
    assert scalar(server, "SELECT count() FROM tb_logs") > 0
    done = _tb(server, tmp_path, "datasource", "truncate", "tb_logs", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "truncated" in done.stdout
    assert int(scalar(server, "SELECT count() FROM tb_logs")) == 0


@pytest.mark.parametrize(
    ("command", "endpoint"), [("build", "/v1/build"), ("deploy", "/v1/deploy")]
)
def test_tb_local_build_and_deploy_are_not_served(
    server: LocalServer, tmp_path: Path, command: str, endpoint: str
) -> None:
    """Documented as "no" in the table: Forward's server-side build and deployments."""
    folder = tmp_path / "project" / "datasources"
    folder.mkdir(parents=True)
    (folder / "fwd_t.datasource").write_text("SCHEMA >\n    `a` String `json:$.a`\n")
    done = _tb(server, tmp_path, command)
    assert f"no such endpoint: POST {endpoint}" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("bind", "peer", "served"),
    [("127.0.0.1", "127.0.0.1", True), ("127.0.0.1", "::ffff:127.0.0.1", True),
     ("::1", "::1", True), ("0.0.0.0", "127.0.0.1", False), ("127.0.0.1", "10.0.0.7", False),
     ("192.168.1.2", "192.168.1.9", False), ("127.0.0.1", "", False)],
)  # fmt: skip
def test_local_tokens_only_on_loopback(bind: str, peer: str, served: bool) -> None:
    """The admin token goes to loopback clients of a loopback-bound server only (a server
    bound to another address can be reached from elsewhere)."""
    from http.server import BaseHTTPRequestHandler

    from tblog.local import compat_api
    from tblog.local.server import _HTTPError

    class _Server:
        bind_host = bind
        admin_token = "p.local_secret"

    class _Request:
        command = "GET"
        client_address = (peer, 5000)

    fake: LocalServer = _Server()  # type: ignore[assignment]
    [(method, _pattern, handler)] = [
        r for r in compat_api.routes(fake) if r[1].pattern == "/tokens"
    ]
    assert method == "GET"
    request: BaseHTTPRequestHandler = _Request()  # type: ignore[assignment]
    if served:
        assert handler(request, {})[1]["admin_token"] == "p.local_secret"
    else:
        with pytest.raises(_HTTPError) as refused:
            handler(request, {})
        assert refused.value.status == 404 and "secret" not in str(refused.value)
