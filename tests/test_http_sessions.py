"""Every HTTP client of tblog sends our Bearer token, whatever ``~/.netrc`` says.

requests replaces an ``Authorization`` header with a ``.netrc`` entry's credentials
when the session trusts the environment; every client's session comes from
``tblog._http`` (``trust_env=False``, proxies and CA bundle read explicitly).  A loopback
server records the ``Authorization`` header of each request it gets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import tblog
from tblog import cli
from tblog._sql import SqlClient
from tblog.cli.http import ApiClient
from tblog.query import QueryClient
from tblog.series import Client, DataPoint

TOKEN = "p.test-token-for-the-recorder"
ANSWER = {
    "meta": [], "data": [], "rows": 0, "statistics": {}, "datasources": [],
    "successful_rows": 1, "quarantined_rows": 0,
}  # fmt: skip


class Recorder:
    """A loopback HTTP server answering every request with ``ANSWER`` and recording it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.seen.append((self.command, self.path, self.headers.get("Authorization")))
                body = json.dumps(ANSWER).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login someone password hunter2\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))  # requests would send these as Basic auth


def _authorizations(recorder: Recorder) -> set[str | None]:
    assert recorder.seen, "no request arrived"
    return {auth for _, _, auth in recorder.seen}


def test_the_sql_client_and_the_query_client_send_our_token(
    recorder: Recorder, netrc: None
) -> None:
    sql = SqlClient(TOKEN, recorder.url)
    try:
        sql.sql("SELECT 1")
    finally:
        sql.close()
    with QueryClient(TOKEN, recorder.url) as query:
        query.sql("SELECT 2")
    assert _authorizations(recorder) == {f"Bearer {TOKEN}"}


def test_the_series_client_sends_our_token_on_reads_and_writes(
    recorder: Recorder, netrc: None
) -> None:
    client = Client(TOKEN, recorder.url)
    try:
        client.write_key("cpu", [DataPoint(datetime(2030, 1, 1, tzinfo=timezone.utc), 1.0)])
        client.get_series(keys=["cpu"])
    finally:
        client.close()
    assert {m for m, _, _ in recorder.seen} == {"GET", "POST"}
    assert _authorizations(recorder) == {f"Bearer {TOKEN}"}


def test_the_rest_api_client_sends_our_token(recorder: Recorder, netrc: None) -> None:
    with tblog.API(TOKEN, recorder.url) as api:
        api.get("datasources")
        api.post("sql", data={"q": "SELECT 1"})
    assert _authorizations(recorder) == {f"Bearer {TOKEN}"}


def test_the_cli_sends_our_token(
    recorder: Recorder, netrc: None, capsys: pytest.CaptureFixture[str]
) -> None:
    client = ApiClient(recorder.url, TOKEN)
    try:
        client.sql("SELECT 1")
        client.datasources()
    finally:
        client.close()
    code = cli.main(["query", "SELECT 1", "--host", recorder.url, "--token", TOKEN])
    capsys.readouterr()
    assert code == 0
    assert len(recorder.seen) == 3
    assert _authorizations(recorder) == {f"Bearer {TOKEN}"}


def test_sessions_take_proxies_and_the_ca_bundle_from_the_environment(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", recorder.url)  # the recorder plays the proxy
    bundle = tmp_path / "ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    from tblog import _http

    session = _http.session_for("https://api.example.invalid")
    assert session.trust_env is False
    assert session.verify == str(bundle)
    session.close()

    sql = SqlClient(TOKEN, "http://tinybird.example.invalid")  # reachable only via the proxy
    try:
        sql.sql("SELECT 1")
    finally:
        sql.close()
    [(_, path, auth)] = recorder.seen
    assert path.startswith("http://tinybird.example.invalid/v0/sql")  # a proxy request
    assert auth == f"Bearer {TOKEN}"

    monkeypatch.setenv("NO_PROXY", "example.invalid")
    assert _http.environment_settings("http://tinybird.example.invalid") == ({}, str(bundle))
    assert _http.environment_settings("http://x.example.com", verify=False)[1] is False
