"""The ``tblog`` command line against a real local server; ``demo`` and ``local`` as processes."""

from __future__ import annotations

import argparse
import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tblog import cli
from tblog.cli.args import parse_since
from tblog.cli.write import DATASOURCES_DIR
from tblog.local.server import LocalServer
from tests.cliutil import run_tblog
from tests.localserver import event, ndjson, post, scalar, serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("cli"))


def run(server: LocalServer, *argv: str) -> int:
    return cli.main([*argv, "--host", server.url, "--token", server.admin_token])


def test_query_prints_a_table(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    post(server, ndjson(event(app_name="cli-q", message="first"), event(app_name="cli-q")))
    code = run(server, "query", "SELECT app_name, count() AS n FROM tb_logs "
                                "WHERE app_name = 'cli-q' GROUP BY app_name")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["app_name", "n"]
    assert lines[2].split() == ["cli-q", "2"]
    assert lines[-1] == "(1 rows)"


def test_query_with_format_prints_it_verbatim(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(server, "query", "SELECT 1 AS a, 'x' AS b FORMAT CSV") == 0
    assert capsys.readouterr().out == '1,"x"\n'


def test_query_errors_exit_1_with_the_message(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(server, "query", "DROP TABLE tb_logs") == 1
    err = capsys.readouterr().err
    assert "HTTP 400" in err
    assert "only SELECT" in err
    assert server.admin_token not in err


def test_environment_fallbacks(
    server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TB_HOST", server.url)
    monkeypatch.setenv("TB_TOKEN", server.admin_token)
    assert cli.main(["query", "SELECT 41 + 1 AS answer FORMAT TSV"]) == 0
    assert capsys.readouterr().out == "42\n"


def test_send_from_a_file_in_batches(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rows.ndjson"
    rows = [event(app_name="cli-send", message=f"m{i}") for i in range(25)]
    path.write_bytes(ndjson(*rows) + b"\n" + b'{"app_name": "cli-send", "level_no": "x"}\n')
    assert run(server, "send", "tb_logs", str(path), "--batch-rows", "10") == 0
    captured = capsys.readouterr()
    assert "sent 26 rows to tb_logs: 25 ok, 1 quarantined" in captured.out
    assert "rows sent" in captured.err  # the progress bar
    assert int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'cli-send'")) == 25


def test_send_from_stdin(
    server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ndjson(*[event(app_name="cli-stdin") for _ in range(3)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run(server, "send", "tb_logs", "-", "--quiet") == 0
    assert "3 ok, 0 quarantined" in capsys.readouterr().out
    assert int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'cli-stdin'")) == 3


def test_send_to_an_unknown_datasource_fails(
    server: LocalServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "rows.ndjson"
    path.write_bytes(ndjson(event()))
    assert run(server, "send", "nope", str(path), "--quiet") == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_tail_once_filters_by_app_and_level(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    post(server, ndjson(
        event(app_name="cli-tail", level="INFO", level_no=20, message="quiet", timestamp=now),
        event(app_name="cli-tail", level="ERROR", level_no=40, message="loud", timestamp=now,
              trace_id="t" * 32),
        event(app_name="other", level="ERROR", level_no=40, message="elsewhere", timestamp=now),
    ))  # fmt: skip
    assert run(server, "tail", "--once", "--app", "cli-tail", "--level", "warning") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert "ERROR" in out[0]
    assert "cli-tail tests: loud" in out[0]
    assert out[0].endswith("trace=" + "t" * 32)


def test_since_parses_durations() -> None:
    assert parse_since("90") == 90
    assert parse_since("10m") == 600
    assert parse_since("2h") == 7200
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("yesterday")


def test_datasource_lists_and_prints_the_shipped_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["datasource"]) == 0
    assert "tb_logs" in capsys.readouterr().out.split()
    assert cli.main(["datasource", "tb_logs"]) == 0
    assert capsys.readouterr().out == (DATASOURCES_DIR / "tb_logs.datasource").read_text()
    assert cli.main(["datasource", "nope"]) == 1


def test_help_lists_every_subcommand_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    names = ["demo", "local", "query", "tail", "stats", "series", "send", "datasource", "ui"]
    for name in names:
        assert f"\n    {name}" in listed, name
    assert len(cli.SUBCOMMANDS) == len(set(cli.SUBCOMMANDS)) == len(names)


def test_demo_runs_and_reports_every_event_arrived(tmp_path: Path) -> None:
    done = run_tblog("demo", "--events", "600", "--threads", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every event arrived, typed." in done.stdout
    sent = next(line for line in done.stdout.splitlines() if line.startswith("sent "))
    words = sent.split()
    assert words[1] == words[3]  # "sent N events, N arrived"
    assert "0 quarantined" in sent
    assert "the slowest trace" in done.stdout
    assert "PaymentDeclinedError" in done.stdout


def test_local_serves_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tblog", "local", "--port", "0", "--data-dir", str(tmp_path),
         "--token", "p.cli-admin-token-0123456789"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in first, first
        url = first.split("serving ", 1)[1].strip()
        import requests

        r = requests.post(
            f"{url}/v0/events?name=tb_logs&wait=true",
            data=json.dumps(event()),
            headers={"Authorization": "Bearer p.cli-admin-token-0123456789"},
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert any(tmp_path.iterdir())  # data persisted in --data-dir
