"""Helpers for the tests of ``tblog local``: one real server (real chDB) per test module.

chDB holds one data directory per process, so modules must not overlap their servers:
each module starts one in a module-scoped fixture and closes it at the module's end.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tblog.local.server import LocalServer

pytest.importorskip("chdb")


def need_client(path: Path, tests: str, venv: str) -> None:
    """Skip when a Tinybird client's venv (``path`` inside ``venv``, which the Makefile
    builds) is missing; fail instead on CI, where ``tests`` must run."""
    if path.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run {tests}: make {venv}/.ok first")
    pytest.skip(f"no {venv} (make test creates it)")


def serve(tmp: Path, **options: Any) -> Iterator[LocalServer]:
    server = LocalServer(tmp, port=0, **options).start()
    try:
        yield server
    finally:
        server.close()


def event(**fields: Any) -> dict[str, Any]:
    """A valid tb_logs row (as TinybirdLoggingHandler sends it), with ``fields`` changed."""
    row: dict[str, Any] = {
        "timestamp": "2026-11-22T23:58:27.123456Z",
        "level": "INFO",
        "level_no": 20,
        "logger": "tests",
        "message": "hello",
        "app_name": "tests",
        "event_id": "5f0e7c8a-1b2c-4d5e-8f90-123456789abc",
        "extra": {},
    }
    row.update(fields)
    return row


def ndjson(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def post(
    server: LocalServer,
    body: bytes,
    *,
    ds: str = "tb_logs",
    token: str | None = None,
    gzipped: bool = False,
    wait: bool = True,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    params = {"name": ds}
    if wait:
        params["wait"] = "true"
    sent = {"Authorization": f"Bearer {token or server.admin_token}"}
    if gzipped:
        body = gzip.compress(body, 1)
        sent["Content-Encoding"] = "gzip"
    sent.update(headers or {})
    return requests.post(f"{server.url}/v0/events", params=params, data=body, headers=sent)


def sql(server: LocalServer, q: str, token: str | None = None) -> requests.Response:
    return requests.get(
        f"{server.url}/v0/sql",
        params={"q": q},
        headers={"Authorization": f"Bearer {token or server.admin_token}"},
    )


def scalar(server: LocalServer, q: str, token: str | None = None) -> Any:
    response = sql(server, q, token)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return next(iter(data[0].values()))
