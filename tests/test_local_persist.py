"""``tblog local`` and its data dir across runs (issue 16.3 and 16.5): one server per data
dir (a second one fails in one line, exit 2), and the admin token and scoped tokens
survive a restart.  Each server is a real ``tblog local`` subprocess (real chDB).
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tblog.local.tokens import TOKENS_FILE, Tokens
from tests.cliutil import clean_env, run_tblog

pytest.importorskip("chdb")

pytestmark = pytest.mark.slow

ROW = {"timestamp": "2026-11-22T23:58:27.123456Z", "level": "INFO", "level_no": 20,
       "logger": "tests", "message": "hello", "app_name": "persist",
       "event_id": "5f0e7c8a-1b2c-4d5e-8f90-123456789abc", "extra": {}}  # fmt: skip


class Local:
    """A running ``tblog local``: its URL, the admin token it printed, its output."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tblog", "local", "--port", "0", "--data-dir", str(data_dir),
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.out: list[str] = []
        self.url = self._field("serving ")
        self.admin_token = self._field("admin token: ")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _field(self, marker: str) -> str:
        while True:
            line = self.lines.get(timeout=60)
            assert line is not None, f"tblog local ended: {self.out}"
            self.out.append(line)
            if marker in line:
                return line.split(marker, 1)[1].strip()

    def stop(self) -> str:
        """Ctrl-C; its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        return err


@pytest.fixture
def started() -> Iterator[list[Local]]:
    servers: list[Local] = []
    yield servers
    for server in servers:
        server.stop()


def _start(started: list[Local], data_dir: Path, *extra: str) -> Local:
    server = Local(data_dir, *extra)
    started.append(server)
    return server


def _append(local: Local, token: str, ds: str = "tb_logs") -> requests.Response:
    return requests.post(
        f"{local.url}/v0/events", params={"name": ds, "wait": "true"},
        data=json.dumps(ROW), headers={"Authorization": f"Bearer {token}"}, timeout=30,
    )  # fmt: skip


def _count(local: Local, token: str) -> requests.Response:
    return requests.get(
        f"{local.url}/v0/sql", params={"q": "SELECT count() AS n FROM tb_logs FORMAT JSON"},
        headers={"Authorization": f"Bearer {token}"}, timeout=30,
    )  # fmt: skip


def test_a_second_server_on_the_same_data_dir_fails_in_one_line(
    started: list[Local], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = _start(started, data)
    second = run_tblog("local", "--port", "0", "--data-dir", str(data), timeout=60)
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use" in lines[0] and str(data.resolve()) in lines[0]
    assert "serving" not in second.stdout
    assert _append(first, first.admin_token).status_code == 200  # the first is unharmed
    assert "stopped" in first.stop()
    # the lock went with the first server: the data dir serves again
    again = _start(started, data)
    assert _count(again, again.admin_token).json()["data"] == [{"n": 1}]


def test_tokens_survive_a_restart(started: list[Local], tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _start(started, data)
    made = requests.post(
        f"{first.url}/v0/tokens",
        data={"name": "ingest", "scope": "DATASOURCES:APPEND:tb_logs",
              "filter": "app_name = 'persist'"},
        headers={"Authorization": f"Bearer {first.admin_token}"}, timeout=30,
    )  # fmt: skip
    assert made.status_code == 200, made.text
    scoped = made.json()["token"]
    assert _append(first, scoped).status_code == 200
    first.stop()

    saved = list(data.glob("*token*"))
    assert saved, list(data.iterdir())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in saved)

    second = _start(started, data)
    assert second.admin_token == first.admin_token
    assert _count(second, second.admin_token).json()["data"] == [{"n": 1}]
    assert _append(second, scoped).status_code == 200  # its scope and filter came back
    assert _count(second, scoped).status_code == 403  # append only: no reads
    other = requests.post(
        f"{second.url}/v0/events", params={"name": "tb_logs", "wait": "true"},
        data=json.dumps({**ROW, "app_name": "another"}),
        headers={"Authorization": f"Bearer {scoped}"}, timeout=30,
    )  # fmt: skip
    assert other.status_code == 403  # outside the token's row filter
    out = "".join(second.out) + second.stop()
    assert scoped not in out  # a scoped token is never printed


def test_an_explicit_token_wins_and_leaves_the_saved_one(
    started: list[Local], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = _start(started, data)
    saved_admin = first.admin_token
    first.stop()
    mine = "p.persist-explicit-admin-0123456789"
    second = _start(started, data, "--token", mine)
    assert second.admin_token == mine
    assert _append(second, mine).status_code == 200
    assert _append(second, saved_admin).status_code == 403
    second.stop()
    assert mine not in "".join(p.read_text() for p in data.glob("*token*"))
    third = _start(started, data)
    assert third.admin_token == saved_admin


def test_unreadable_saved_tokens_fail_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / TOKENS_FILE).write_text('{"format": 1, "admin": 42}')
    done = run_tblog("local", "--port", "0", "--data-dir", str(data), timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(data / TOKENS_FILE) in lines[0] and "delete it" in lines[0]


# -- in process -------------------------------------------------------------------------


def test_in_process_a_second_server_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    from tblog.local.datadir import DataDirInUseError
    from tblog.local.server import LocalServer

    first = LocalServer(tmp_path, port=0)
    try:
        with pytest.raises(DataDirInUseError, match="in use by another tblog local"):
            LocalServer(tmp_path, port=0)
        with socket.socket() as busy:  # a server that fails to start lets the dir go
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            first.close()
            with pytest.raises(OSError, match="in use"):
                LocalServer(tmp_path, port=busy.getsockname()[1])
        LocalServer(tmp_path, port=0).close()
    finally:
        first.close()


def test_tokens_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / TOKENS_FILE
    tokens = Tokens(path)
    admin = tokens.admin()
    scoped = tokens.add("reader", ["DATASOURCES:READ:tb_logs"], row_filter="app_name = 'x'")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Tokens(path)
    assert again.admin().value == admin.value
    found = again.find(scoped.value)
    assert found == scoped and found.row_filter == "app_name = 'x'"
    assert Tokens(path).admin("p.explicit-0123456789").value == "p.explicit-0123456789"
    assert Tokens(path).find(admin.value) is None  # not accepted until admin() says so
    assert "p.explicit" not in path.read_text()
    # without a path, nothing is written and every run is new
    memory = Tokens()
    assert memory.admin().value != Tokens().admin().value
    assert sorted(p.name for p in tmp_path.iterdir()) == [TOKENS_FILE]
