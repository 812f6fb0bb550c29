"""The CLI picks its token in one documented order: reads the read variables, writes the write ones.

Each command runs as users run it (a subprocess of ``python -m tblog``) against a loopback
server that answers like Tinybird's SQL and Events APIs and records the token of each request.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.cliutil import clean_env, run_tblog

READ, WRITE, PLAIN, LEGACY = "p.read-token-1234", "p.write-token-5678", "p.tb-token-90", "p.tnb-00"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0]
        self.seen.append((path, self.headers.get("Authorization", "")))
        if path == "/v0/sql":
            body = {"meta": [{"name": "ts", "type": "String"}], "data": [], "rows": 0}
        else:
            body = {"successful_rows": 1, "quarantined_rows": 0}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _run(url: str, env_tokens: dict[str, str], *args: str) -> None:
    done = run_tblog(*args, env=clean_env(**env_tokens, TB_HOST=url), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


ALL = {"TB_READ_TOKEN": READ, "TB_WRITE_TOKEN": WRITE, "TB_TOKEN": PLAIN, "TINYBIRD_TOKEN": LEGACY}


@pytest.mark.parametrize(
    "args",
    [("query", "SELECT 1"), ("query", "SELECT 1 FORMAT CSV"), ("tail", "--once")],
    ids=["query", "query-format", "tail"],
)
def test_reads_use_the_read_token_first(server: str, args: tuple[str, ...]) -> None:
    _run(server, ALL, *args)
    assert _Recorder.seen and {auth for _, auth in _Recorder.seen} == {f"Bearer {READ}"}


def test_writes_use_the_write_token_first(server: str, tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text('{"a": 1}\n')
    _run(server, ALL, "send", "events", str(rows), "--quiet")
    assert [auth for _, auth in _Recorder.seen] == [f"Bearer {WRITE}"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"TB_TOKEN": PLAIN, "TINYBIRD_TOKEN": LEGACY}, PLAIN), ({"TINYBIRD_TOKEN": LEGACY}, LEGACY)],
)
def test_both_fall_back_in_the_same_order(
    server: str, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text('{"a": 1}\n')
    _run(server, env, "query", "SELECT 1")
    _run(server, env, "send", "events", str(rows), "--quiet")
    assert [auth for _, auth in _Recorder.seen] == [f"Bearer {expected}"] * 2


def test_help_states_each_order() -> None:
    from tblog.cli import build_parser

    parser = build_parser()
    actions = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    query_help = actions["query"].format_help().replace("\n", " ")
    send_help = actions["send"].format_help().replace("\n", " ")
    assert "$TB_READ_TOKEN, else $TB_TOKEN, else" in " ".join(query_help.split())
    assert "$TB_WRITE_TOKEN, else $TB_TOKEN, else" in " ".join(send_help.split())
