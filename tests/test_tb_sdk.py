"""Tinybird's Python SDK (``tinybird-sdk`` 0.4.0) against a real ``tblog local``.

Each action runs the real SDK in ``.venv-tinybird-sdk`` (the Makefile builds it) as a
subprocess: a small driver calls ``tinybird_sdk.api`` with the server's URL and token and
prints the result as JSON (or the ``TinybirdApiError``'s status and message).  ``HOME`` is a
temporary directory; nothing but loopback is reached.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tblog.local.server import LocalServer
from tests.cliutil import clean_env
from tests.localserver import event, ndjson, need_client, post, scalar, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SDK_PYTHON = ROOT / ".venv-tinybird-sdk" / "bin" / "python"

DRIVER = """
import json, sys
from tinybird_sdk.api.api import TinybirdApi, TinybirdApiError
from tinybird_sdk.api.tokens import create_jwt, TokenApiError
url, token, action, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
api = TinybirdApi({"base_url": url, "token": token})
try:
    if action == "create_jwt":
        out = create_jwt({"base_url": url, "token": token}, *args)
    else:
        out = getattr(api, action)(*args)
except TinybirdApiError as exc:
    out = {"_status": exc.status_code, "_error": str(exc)}
except TokenApiError as exc:
    out = {"_status": exc.status, "_error": str(exc)}
print(json.dumps(out))
"""

SCHEMA = "`ts` DateTime `json:$.ts`, `name` String `json:$.name`, `n` Int32 `json:$.n`"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    need_client(SDK_PYTHON, "the tinybird-sdk tests", ".venv-tinybird-sdk")
    yield from serve(tmp_path_factory.mktemp("tbsdk"))


def sdk(server: LocalServer, tmp: Path, action: str, *args: Any,
        token: str | None = None) -> Any:  # fmt: skip
    """The SDK's answer to ``action(*args)`` (JSON), run in its own venv."""
    (tmp / "home").mkdir(exist_ok=True)
    result = subprocess.run(
        [str(SDK_PYTHON), "-c", DRIVER, server.url, token or server.admin_token, action,
         json.dumps(args)],
        env=clean_env(HOME=str(tmp / "home")), cwd=tmp, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _create(server: LocalServer, name: str) -> None:
    r = requests.post(f"{server.url}/v0/datasources", params={"name": name, "schema": SCHEMA},
                      headers={"Authorization": f"Bearer {server.admin_token}"})  # fmt: skip
    assert r.status_code == 200, r.text


def test_sdk_query(server: LocalServer, tmp_path: Path) -> None:
    post(server, ndjson(event(app_name="sdk-q", level="ERROR", level_no=40)))
    out = sdk(server, tmp_path, "query", "recent_errors", {"app": "sdk-q"})
    assert "_status" not in out, out
    assert [row["app_name"] for row in out["data"]] == ["sdk-q"]


def test_sdk_append_datasource(server: LocalServer, tmp_path: Path) -> None:
    _create(server, "sdk_append")
    csv = tmp_path / "rows.csv"
    csv.write_text("2026-11-22 10:00:00,a,1\n2026-11-22 10:00:01,b,2\n")
    out = sdk(server, tmp_path, "append_datasource", "sdk_append", {"file": str(csv)})
    assert "_status" not in out, out
    nd = tmp_path / "rows.ndjson"
    nd.write_text(json.dumps({"ts": "2026-11-22 10:00:02", "name": "c", "n": 4}) + "\n")
    out = sdk(server, tmp_path, "append_datasource", "sdk_append", {"file": str(nd)})
    assert "_status" not in out, out
    assert scalar(server, "SELECT sum(n) FROM sdk_append") == 7


def test_sdk_truncate_datasource(server: LocalServer, tmp_path: Path) -> None:
    _create(server, "sdk_truncate")
    post(server, ndjson({"ts": "2026-11-22 10:00:00", "name": "x", "n": 1}), ds="sdk_truncate")
    assert sdk(server, tmp_path, "truncate_datasource", "sdk_truncate") == {}
    assert scalar(server, "SELECT count() FROM sdk_truncate") == 0


def test_sdk_delete_datasource(server: LocalServer, tmp_path: Path) -> None:
    _create(server, "sdk_delete")
    rows = [{"ts": "2026-11-22 10:00:00", "name": name, "n": 1} for name in ("keep", "drop")]
    post(server, ndjson(*rows), ds="sdk_delete")
    out = sdk(server, tmp_path, "delete_datasource", "sdk_delete",
              {"delete_condition": "name = 'drop'"})  # fmt: skip
    assert "_status" not in out, out
    assert scalar(server, "SELECT groupArray(name) FROM sdk_delete") == ["keep"]


def test_sdk_create_token_with_a_json_body(server: LocalServer, tmp_path: Path) -> None:
    options = {"name": "sdk-jwt", "expires_at": int(time.time()) + 600,
               "scopes": [{"type": "DATASOURCES:READ", "resource": "tb_logs"}]}  # fmt: skip
    out = sdk(server, tmp_path, "create_jwt", options)
    assert "_status" not in out, out
    r = requests.get(f"{server.url}/v0/sql", params={"q": "SELECT count() FROM tb_logs"},
                     headers={"Authorization": f"Bearer {out['token']}"})  # fmt: skip
    assert r.status_code == 200, r.text
    expired = {**options, "expires_at": int(time.time()) - 1}
    dead = sdk(server, tmp_path, "create_jwt", expired)["token"]
    r = requests.get(f"{server.url}/v0/sql", params={"q": "SELECT 1"},
                     headers={"Authorization": f"Bearer {dead}"})  # fmt: skip
    assert r.status_code == 403
