"""``tblog query`` filters, ``tblog stats`` and ``tblog series read`` against tblog local."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from tblog import cli
from tblog.cli.args import parse_time
from tblog.cli.output import bar_chart
from tblog.local.server import LocalServer
from tblog.series import Client, DataPoint
from tests.localserver import event, ndjson, post, serve

T0 = datetime(2031, 5, 4, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    for s in serve(tmp_path_factory.mktemp("cli_read")):
        rows = [
            event(
                timestamp=(T0 + timedelta(minutes=25 * i)).isoformat().replace("+00:00", "Z"),
                level="ERROR" if i % 4 == 0 else "INFO",
                level_no=40 if i % 4 == 0 else 20,
                app_name="cli",
                message=f"msg {i} it's",
                event_id=f"00000000-0000-0000-0000-{i:012d}",
            )
            for i in range(8)
        ]
        assert post(s, ndjson(*rows)).status_code == 200
        yield s


def _run(server: LocalServer, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main([*argv, "--host", server.url, "--token", server.admin_token])
    return code, capsys.readouterr().out


def test_query_filters(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(server, capsys, "query", "--app", "cli", "--level", "ERROR",
                     "--from", T0.isoformat(), "-q", "it's")  # fmt: skip
    assert code == 0
    assert out.count(" ERROR ") == 2
    assert out.strip().endswith("(2 of 2 logs)")
    code, out = _run(server, capsys, "query", "SELECT count() AS n FROM tb_logs")
    assert code == 0 and "8" in out


def test_stats_table_and_chart(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(server, capsys, "stats", "--from", T0.isoformat(),
                     "--to", (T0 + timedelta(hours=4)).isoformat(), "--interval", "1h")  # fmt: skip
    assert code == 0
    # Minutes 0, 25, 50 | 75, 100 | 125, 150, 175; ERROR at 0 and 100.
    table = [line.split() for line in out.splitlines()[2:5]]
    assert table == [
        ["2031-05-04", "10:00", "1", "2", "3"],
        ["2031-05-04", "11:00", "1", "1", "2"],
        ["2031-05-04", "12:00", "0", "3", "3"],
    ]
    assert "total 8, errors 2, error rate 25.00%" in out
    assert "2031-05-04 10:00 " + "█" * 40 + " 3" in out


def test_series_read(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    client = Client(server.admin_token, server.url)
    client.write_key(
        "cli-series", [DataPoint(T0 + timedelta(minutes=20 * i), float(i)) for i in range(6)]
    )
    client.close()
    code, out = _run(server, capsys, "series", "read", "cli-series", "--from", T0.isoformat(),
                     "--to", (T0 + timedelta(hours=2)).isoformat(), "--interval", "1hour",
                     "--function", "max")  # fmt: skip
    assert code == 0
    assert out.splitlines()[:2] == ["2031-05-04T10:00:00+00:00  2", "2031-05-04T11:00:00+00:00  5"]
    code, _ = _run(server, capsys, "series", "read", "missing", "--from", "1h")
    assert code == 1


def test_bad_token_is_one_line_and_exit_1(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["stats", "--host", server.url, "--token", "wrong-token"])
    err = capsys.readouterr().err
    assert code == 1
    assert "wrong-token" not in err and err.startswith("tblog: ")


def test_helpers() -> None:
    assert bar_chart([("a", 4), ("b", 2), ("c", 0)], width=4) == ["a ████ 4", "b ██ 2", "c  0"]
    assert parse_time("2h", now=7200.0) == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert parse_time("2031-01-01T00:00") == datetime(2031, 1, 1, tzinfo=timezone.utc)
