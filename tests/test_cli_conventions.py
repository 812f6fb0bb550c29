"""What every ``tblog`` read command does alike, run as users run it (a subprocess):
``--json`` is NDJSON, ``--level`` means "this level and above" in ``query`` and ``tail``,
terminal niceties (colour, ``\\r`` progress) only on a terminal, empty ``stats`` intervals
shown, errors naming the host in one line, the ``tblog:`` prefix never doubled."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tblog.cli.output import err
from tblog.local.server import LocalServer
from tblog.series import Client, DataPoint
from tests.cliutil import clean_env, run_tblog
from tests.localserver import event, ndjson, post, serve

pytestmark = pytest.mark.slow

T0 = datetime(2032, 3, 4, 10, 0, tzinfo=timezone.utc)
LEVELS = [("DEBUG", 10), ("INFO", 20), ("WARNING", 30), ("ERROR", 40), ("CRITICAL", 50)]
NOW_APP = f"conv-now-{uuid.uuid4().hex[:8]}"


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    for s in serve(tmp_path_factory.mktemp("cli_conv")):
        rows: list[dict[str, Any]] = []
        # One row per level at 10:00 and at 12:00; nothing at 11:00 (an outage).
        for hour in (0, 2):
            for i, (name, no) in enumerate(LEVELS):
                rows.append(event(
                    app_name="conv", level=name, level_no=no, message=f"{name.lower()}-{hour}",
                    timestamp=_iso(T0 + timedelta(hours=hour, minutes=i)),
                    event_id=str(uuid.uuid4()), extra={"k": hour},
                ))  # fmt: skip
        now = datetime.now(timezone.utc)
        for i, (name, no) in enumerate(LEVELS):
            rows.append(event(app_name=NOW_APP, level=name, level_no=no, message=name.lower(),
                              timestamp=_iso(now + timedelta(microseconds=i)),
                              event_id=str(uuid.uuid4())))  # fmt: skip
        assert post(s, ndjson(*rows)).status_code == 200
        yield s


def _cli(server: LocalServer, *argv: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return run_tblog(*argv, "--host", server.url, "--token", server.admin_token, env=env,
                     timeout=60)  # fmt: skip


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# -- --json -----------------------------------------------------------------------------


def test_query_with_filters_prints_ndjson(server: LocalServer) -> None:
    done = _cli(server, "query", "--app", "conv", "--from", T0.isoformat(), "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 10
    assert {r["message"] for r in rows} >= {"debug-0", "critical-2"}
    assert all(r["event_id"] and r["app_name"] == "conv" for r in rows)
    assert {r["extra"]["k"] for r in rows} == {0, 2}  # extra is the object, not its text


def test_stats_and_series_print_ndjson(server: LocalServer) -> None:
    done = _cli(server, "stats", "--app", "conv", "--from", T0.isoformat(),
                "--to", (T0 + timedelta(hours=3)).isoformat(), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["bucket"][11:16], x["total"]) for x in lines[:-1]] == [
        ("10:00", 5),
        ("11:00", 0),
        ("12:00", 5),
    ]
    assert lines[-1]["summary"]["total"] == 10 and lines[-1]["summary"]["errors"] == 4

    client = Client(server.admin_token, server.url)
    client.write_key("conv-series", [DataPoint(T0 + timedelta(minutes=30 * i), float(i))
                                     for i in range(4)])  # fmt: skip
    client.close()
    done = _cli(server, "series", "read", "conv-series", "--from", T0.isoformat(),
                "--to", (T0 + timedelta(hours=2)).isoformat(), "--interval", "1hour",
                "--function", "max", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    points = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["value"] for p in points[:-1]] == [1.0, 3.0]
    assert "summary" in points[-1]


# -- --level ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["WARNING", "warning", "WARN", "warn"])
def test_level_means_this_level_and_above_in_query_and_tail(
    server: LocalServer, level: str
) -> None:
    query = _cli(server, "query", "--app", NOW_APP, "--level", level, "--json")
    tail = _cli(server, "tail", "--app", NOW_APP, "--level", level, "--once", "--json")
    for done in (query, tail):
        assert done.returncode == 0, done.stderr
        got = sorted(json.loads(line)["level"] for line in done.stdout.splitlines())
        assert got == ["CRITICAL", "ERROR", "WARNING"], (done.args, got)


@pytest.mark.parametrize("command", ["query", "tail"])
def test_an_unknown_level_is_one_line_and_exit_2(server: LocalServer, command: str) -> None:
    done = _cli(server, command, "--level", "LOUD", *(["--once"] if command == "tail" else []))
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line.startswith("tblog: ") and "LOUD" in line and "WARNING" in line


# -- stats shows empty intervals ------------------------------------------------------------


def test_stats_shows_the_empty_interval(server: LocalServer) -> None:
    done = _cli(server, "stats", "--app", "conv", "--from", T0.isoformat(),
                "--to", (T0 + timedelta(hours=4)).isoformat())  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = [line.split() for line in done.stdout.splitlines()[2:6]]
    assert [row[1] for row in table] == ["10:00", "11:00", "12:00", "13:00"]
    assert [row[-1] for row in table] == ["5", "0", "5", "0"]
    assert "2032-03-04 11:00  0" in done.stdout  # in the chart too


# -- errors --------------------------------------------------------------------------------


def _down_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "argv",
    [["query", "--app", "x"], ["query", "SELECT 1"], ["stats"], ["series", "read", "k"],
     ["tail", "--once"]],
)  # fmt: skip
def test_errors_name_the_host_in_one_line(argv: list[str], server: LocalServer) -> None:
    url = _down_url()
    token = "p.conventions-token-0123456789"
    down = run_tblog(*argv, "--host", url, "--token", token, timeout=60)
    refused = run_tblog(*argv, "--host", server.url, "--token", token, timeout=60)
    for done, host in ((down, url), (refused, server.url)):
        assert done.returncode == 1, (argv, done.stderr)
        line = _one_line(done.stderr)
        assert line.startswith("tblog: ") and not line.startswith("tblog: tblog:")
        assert host in line and token not in line, line


def test_the_prefix_is_never_doubled(capsys: pytest.CaptureFixture[str]) -> None:
    err("tblog: already prefixed")
    err("plain")
    assert capsys.readouterr().err.splitlines() == ["tblog: already prefixed", "tblog: plain"]


# -- terminal niceties only on a terminal ------------------------------------------------


def _on_a_terminal(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> str:
    """Run ``python -m tblog ARGV`` with stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tblog", *argv], stdin=subprocess.PIPE,
                            stdout=slave, stderr=slave, env=env)  # fmt: skip
    os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(60) == 0, b"".join(chunks)
    return b"".join(chunks).decode()


def _send_argv(server: LocalServer) -> list[str]:
    return ["send", "tb_logs", "-", "--batch-rows", "2", "--host", server.url,
            "--token", server.admin_token]  # fmt: skip


def _rows(n: int) -> str:
    return ndjson(*[event(app_name="conv-send", event_id=str(uuid.uuid4())) for _ in range(n)]
                  ).decode()  # fmt: skip


def test_no_carriage_returns_when_not_on_a_terminal(server: LocalServer) -> None:
    # Bytes, not text: text mode would turn each \r into a newline.
    piped = subprocess.run([sys.executable, "-m", "tblog", *_send_argv(server)],
                           input=_rows(6).encode(), capture_output=True, env=clean_env(),
                           timeout=60, check=False)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert b"\r" not in piped.stderr and b"\r" not in piped.stdout
    assert b"rows sent" in piped.stderr  # progress still shows, as plain lines
    tty = _on_a_terminal(_send_argv(server), clean_env(), _rows(6).encode())
    assert "\r2 rows sent" in tty.replace("\r\n", "\n")


@pytest.mark.parametrize("argv", [["tail", "--once"], ["query"]])
def test_colour_only_on_a_terminal_without_no_color(server: LocalServer, argv: list[str]) -> None:
    full = [*argv, "--app", NOW_APP, "--host", server.url, "--token", server.admin_token]
    piped = run_tblog(*full, timeout=60)
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout
    assert "ERROR" in piped.stdout
    coloured = _on_a_terminal(full, clean_env())
    assert "\x1b[31mERROR" in coloured
    plain = _on_a_terminal(full, clean_env(NO_COLOR="1"))
    assert "\x1b[" not in plain and "ERROR" in plain
