"""``tblog send`` waits out 429/503 answers and goes on where it stopped with ``--resume``;
``tblog.series`` writes and ``SqlClient`` reads retry the same way (issue 16.4).

``send`` runs as users run it (a subprocess) against tests/eventsapi.py, whose 429s say
``Retry-After: 0`` so the retries cost no time; the in-process tests patch the sleep.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tblog._delivery import foreground
from tblog._sql import QueryFailedError, SqlClient
from tblog.series import Client, DataPoint, WriteFailedError
from tests.cliutil import clean_env, run_tblog
from tests.eventsapi import EventsAPI, Fault, Request

DS = "send_retry_rows"  # no .datasource file: the test server takes any row


@pytest.fixture
def api() -> Iterator[EventsAPI]:
    server = EventsAPI()
    yield server
    server.close()


def _rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    return path


def _send(api: EventsAPI, *args: str) -> Any:
    env = clean_env(TB_HOST=api.url, TB_TOKEN=api.token)
    return run_tblog("send", DS, *args, "--quiet", "--batch-rows", "50", env=env, timeout=60)


def _fail_requests(api: EventsAPI, numbers: set[int], **fault: Any) -> None:
    """Answer the requests with these 1-based numbers with ``Fault(**fault)``."""
    seen = [0]

    def decide(_req: Request) -> Fault | None:
        seen[0] += 1
        return Fault(**fault) if seen[0] in numbers else None

    api.fault = decide


def _arrived(api: EventsAPI) -> list[int]:
    return sorted(row["i"] for row in api.rows(DS))


def test_429s_are_waited_out_and_every_row_arrives_once(api: EventsAPI, tmp_path: Path) -> None:
    # 150 rows go through, then three 429s in a row, then another one later
    _fail_requests(api, {4, 5, 6, 9}, status=429, headers={"Retry-After": "0"})
    done = _send(api, str(_rows(tmp_path / "rows.ndjson", 400)))
    assert done.returncode == 0, done.stderr
    assert _arrived(api) == list(range(400))
    assert "sent 400 rows" in done.stdout
    assert done.stderr.count("HTTP 429") == 4 and "Traceback" not in done.stderr


def test_a_503_is_retried_too(api: EventsAPI, tmp_path: Path) -> None:
    _fail_requests(api, {2}, status=503, headers={"Retry-After": "0"})
    done = _send(api, str(_rows(tmp_path / "rows.ndjson", 100)))
    assert done.returncode == 0, done.stderr
    assert _arrived(api) == list(range(100))


def test_resume_goes_on_after_the_last_confirmed_row(api: EventsAPI, tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.ndjson", 400)
    offset = tmp_path / "rows.ndjson.tblog-offset"
    _fail_requests(api, {4}, status=400, body={"error": "refused"})  # not retryable
    first = _send(api, str(rows), "--resume")
    assert first.returncode == 1
    assert "150 rows confirmed" in first.stderr and "--resume" in first.stderr
    assert "Traceback" not in first.stderr
    assert json.loads(offset.read_text())["rows"] == 150
    assert offset.stat().st_mode & 0o077 == 0
    assert _arrived(api) == list(range(150))

    api.fault = None
    second = _send(api, str(rows), "--resume")
    assert second.returncode == 0, second.stderr
    assert "sent 250 rows" in second.stdout
    assert _arrived(api) == list(range(400))  # each row exactly once
    assert not offset.exists()  # done: nothing left to resume


def test_resume_without_an_offset_file_starts_at_the_top(api: EventsAPI, tmp_path: Path) -> None:
    done = _send(api, str(_rows(tmp_path / "rows.ndjson", 60)), "--resume")
    assert done.returncode == 0, done.stderr
    assert _arrived(api) == list(range(60))
    assert not (tmp_path / "rows.ndjson.tblog-offset").exists()


def test_resume_refuses_an_input_that_changed(api: EventsAPI, tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.ndjson", 100)
    _fail_requests(api, {2}, status=400)
    assert _send(api, str(rows), "--resume").returncode == 1
    rows.write_text("".join(json.dumps({"i": -i}) + "\n" for i in range(100)))
    api.fault = None
    done = _send(api, str(rows), "--resume")
    assert done.returncode == 2
    assert "changed" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _arrived(api) == list(range(50))


def test_resume_with_stdin_is_a_clear_error(api: EventsAPI) -> None:
    done = _send(api, "-", "--resume")
    assert done.returncode == 2
    assert "stdin" in done.stderr and "Traceback" not in done.stderr
    assert api.requests == []


def test_429s_that_never_end_stop_with_the_count_confirmed(api: EventsAPI, tmp_path: Path) -> None:
    _fail_requests(api, set(range(2, 100)), status=429, headers={"Retry-After": "0"})
    done = _send(api, str(_rows(tmp_path / "rows.ndjson", 100)))
    assert done.returncode == 1
    assert "50 rows confirmed" in done.stderr and "--skip 50" in done.stderr
    assert len(api.requests) == 1 + foreground.DEFAULT.attempts


# -- in process: tblog.series writes and SqlClient reads ---------------------------------


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(foreground, "sleep", slept.append)
    return slept


def test_series_writes_wait_out_429s(api: EventsAPI, waits: list[float]) -> None:
    api.fail_next(2, status=429, headers={"Retry-After": "1.5"})
    client = Client(api.token, api.url)
    try:
        client.write_id("s1", [DataPoint(datetime(2026, 1, 1, tzinfo=timezone.utc), 1.0)])
    finally:
        client.close()
    assert waits == [1.5, 1.5]
    points = api.rows("tblog_series_points")
    assert len(points) == 1 and points[0]["series_id"] == "s1"


class _SqlAnswers(BaseHTTPRequestHandler):
    """/v0/sql answering the scripted statuses in turn ("reset": drop the connection)."""

    protocol_version = "HTTP/1.1"
    script: ClassVar[list[int | str]] = []
    calls: ClassVar[int] = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        step = self.script.pop(0) if self.script else 200
        if step == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = json.dumps({"data": [{"x": 1}]} if step == 200 else {"error": "busy"}).encode()
        self.send_response(int(step))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if step == 429:
            self.send_header("X-RateLimit-Reset", "2")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sql_server() -> Iterator[str]:
    _SqlAnswers.script, _SqlAnswers.calls = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SqlAnswers)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_sql_client_retries_429_503_and_network_errors(sql_server: str, waits: list[float]) -> None:
    _SqlAnswers.script = [429, 503, "reset", 200]
    client = SqlClient("p.sql-retry-token-0123", sql_server)
    try:
        assert client.rows("SELECT 1") == [{"x": 1}]
    finally:
        client.close()
    assert _SqlAnswers.calls == 4 and len(waits) == 3
    assert waits[0] == 2.0  # a 429's X-RateLimit-Reset


def test_sql_client_gives_up_after_the_attempts(sql_server: str, waits: list[float]) -> None:
    _SqlAnswers.script = [503] * 50
    client = SqlClient("p.sql-retry-token-0123", sql_server)
    try:
        with pytest.raises(QueryFailedError) as caught:
            client.rows("SELECT 1")
    finally:
        client.close()
    assert caught.value.status == 503
    assert _SqlAnswers.calls == foreground.DEFAULT.attempts


def test_sql_client_gives_up_soon_when_the_network_fails(
    sql_server: str, waits: list[float]
) -> None:
    _SqlAnswers.script = ["reset"] * 50
    client = SqlClient("p.sql-retry-token-0123", sql_server)
    try:
        with pytest.raises(QueryFailedError, match="unreachable") as caught:
            client.rows("SELECT 1")
    finally:
        client.close()
    assert caught.value.status == 0
    assert _SqlAnswers.calls == foreground.DEFAULT.network_attempts
    assert len(waits) == foreground.DEFAULT.network_attempts - 1


def test_a_series_write_is_not_sent_again_after_a_network_error(
    api: EventsAPI, waits: list[float]
) -> None:
    api.fail_next(1, reset=True)
    client = Client(api.token, api.url)
    try:
        with pytest.raises(WriteFailedError, match="unreachable"):
            client.write_id("s2", [DataPoint(datetime(2026, 1, 1, tzinfo=timezone.utc), 2.0)])
    finally:
        client.close()
    assert len(api.requests) == 1 and waits == []
