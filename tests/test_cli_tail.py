"""``tblog tail`` as users run it (a subprocess) against real servers on loopback.

Every row is printed exactly once, also rows that land late (older than rows already
printed) from several producers; a ``--since`` backlog is paged through without waiting;
a server that is down, or goes away and comes back, is retried with backoff (one line on
stderr naming the host, never a traceback), and Ctrl-C ends it with exit status 130.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest
import requests

from tblog import cli
from tblog._delivery import foreground
from tblog._sql import QueryFailedError
from tblog.cli import read
from tblog.local.server import LocalServer
from tblog.query import QueryClient
from tests.cliutil import clean_env, run_tblog
from tests.localserver import event, ndjson, post, serve

pytestmark = pytest.mark.slow

TOKEN = "p.tail-test-admin-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("cli_tail"))


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rows(app: str, prefix: str, n: int, at: datetime) -> list[dict[str, Any]]:
    """``n`` rows of ``app`` a microsecond apart from ``at``, messages ``prefix-i``."""
    return [
        event(app_name=app, message=f"{prefix}-{i}", timestamp=_iso(at + timedelta(microseconds=i)),
              event_id=str(uuid.uuid4()))
        for i in range(n)
    ]  # fmt: skip


class _Lines:
    """The lines a stream gives, read on a thread; ``wait`` polls a condition on them."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait(self, ok: Callable[[list[str]], bool], timeout: float = 20.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: ok(self.lines), timeout)

    def join(self) -> None:
        self._thread.join(10)


class _Tail:
    """``tblog tail ARGS`` running, its stdout and stderr read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tblog", "tail", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=clean_env(),
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = _Lines(self.proc.stdout)
        self.err = _Lines(self.proc.stderr)

    def messages(self) -> Counter[str]:
        """How often each message was printed (the text after ``logger: ``)."""
        return Counter(line.split(": ", 1)[1] for line in self.out.lines if ": " in line)

    def has_all(self, wanted: set[str]) -> bool:
        return self.out.wait(lambda _: wanted <= set(self.messages()))

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(20)
        self.out.join()
        self.err.join()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _no_traceback(tail: _Tail) -> None:
    assert not any("Traceback" in line for line in tail.err.lines), tail.err.lines


def test_late_rows_of_three_producers_are_printed_exactly_once(server: LocalServer) -> None:
    """Producer 0 writes rows stamped now; once the tail printed them, producers 1 and 2
    write rows stamped 2 s and 6 s earlier (as buffering producers deliver them): the
    tail must print those too, and nothing twice."""
    app = f"tail-late-{uuid.uuid4().hex[:8]}"
    tail = _Tail("--app", app, "--since", "2m", "--interval", "0.2",
                 "--host", server.url, "--token", server.admin_token)  # fmt: skip
    try:
        expected: set[str] = set()
        for rnd in range(5):
            now = datetime.now(timezone.utc)
            fresh = _rows(app, f"p0-r{rnd}", 40, now)
            assert post(server, ndjson(*fresh)).status_code == 200
            expected |= {r["message"] for r in fresh}
            assert tail.has_all(expected), (len(tail.messages()), tail.err.lines)

            def produce(k: int, lag: float, now: datetime = now, rnd: int = rnd) -> None:
                rows = _rows(app, f"p{k}-r{rnd}", 40, now - timedelta(seconds=lag))
                for half in (rows[20:], rows[:20]):  # out of order within the producer too
                    assert post(server, ndjson(*half)).status_code == 200

            threads = [threading.Thread(target=produce, args=(k, lag))
                       for k, lag in ((1, 2.0), (2, 6.0))]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            expected |= {f"p{k}-r{rnd}-{i}" for k in (1, 2) for i in range(40)}
        assert tail.has_all(expected), sorted(expected - set(tail.messages()))[:10]
        # Two sentinels, one after the other: at least one whole poll ran after every row.
        for s in ("sentinel-a", "sentinel-b"):
            assert post(server, ndjson(*_rows(app, s, 1, datetime.now(timezone.utc)))).ok
            assert tail.has_all({f"{s}-0"})
        assert tail.interrupt() == 130
    finally:
        tail.kill()
    counts = tail.messages()
    assert set(counts) == expected | {"sentinel-a-0", "sentinel-b-0"}
    assert {m: n for m, n in counts.items() if n != 1} == {}
    assert len(expected) == 5 * 120
    _no_traceback(tail)


def test_a_since_backlog_is_printed_whole_and_fast(server: LocalServer) -> None:
    app = f"tail-backlog-{uuid.uuid4().hex[:8]}"
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    total = 50_000
    for b in range(5):
        rows = _rows(app, f"b{b}", total // 5, start + timedelta(seconds=30 * b))
        assert post(server, ndjson(*rows)).status_code == 200
    began = time.monotonic()
    done = run_tblog("tail", "--app", app, "--since", "10m", "--once",
                     "--host", server.url, "--token", server.admin_token, timeout=120)  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == total
    assert len({line.split(": ", 1)[1] for line in lines}) == total
    # Oldest first.
    assert lines[0].endswith(": b0-0") and lines[-1].endswith(f": b4-{total // 5 - 1}")
    print(f"tail --since backlog: {total} rows in {took:.2f}s ({total / took:,.0f} rows/s)")


def test_json_lines_carry_the_event_id(server: LocalServer) -> None:
    app = f"tail-json-{uuid.uuid4().hex[:8]}"
    rows = _rows(app, "j", 3, datetime.now(timezone.utc))
    assert post(server, ndjson(*rows)).ok
    done = run_tblog("tail", "--app", app, "--once", "--json",
                     "--host", server.url, "--token", server.admin_token, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    assert [g["event_id"] for g in got] == [r["event_id"] for r in rows]
    assert [g["message"] for g in got] == ["j-0", "j-1", "j-2"]


def test_a_refused_token_is_one_line_and_exit_1(server: LocalServer) -> None:
    done = run_tblog("tail", "--host", server.url, "--token", "p.not-the-token-0123456789",
                     timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tblog: "), lines
    assert server.url in lines[0] and "not-the-token" not in lines[0]


def test_once_against_a_server_that_is_down_fails_naming_the_host() -> None:
    port = _free_port()
    done = run_tblog("tail", "--once", "--host", f"http://127.0.0.1:{port}",
                     "--token", TOKEN, timeout=60)  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"http://127.0.0.1:{port}" in lines[0], lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Local:
    """``tblog local`` as a process on a fixed port and data dir (so it can come back)."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tblog", "local", "--port", str(port), "--data-dir",
             str(data_dir), "--token", TOKEN],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "tblog local exited"
            try:
                if requests.get(f"{self.url}/v0/datasources", timeout=2,
                                headers={"Authorization": f"Bearer {TOKEN}"}).ok:  # fmt: skip
                    return
            except requests.ConnectionError:
                pass
            try:  # a bounded pause that also notices an early exit
                self.proc.wait(0.1)
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError("tblog local did not come up")

    def post(self, rows: list[dict[str, Any]]) -> None:
        response = requests.post(
            f"{self.url}/v0/events", params={"name": "tb_logs", "wait": "true"},
            data=ndjson(*rows), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
        )  # fmt: skip
        assert response.status_code == 200, response.text

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def test_tail_waits_for_the_server_and_resumes_after_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    app = "tail-reconnect"
    tail = _Tail("--app", app, "--since", "5m", "--interval", "0.2", "--host", url,
                 "--token", TOKEN)  # fmt: skip
    local: _Local | None = None
    try:
        # Down from the start: it says so, naming the host, and keeps trying.
        assert tail.err.wait(lambda ls: any(f"cannot reach {url}" in x for x in ls))
        assert tail.proc.poll() is None
        local = _Local(port, tmp_path)
        first = _rows(app, "a", 30, datetime.now(timezone.utc))
        local.post(first)
        assert tail.has_all({r["message"] for r in first}), tail.err.lines
        told = len(tail.err.lines)
        local.stop()
        assert tail.err.wait(lambda ls: len(ls) > told)  # the outage is reported
        assert tail.proc.poll() is None
        local = _Local(port, tmp_path)
        second = _rows(app, "b", 30, datetime.now(timezone.utc))
        local.post(second)
        assert tail.has_all({r["message"] for r in first + second}), tail.err.lines
        assert tail.interrupt() == 130
    finally:
        tail.kill()
        if local is not None:
            local.stop()
    counts = tail.messages()
    assert sorted(counts) == sorted(r["message"] for r in first + second)
    assert set(counts.values()) == {1}
    _no_traceback(tail)
    assert all(line.startswith("tblog: ") and TOKEN not in line for line in tail.err.lines)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the SQL API with 503 for the first ``busy`` requests, then 403."""

    busy = 20
    hits: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        self.hits.append(1)
        status = 503 if len(self.hits) <= self.busy else 403
        body = json.dumps({"error": "busy" if status == 503 else "invalid token"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815 - http.server's name

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _flaky_server() -> Iterator[str]:
    """A loopback server answering as ``_Flaky`` does; yields its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_backoff_is_capped_exponential_and_a_refusal_ends_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process, sleeps recorded instead of slept: a server that is down is retried
    with growing, capped, jittered waits; Ctrl-C during a wait exits 130."""
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 9:
            raise KeyboardInterrupt

    monkeypatch.setattr(read, "sleep", fake_sleep)
    url = f"http://127.0.0.1:{_free_port()}"
    assert cli.main(["tail", "--host", url, "--token", TOKEN]) == 130
    caps = [min(read.RETRY_CAP, read.RETRY_BASE * 2**i) for i in range(9)]
    assert all(cap / 2 <= w <= cap for w, cap in zip(waits, caps, strict=True)), waits
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[-1] == "tblog: interrupted"
    assert all(f"cannot reach {url}" in line and "retrying in" in line for line in lines[:9])


def test_a_busy_server_is_waited_out_and_a_refusal_ends_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(read, "sleep", lambda s: None)
    _Flaky.hits = []
    with _flaky_server() as url:
        code = cli.main(["tail", "--host", url, "--token", TOKEN])
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2, lines
    assert all(url in line and "503" in line and "retrying in" in line for line in lines[:-1])
    assert url in lines[-1] and "403" in lines[-1] and "retrying" not in lines[-1]
    assert TOKEN not in "".join(lines)


def test_a_failure_part_way_through_a_backlog_loses_and_repeats_nothing(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The third request fails (the server went away between two pages): the rows of the
    pages read before it are printed, and the retry goes on after them."""
    app = f"tail-partway-{uuid.uuid4().hex[:8]}"
    rows = _rows(app, "w", 5000, datetime.now(timezone.utc) - timedelta(seconds=60))
    assert post(server, ndjson(*rows)).status_code == 200
    calls = []
    real_sql = QueryClient.sql

    def flaky_sql(self: QueryClient, query: str) -> list[dict[str, Any]]:
        calls.append(query)
        if len(calls) == 3:
            raise QueryFailedError("the SQL API is unreachable (ConnectionError)", 0)
        return real_sql(self, query)

    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the retry's wait, then the pause once caught up
            raise KeyboardInterrupt

    monkeypatch.setattr(QueryClient, "sql", flaky_sql)
    monkeypatch.setattr(read, "sleep", fake_sleep)
    code = cli.main(["tail", "--app", app, "--since", "5m", "--page-size", "700",
                     "--host", server.url, "--token", server.admin_token])  # fmt: skip
    assert code == 130
    captured = capsys.readouterr()
    printed = Counter(line.split(": ", 1)[1] for line in captured.out.splitlines())
    assert printed == Counter(r["message"] for r in rows)
    err_lines = captured.err.splitlines()
    assert "retrying in" in err_lines[0] and server.url in err_lines[0]
    assert err_lines[1:] == [f"tblog: reconnected to {server.url}", "tblog: interrupted"]


def test_the_look_back_reads_again_only_the_slice_that_gained_rows(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Tail`` (the library under ``tblog tail``): with 3,000 rows inside the look-back
    window, an idle poll reads no row again, and a late row costs re-reading its 100 ms
    slice only, not the window."""
    app = f"tail-slices-{uuid.uuid4().hex[:8]}"
    base = datetime.now(timezone.utc) - timedelta(seconds=20)
    rows = [
        event(app_name=app, message=f"s-{i}", event_id=str(uuid.uuid4()),
              timestamp=_iso(base + timedelta(milliseconds=5 * i)))
        for i in range(3000)
    ]  # fmt: skip
    assert post(server, ndjson(*rows)).status_code == 200
    read_back: list[int] = []
    real_sql = QueryClient.sql

    def counting_sql(self: QueryClient, query: str) -> list[dict[str, Any]]:
        answer = real_sql(self, query)
        if "AS ts_us" in query:  # a read of rows (not of counts)
            read_back.append(len(answer))
        return answer

    monkeypatch.setattr(QueryClient, "sql", counting_sql)
    with QueryClient(server.admin_token, server.url) as client:
        tail = client.tail({"app": app}, since=base, lookback=30, batch_size=10_000)
        assert [e.message for e in tail.poll()] == [r["message"] for r in rows]
        read_back.clear()
        assert tail.poll() == []
        assert read_back == [0]  # the forward read found nothing; nothing read again
        late = event(app_name=app, message="late", event_id=str(uuid.uuid4()),
                     timestamp=_iso(base + timedelta(milliseconds=5 * 1500 + 2)))  # fmt: skip
        assert post(server, ndjson(late)).status_code == 200
        read_back.clear()
        assert [e.message for e in tail.poll()] == ["late"]
        assert read_back[0] == 0 and sum(read_back) <= 21  # its slice: 20 rows and itself
        assert tail.poll() == []


def test_each_failed_request_is_one_retry_line_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """tail waits out a busy server itself, and says so on the first 503: its client does
    not retry underneath it (silently, up to eight times and two minutes per attempt)."""

    def no_hidden_wait(seconds: float) -> None:
        raise AssertionError(f"the query client waited {seconds}s on its own")

    monkeypatch.setattr(read, "sleep", lambda s: None)
    monkeypatch.setattr(foreground, "sleep", no_hidden_wait)
    _Flaky.hits = []
    monkeypatch.setattr(_Flaky, "busy", 5)
    with _flaky_server() as url:
        code = cli.main(["tail", "--host", url, "--token", TOKEN])
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    retried = [line for line in lines if "retrying in" in line]
    assert len(retried) == 5 and len(_Flaky.hits) == 6, (lines, len(_Flaky.hits))


def test_a_query_client_without_retries_sends_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``QueryClient(retry=False)``: a 503 is the caller's at once (the default retries)."""
    monkeypatch.setattr(foreground, "sleep", lambda s: None)
    with _flaky_server() as url:
        for retry, sends in ((False, 1), (True, 8)):
            _Flaky.hits = []
            with (
                QueryClient(TOKEN, url, retry=retry) as client,
                pytest.raises(QueryFailedError, match="503"),
            ):
                client.sql("SELECT 1")
            assert len(_Flaky.hits) == sends, (retry, len(_Flaky.hits))
