"""Pipes made through ``tblog local``'s API are kept in the data dir across restarts.

Its own module: chDB holds one data dir per process, and this test runs two servers
one after the other (tests/test_local_pipes.py keeps one open for its whole module).
"""

from __future__ import annotations

from pathlib import Path

import requests

from tests.localserver import serve

PIPE = "NODE n\nSQL >\n    SELECT count() AS n FROM tb_logs\nTYPE endpoint\n"


def test_pushed_pipes_survive_a_restart_and_bad_kept_files_are_reported(tmp_path: Path) -> None:
    gen = serve(tmp_path / "data")
    first = next(gen)
    try:
        r = requests.post(
            f"{first.url}/v0/pipes",
            params={"name": "kept"},
            data=PIPE,
            headers={"Authorization": f"Bearer {first.admin_token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        (first.store.data_dir / "pipes" / "broken.json").write_text("{")
        assert ((first.store.data_dir / "pipes" / "kept.json").stat().st_mode & 0o077) == 0
    finally:
        next(gen, None)
    gen = serve(tmp_path / "data")
    second = next(gen)
    try:
        r = requests.get(
            f"{second.url}/v0/pipes/kept.json",
            headers={"Authorization": f"Bearer {second.admin_token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert [int(row["n"]) for row in r.json()["data"]] == [0]
        assert [name for name, _ in second.load_errors] == ["broken.json"]
    finally:
        next(gen, None)
