"""The CLI's failures are one line on stderr with a meaningful exit status, never a traceback.

Each command runs as users run it, a subprocess of ``python -m tblog``.
"""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tblog.local.server import _Server
from tests.cliutil import clean_env, run_tblog

TOKEN = "p.cli-errors-token-0123"


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_send_names_a_missing_file_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    done = run_tblog("send", "events", str(missing), env=clean_env(TB_HOST="http://127.0.0.1:9",
                                                           TB_TOKEN=TOKEN))  # fmt: skip
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert line.startswith("tblog: ") and str(missing) in line and "No such file" in line


@pytest.mark.parametrize("command", ["local", "demo"])
def test_without_chdb_the_install_hint_shows(command: str, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['chdb'] = None; sys.modules['chdb.session'] = None\n"
        "from tblog.cli import main\n"
        f"sys.exit(main([{command!r}] + (['--port', '0', '--data-dir', {str(tmp_path)!r}] "
        f"if {command!r} == 'local' else ['--events', '10'])))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'tblog[local]'" in _one_line(done.stderr)


def test_local_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_tblog("local", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert f"cannot serve on 127.0.0.1:{port}" in line and "in use" in line


class _Counting(http.server.BaseHTTPRequestHandler):
    """Answers like the Events API; holds the third request until ``release`` is set."""

    posts: ClassVar[list[int]] = []
    third: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.posts.append(1)
        if len(self.posts) == 3:
            self.third.set()
            self.release.wait(60)
        data = json.dumps({"successful_rows": 1, "quarantined_rows": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the interrupted client left mid-answer


@pytest.fixture
def counting_server() -> Iterator[str]:
    _Counting.posts = []
    _Counting.third, _Counting.release = threading.Event(), threading.Event()
    httpd = _QuietServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Counting.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_ctrl_c_during_send_says_how_far_it_got_and_exits_130(counting_server: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tblog", "send", "events", "-", "--batch-rows", "1", "--quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(TB_HOST=counting_server, TB_TOKEN=TOKEN),
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        # two batches are answered; the third is held by the server when Ctrl-C comes
        proc.stdin.write("".join(f'{{"a": {i}}}\n' for i in range(4)))
        proc.stdin.flush()
        assert _Counting.third.wait(60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "sent 2 rows to events" in out
    line = _one_line(err)
    assert "2 rows confirmed" in line and "--skip 2" in line


def test_send_skip_goes_on_where_it_stopped(counting_server: str, tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text("".join(f'{{"a": {i}}}\n' for i in range(5)))
    done = run_tblog("send", "events", str(rows), "--skip", "3", "--quiet", "--batch-rows", "1",
                  env=clean_env(TB_HOST=counting_server, TB_TOKEN=TOKEN))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(_Counting.posts) == 2 and "sent 2 rows" in done.stdout


def test_a_client_that_leaves_mid_answer_prints_nothing_on_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for gone in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
        try:
            raise gone
        except OSError:
            _Server.handle_error(None, None, ("127.0.0.1", 5555))  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("bad")
    except ValueError:
        _Server.handle_error(None, None, ("127.0.0.1", 5555))  # type: ignore[arg-type]
    assert _one_line(capsys.readouterr().err).startswith("tblog local: request from 127.0.0.1")
