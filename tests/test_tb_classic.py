"""Tinybird's classic CLI (``tb``, tinybird-cli 6.5.5) against a real ``tblog local``.

Each test runs the real ``tb`` of ``.venv-tinybird`` (the Makefile builds it) as a
subprocess against a server on loopback, with ``HOME`` and the working directory (where
``tb`` keeps its ``.tinyb``) in a temporary directory: no user config is read or written,
and nothing leaves the machine (``TB_VERSION_WARNING=0``: no PyPI version check).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tblog.local.server import LocalServer
from tests.cliutil import clean_env
from tests.localserver import event, ndjson, need_client, post, scalar, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TB = ROOT / ".venv-tinybird" / "bin" / "tb"


def _require_tb() -> None:
    need_client(TB, "the classic tb tests", ".venv-tinybird")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    _require_tb()
    yield from serve(tmp_path_factory.mktemp("tbclassic"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


def tb(server: LocalServer, cwd: Path, *args: str, token: str | None = None,
       timeout: float = 90) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``tb --host URL --token T ARGS`` in ``cwd`` (its parent is ``HOME``)."""
    env = clean_env(HOME=str(cwd.parent / "home"), TB_VERSION_WARNING="0",
                    NO_COLOR="1", COLUMNS="200")  # fmt: skip
    return subprocess.run(
        [str(TB), "--host", server.url, "--token", token or server.admin_token, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "** Error" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result.stdout


def test_tb_auth(server: LocalServer, project: Path) -> None:
    out = _ok(tb(server, project, "auth"))
    assert "Auth successful" in out or "auth" in out.lower()
    config = json.loads((project / ".tinyb").read_text())
    assert config["host"] == server.url
    assert config["name"] == "tblog_local"
    assert config["id"]


def test_tb_auth_refuses_a_bad_token(server: LocalServer, project: Path) -> None:
    result = tb(server, project, "auth", token="p.not-a-token")
    assert result.returncode != 0
    assert "Invalid token" in result.stderr
    assert not (project / ".tinyb").exists()


def test_tb_sql(server: LocalServer, project: Path) -> None:
    assert post(server, ndjson(event(app_name="tb-sql-app"))).status_code == 200
    query = "SELECT app_name, count() AS n FROM tb_logs WHERE app_name = 'tb-sql-app' GROUP BY 1"
    out = _ok(tb(server, project, "sql", query, "--format", "json"))
    data = json.loads(out[out.index("{") :])
    assert data["data"] == [{"app_name": "tb-sql-app", "n": 1}]


def test_tb_datasource_ls(server: LocalServer, project: Path) -> None:
    out = _ok(tb(server, project, "datasource", "ls", "--format", "json"))
    listed = json.loads(out[out.index("{") :])["datasources"]
    names = {d["name"] for d in listed}
    assert "tb_logs" in names
    row = next(d for d in listed if d["name"] == "tb_logs")
    assert row["created at"][:4].isdigit()


def test_tb_token_ls(server: LocalServer, project: Path) -> None:
    made = requests.post(f"{server.url}/v0/tokens", data={"name": "ls-me",
                         "scope": "DATASOURCES:READ:tb_logs"},
                         headers={"Authorization": f"Bearer {server.admin_token}"})  # fmt: skip
    assert made.status_code == 200, made.text
    out = _ok(tb(server, project, "token", "ls"))
    assert "ls-me" in out
    assert "admin token" in out


DATAFILE = """DESCRIPTION >
    Pushed by tb in a test.

SCHEMA >
    `ts` DateTime `json:$.ts`,
    `name` String `json:$.name`,
    `n` Int32 `json:$.n`

ENGINE "MergeTree"
ENGINE_SORTING_KEY "ts"
"""


def _pushed(server: LocalServer, project: Path, name: str) -> None:
    """``tb push NAME.datasource`` (the DATAFILE above), checked."""
    (project / f"{name}.datasource").write_text(DATAFILE)
    _ok(tb(server, project, "push", f"{name}.datasource"))
    assert name in server.store.datasources


def test_tb_push_datasource(server: LocalServer, project: Path) -> None:
    _pushed(server, project, "pushed")
    ds = server.store.datasources["pushed"]
    assert [c.name for c in ds.columns] == ["ts", "name", "n"]
    assert ds.engine_args["sorting_key"] == "ts"
    assert scalar(server, "SELECT count() FROM pushed") == 0


def test_tb_datasource_append(server: LocalServer, project: Path) -> None:
    _pushed(server, project, "appended")
    csv = project / "rows.csv"
    csv.write_text("2026-11-22 10:00:00,alpha,1\n2026-11-22 10:00:01,beta,2\n")
    _ok(tb(server, project, "datasource", "append", "appended", str(csv)))
    ndj = project / "rows.ndjson"
    ndj.write_text(json.dumps({"ts": "2026-11-22 10:00:02", "name": "gamma", "n": 3}) + "\n")
    _ok(tb(server, project, "datasource", "append", "appended", str(ndj)))
    assert scalar(server, "SELECT sum(n) FROM appended") == 6


def test_tb_datasource_truncate(server: LocalServer, project: Path) -> None:
    _pushed(server, project, "truncated")
    rows = ndjson({"ts": "2026-11-22 10:00:00", "name": "x", "n": 1})
    assert post(server, rows, ds="truncated").status_code == 200
    _ok(tb(server, project, "datasource", "truncate", "truncated", "--yes"))
    assert scalar(server, "SELECT count() FROM truncated") == 0


def test_tb_datasource_rm(server: LocalServer, project: Path) -> None:
    _pushed(server, project, "removed")
    _ok(tb(server, project, "datasource", "rm", "removed", "--yes"))
    assert "removed" not in server.store.datasources
    listed = requests.get(f"{server.url}/v0/datasources",
                          headers={"Authorization": f"Bearer {server.admin_token}"})  # fmt: skip
    assert "removed" not in {d["name"] for d in listed.json()["datasources"]}
