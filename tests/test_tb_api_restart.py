"""Datasources created through ``POST /v0/datasources`` are kept in the data dir: a
restarted ``tblog local`` serves them again, and forgets them once deleted.  (Its own
module: chDB holds one data dir per process, and this test opens its own.)"""

from __future__ import annotations

from pathlib import Path

import requests

from tblog.local.server import LocalServer
from tests.localserver import ndjson, post, scalar

SCHEMA = "`ts` DateTime `json:$.ts`, `n` Int32 `json:$.n`"


def test_api_datasources_survive_a_restart(tmp_path: Path) -> None:
    first = LocalServer(tmp_path, port=0).start()
    auth = {"Authorization": f"Bearer {first.admin_token}"}
    try:
        r = requests.post(f"{first.url}/v0/datasources", params={"name": "kept", "schema": SCHEMA},
                          headers=auth)  # fmt: skip
        assert r.status_code == 200, r.text
        assert post(first, ndjson({"ts": "2026-11-22 10:00:00", "n": 5}), ds="kept").ok
    finally:
        first.close()
    second = LocalServer(tmp_path, port=0).start()
    try:
        assert "kept" in second.store.datasources
        assert scalar(second, "SELECT sum(n) FROM kept") == 5
        r = requests.delete(f"{second.url}/v0/datasources/kept", headers=auth)
        assert r.status_code == 204
    finally:
        second.close()
    third = LocalServer(tmp_path, port=0)
    try:
        assert "kept" not in third.store.datasources
    finally:
        third.close()
