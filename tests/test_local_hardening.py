"""``tblog local`` under hostile input: tenant filters on every appended row, bounded
memory per request, strict Content-Length, socket timeouts and a connection cap, and
Host/Origin checks against DNS rebinding.  Real server, real chDB, raw sockets on loopback.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tblog.local.server import LocalServer
from tests.localserver import event, ndjson, post, scalar, serve, sql

TENANT_FILTER = "JSONExtractString(extra, 'tenant_id') = 'acme'"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("hardening"))


def _app() -> str:
    return f"h-{os.urandom(4).hex()}"


def _count(server: LocalServer, where: str, table: str = "tb_logs") -> int:
    return int(scalar(server, f"SELECT count() FROM {table} WHERE {where}"))


def _tenant_token(server: LocalServer) -> str:
    return server.create_token("tenant", ["DATASOURCES:APPEND:tb_logs"], row_filter=TENANT_FILTER)


def _raw(
    server: LocalServer, request: bytes, timeout: float = 10.0, idle: float | None = None
) -> bytes:
    """Send ``request`` on a new connection; everything the server answers until it closes
    (or, with ``idle``, until it has sent nothing for that long: a kept-alive connection)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        if idle is not None:
            sock.settimeout(idle)
        out = b""
        with contextlib.suppress(ConnectionResetError if idle is None else OSError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _json_body(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


# -- item 2: every appended row passes the token's filter --------------------------------


def test_a_row_too_big_for_a_query_is_still_filtered(server: LocalServer) -> None:
    """A row larger than ClickHouse's max_query_size (256 KiB) must not skip the filter."""
    app, token = _app(), _tenant_token(server)
    big = "x" * (400 * 1024)
    r = post(
        server, ndjson(event(app_name=app, message=big, extra={"tenant_id": "globex"})), token=token
    )
    assert r.status_code == 403, r.text
    assert r.json()["rejected_rows"] == 1
    assert r.json()["successful_rows"] == 0
    r = post(
        server, ndjson(event(app_name=app, message=big, extra={"tenant_id": "acme"})), token=token
    )
    assert r.status_code == 200, r.text
    assert r.json()["successful_rows"] == 1
    assert _count(server, f"app_name = '{app}'") == 1
    assert _count(server, f"app_name = '{app}'", "tb_logs_quarantine") == 0


def test_rows_that_fail_typing_pass_the_filter_before_quarantine(server: LocalServer) -> None:
    app, token = _app(), _tenant_token(server)
    body = (
        ndjson(
            event(app_name=app, level_no="x", extra={"tenant_id": "acme"}),  # typing, mine
            event(app_name=app, level_no="x", extra={"tenant_id": "globex"}),  # typing, theirs
            event(app_name=app, timestamp="2026-02-30", extra={"tenant_id": "acme"}),  # ClickHouse
            event(app_name=app, timestamp="2026-02-30", extra={"tenant_id": "globex"}),
            event(app_name=app, extra={"tenant_id": "acme"}),  # fits, mine
        )
        + b'{"not json\n[1, 2]\n'
    )  # no values to judge: refused
    r = post(server, body, token=token)
    answer = r.json()
    assert r.status_code == 422, answer
    assert answer["successful_rows"] == 1
    assert answer["quarantined_rows"] == 2
    assert answer["rejected_rows"] == 4
    assert _count(server, f"app_name = '{app}'") == 1
    r = sql(server, f"SELECT extra FROM tb_logs_quarantine WHERE app_name = '{app}'")
    quarantined = r.json()["data"]
    assert len(quarantined) == 2, r.text
    assert all("acme" in q["extra"] for q in quarantined)
    assert _count(server, "c__raw LIKE '%not json%'", "tb_logs_quarantine") == 0
    assert _count(server, "c__raw LIKE '[1,%'", "tb_logs_quarantine") == 0


def test_rejections_never_echo_the_filter(server: LocalServer) -> None:
    token = _tenant_token(server)
    r = post(server, ndjson(event(app_name=_app(), extra={"tenant_id": "globex"})), token=token)
    assert r.status_code == 403
    assert r.json()["rejected_rows"] == 1
    assert "tenant_id" not in r.text
    assert "acme" not in r.text


def test_every_member_of_a_multi_member_gzip_body_is_read(server: LocalServer) -> None:
    app = _app()
    body = gzip.compress(ndjson(event(app_name=app))) + gzip.compress(ndjson(event(app_name=app)))
    r = post(server, body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["successful_rows"] == 2
    assert _count(server, f"app_name = '{app}'") == 2


# -- item 6: listings, Host and Origin ---------------------------------------------------


def test_datasources_listing_counts_only_the_tokens_rows(server: LocalServer) -> None:
    app = _app()
    post(
        server,
        ndjson(
            event(app_name=app, extra={"tenant_id": "acme"}),
            *[event(app_name=app, extra={"tenant_id": "globex"})] * 3,
            event(app_name=app, level_no="x", extra={"tenant_id": "globex"}),
        ),
    )
    token = server.create_token("reader", ["DATASOURCES:READ:tb_logs"], row_filter=TENANT_FILTER)
    r = requests.get(f"{server.url}/v0/datasources", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    listed = {d["name"]: d for d in r.json()["datasources"]}["tb_logs"]
    mine = _count(server, TENANT_FILTER)
    assert mine < _count(server, "1")
    assert listed["statistics"]["row_count"] == mine
    assert listed["quarantine_rows"] == _count(server, TENANT_FILTER, "tb_logs_quarantine")
    assert "tenant_id" not in r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7181", "127.0.0.1.evil.example"])
def test_foreign_host_headers_are_refused(server: LocalServer, host: str) -> None:
    for path in ("/v0/datasources", "/v0/sql?q=SELECT+1"):
        r = requests.get(
            f"{server.url}{path}",
            headers={"Host": host, "Authorization": f"Bearer {server.admin_token}"},
        )
        assert r.status_code == 421, (host, r.text)
        assert "error" in r.json()
    r = post(server, ndjson(event()), headers={"Host": host})
    assert r.status_code == 421


def test_loopback_and_allowed_hosts_are_served(server: LocalServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    for host in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}", f"[::1]:{port}"):
        r = requests.get(f"{server.url}/v0/datasources", headers={"Host": host, **auth})
        assert r.status_code == 200, host
    r = requests.get(f"{server.url}/v0/datasources", headers={"Host": "logs.internal", **auth})
    assert r.status_code == 421
    server.allowed_hosts.add("logs.internal")
    try:
        r = requests.get(
            f"{server.url}/v0/datasources", headers={"Host": f"logs.internal:{port}", **auth}
        )
        assert r.status_code == 200
    finally:
        server.allowed_hosts.discard("logs.internal")


def test_cross_origin_requests_are_refused(server: LocalServer) -> None:
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    r = requests.get(
        f"{server.url}/v0/datasources", headers={"Origin": "http://evil.example", **auth}
    )
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers
    r = post(server, ndjson(event()), headers={"Origin": "null"})
    assert r.status_code == 403
    server.allowed_origins.add("http://dashboard.local:3000")
    try:
        r = requests.get(
            f"{server.url}/v0/datasources",
            headers={"Origin": "http://dashboard.local:3000", **auth},
        )
        assert r.status_code == 200
    finally:
        server.allowed_origins.discard("http://dashboard.local:3000")


def test_preflight_is_answered_for_allowed_origins_only(server: LocalServer) -> None:
    preflight = {"Origin": "http://dash.local", "Access-Control-Request-Method": "POST"}
    r = requests.options(f"{server.url}/v0/events", headers=preflight)
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers
    server.allowed_origins.add("http://dash.local")
    try:
        r = requests.options(f"{server.url}/v0/events", headers=preflight)
        assert r.status_code == 204
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        r = requests.options(
            f"{server.url}/v0/events", headers={"Host": "evil.example", **preflight}
        )
        assert r.status_code == 421
    finally:
        server.allowed_origins.discard("http://dash.local")


# -- item 5: Content-Length, timeouts, connection cap ------------------------------------


def _request(server: LocalServer, method: str, path: str, headers: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {server.admin_token}\r\n{headers}\r\n"
    ).encode() + body


@pytest.mark.parametrize("path", ["/v0/sql", "/v0/tokens", "/v0/events?name=tb_logs"])
@pytest.mark.parametrize(
    ("length", "status"),
    [("-1", 400), ("abc", 400), ("1e3", 400), ("+5", 400), (str(64 * 1024 * 1024), 413)],
)
def test_bad_content_length_is_refused_with_json(
    server: LocalServer, path: str, length: str, status: int
) -> None:
    response = _raw(
        server,
        _request(server, "POST", path, f"Content-Length: {length}\r\n", b"q=SELECT 1"),
        timeout=10,
    )
    assert _status(response) == status, response[:300]
    assert "error" in _json_body(response)


def test_chunked_bodies_are_refused_with_411(server: LocalServer) -> None:
    body = b"5\r\n{}\n\n\r\n0\r\n\r\n"
    response = _raw(
        server,
        _request(server, "POST", "/v0/events?name=tb_logs", "Transfer-Encoding: chunked\r\n", body),
    )
    assert _status(response) == 411
    assert "error" in _json_body(response)


@pytest.fixture
def short_timeouts(server: LocalServer) -> Iterator[LocalServer]:
    timeout, cap = server.timeout, server.max_connections
    server.timeout = 0.5
    try:
        yield server
    finally:
        server.timeout, server.max_connections = timeout, cap


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (sending ``trickle`` a byte at
    a time meanwhile, as a slowloris client does)."""
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            try:
                while sock.recv(65536):  # a 408 answer, then the close
                    pass
            except OSError:
                pass
            return True
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
            except OSError:
                return True
            sent += 1
    return False


def test_slowloris_is_disconnected_after_the_timeout(short_timeouts: LocalServer) -> None:
    server = short_timeouts
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    headers = _request(server, "POST", "/v0/events?name=tb_logs", "X-Pad: " + "a" * 500 + "\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        assert _closed_within(sock, 10, trickle=headers)
        assert time.monotonic() - started < 5


def test_a_body_trickled_too_slowly_gets_408(short_timeouts: LocalServer) -> None:
    server = short_timeouts
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = _request(server, "POST", "/v0/events?name=tb_logs", "Content-Length: 1000\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"{")
        sock.settimeout(5)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert _status(answer) == 408, answer[:200]


def test_idle_connections_are_closed_and_capped(short_timeouts: LocalServer) -> None:
    server = short_timeouts
    server.max_connections = 3
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
    try:
        # The fourth is over the cap: a quick 503, not a wait for a thread.
        started = time.monotonic()
        r = requests.get(
            f"{server.url}/v0/datasources",
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=10,
        )
        assert r.status_code == 503, r.text
        assert "Retry-After" in r.headers
        assert time.monotonic() - started < 3
        # The idle ones are dropped after the timeout, and the server serves again.
        assert all(_closed_within(sock, 10) for sock in idle)
        deadline = time.monotonic() + 10
        while True:
            r = requests.get(
                f"{server.url}/v0/datasources",
                headers={"Authorization": f"Bearer {server.admin_token}"},
                timeout=10,
            )
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        assert r.status_code == 200
    finally:
        for sock in idle:
            sock.close()


# -- item 3: bounded memory per request ---------------------------------------------------

_SERVE = """
import json, sys
from tblog.local.server import LocalServer
server = LocalServer(sys.argv[1], port=0).start()
print(json.dumps({"url": server.url, "token": server.admin_token}), flush=True)
sys.stdin.read()
server.close()
"""


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _memory_growth(tmp_path: Path, body: bytes, gzipped: bool, bound_mib: int) -> tuple[int, int]:
    """(status, peak RSS growth in MiB) of a fresh server answering one request.

    A watchdog kills the server as soon as its RSS grows past ``bound_mib`` (then the
    growth reported is over the bound), so an unbounded server cannot take the machine.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        headers = {"Authorization": f"Bearer {info['token']}"}
        url = f"{info['url']}/v0/events?name=tb_logs&wait=true"
        warm = ndjson(event(), {"x": 1}) * 200  # the insert and quarantine paths, once
        assert requests.post(url, data=warm, headers=headers, timeout=60).status_code == 200
        before = _status_kib(proc.pid, "VmHWM")
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        answer: list[int] = []
        thread = threading.Thread(
            target=lambda: answer.append(
                requests.post(url, data=body, headers=headers, timeout=300).status_code
            )
        )
        thread.daemon = True
        thread.start()
        killed = False
        while thread.is_alive():
            if (_status_kib(proc.pid, "VmRSS") - before) // 1024 > bound_mib:
                proc.kill()
                killed = True
                break
            thread.join(0.02)
        thread.join(60)
        growth = bound_mib + 1 if killed else (_status_kib(proc.pid, "VmHWM") - before) // 1024
        return (answer[0] if answer else 0), growth
    finally:
        if proc.poll() is None:
            proc.communicate("", timeout=60)
        proc.wait(60)


_linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


@_linux_only
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_64_kib_of_empty_objects_costs_bounded_memory(tmp_path: Path) -> None:
    status, growth = _memory_growth(tmp_path, b"{}\n" * (64 * 1024 // 3), False, 200)
    assert status == 200, status
    assert growth < 200, f"{growth} MiB"


@_linux_only
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_gzip_bomb_costs_bounded_memory_and_gets_413(tmp_path: Path) -> None:
    decoded = 512 * 1024 * 1024  # 512 MiB of "{}" lines in a ~500 KiB body
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"{}\n" * (1024 * 1024 // 3)
    bomb = b"".join(comp.compress(block) for _ in range(decoded // len(block))) + comp.flush()
    assert len(bomb) < 1024 * 1024
    status, growth = _memory_growth(tmp_path, bomb, True, 200)
    assert status == 413
    assert growth < 200, f"{growth} MiB"


@_linux_only
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_small_gzip_bomb_under_the_cap_streams_in_bounded_memory(tmp_path: Path) -> None:
    """350k rows from a ~1 KiB body: ~8 KiB each before (3 GB), now a bounded amount.

    tblog's own share is ~20 MiB (a batch of rows at a time); the rest is chDB's, which
    grows little with the row count (its merges of the parts each batch writes).
    """
    bomb = gzip.compress(b"{}\n" * (1024 * 1024 // 3), 9)
    assert len(bomb) < 4 * 1024
    status, growth = _memory_growth(tmp_path, bomb, True, 400)
    assert status == 200  # every row quarantined (no typed row), none lost
    assert growth < 400, f"{growth} MiB"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_cli_passes_the_hardening_options(tmp_path: Path) -> None:
    token = "p.cli-hardening-token-0123456789"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tblog", "local", "--port", "0", "--data-dir", str(tmp_path),
         "--token", token, "--allowed-host", "logs.internal", "--allowed-origin",
         "http://dash.local", "--max-decoded-bytes", "4096", "--max-body-bytes", "65536",
         "--max-connections", "8", "--timeout", "5", "--max-line-bytes", "2048"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in first, first
        url = first.split("serving ", 1)[1].strip()
        auth = {"Authorization": f"Bearer {token}"}
        r = requests.get(f"{url}/v0/datasources", headers={"Host": "logs.internal", **auth})
        assert r.status_code == 200
        r = requests.get(f"{url}/v0/datasources", headers={"Origin": "http://dash.local", **auth})
        assert r.headers["Access-Control-Allow-Origin"] == "http://dash.local"
        events = f"{url}/v0/events?name=tb_logs&wait=true"
        bomb = gzip.compress(b"{}\n" * 2000)
        r = requests.post(events, data=bomb, headers={"Content-Encoding": "gzip", **auth})
        assert r.status_code == 413
        r = requests.post(events, data=b"x" * 70000, headers=auth)
        assert r.status_code == 413
        r = requests.post(events, data=ndjson(event(message="x" * 3000)), headers=auth)
        assert "exceeds the 2048-byte limit" in r.json()["error"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_the_embedded_clickhouse_has_a_memory_ceiling(server: LocalServer) -> None:
    # ClickHouse's own default is 90% of the machine; a local server takes half of it unless
    # told otherwise (--max-server-memory), whatever its queries and merges would like.
    # (One chDB engine per process: the module's server is the one to ask.)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert server.store.max_server_memory == max(1024**3, total // 2)
    setting = server.store._run(
        "SELECT value FROM system.server_settings WHERE name = 'max_server_memory_usage'"
    )
    assert setting.strip() == f'"{server.store.max_server_memory}"'.encode()


# -- review: failed reads, request smuggling, error tails, Host ---------------------------


def _leaky_query(app: str) -> str:
    """A read that fails after its output has begun (a value that cannot be typed)."""
    return (
        "SELECT message, toInt64(if(n.number > 300000, 'x', '1')) AS v "
        f"FROM tb_logs AS t, numbers(400000) AS n WHERE app_name = '{app}' FORMAT TSV"
    )


def test_a_failed_read_leaves_nothing_for_the_next_query(server: LocalServer) -> None:
    app = _app()
    post(server, ndjson(event(app_name=app, message="secret-of-b")))
    other = server.create_token("other-reader", ["DATASOURCES:READ:tb_logs"])
    r = sql(server, _leaky_query(app))
    assert r.status_code == 400, r.text[:300]
    r = sql(server, "SELECT 1 AS one FORMAT TSV", token=other)
    assert r.status_code == 200
    assert r.text == "1\n", r.text[:300]
    # A result over the row limit, likewise.
    limits = server.store.limits
    server.store.limits = type(limits)(max_result_rows=10)
    try:
        r = sql(server, "SELECT number FROM numbers(100000) FORMAT TSV")
        assert r.status_code == 400, r.text[:300]
    finally:
        server.store.limits = limits
    r = sql(server, "SELECT 1 AS one FORMAT TSV", token=other)
    assert r.text == "1\n", r.text[:300]


def test_a_failed_write_statement_leaves_nothing_for_the_next(server: LocalServer) -> None:
    store = server.store
    with store.lock, contextlib.suppress(Exception):
        store._run(
            "SELECT toInt64(if(number > 300000, 'x', '1')) FROM numbers(400000) FORMAT TSV",
            "TSV",
        )
    with store.lock:
        assert store._run("SELECT 1 FORMAT TSV", "TSV") == b"1\n"


def _responses(data: bytes) -> int:
    return data.count(b"HTTP/1.1 ")


def test_a_get_body_is_not_read_as_a_second_request(server: LocalServer) -> None:
    smuggled = (
        b"GET /v0/datasources HTTP/1.1\r\nHost: localhost\r\n"
        + f"Authorization: Bearer {server.admin_token}\r\n\r\n".encode()
    )
    request = _request(
        server, "GET", "/v0/sql?q=SELECT+1", f"Content-Length: {len(smuggled)}\r\n", smuggled
    )
    out = _raw(server, request, idle=2)
    assert _responses(out) == 1, out[:500]
    assert _status(out) == 200


def test_query_errors_do_not_reveal_scope_settings_or_filter(server: LocalServer) -> None:
    token = server.create_token(
        "tail-reader", ["DATASOURCES:READ:tb_logs"], row_filter=TENANT_FILTER
    )
    for q in (
        "SELECT toInt64(message) FROM tb_logs",
        "SELECT no_such_column FROM tb_logs",
        "SELECT toInt64(if(n.number > 300000, 'x', '1')) FROM tb_logs AS t, numbers(400000) AS n",
    ):
        post(server, ndjson(event(extra={"tenant_id": "acme"})))
        r = sql(server, q, token=token)
        assert r.status_code == 400, r.text[:300]
        for secret in ("In scope", "SETTINGS", "tenant_id", "acme", "tok_", "while executing"):
            assert secret not in r.text, (q, r.text)


def test_a_second_host_header_is_refused(server: LocalServer) -> None:
    request = _request(
        server, "GET", "/v0/datasources", "Host: evil.example\r\nConnection: close\r\n"
    )
    assert _status(_raw(server, request)) == 400


def test_an_absolute_form_target_must_match_the_host(server: LocalServer) -> None:
    for target in (
        "http://evil.example/v0/datasources",
        "http://evil.example:7181/v0/sql?q=SELECT+1",
    ):
        request = _request(server, "GET", target, "Connection: close\r\n")
        assert _status(_raw(server, request)) == 400, target


@pytest.mark.parametrize(
    ("method", "target", "host"),
    [("GET", "/v0/sql?q=SELECT+1", "localhost"), ("GET", "/v0/sql?q=SELECT+1", "evil.example"),
     ("GET", "/nowhere", "localhost"), ("OPTIONS", "/v0/events", "localhost"),
     ("POST", "/v0/sql?q=SELECT+1", "localhost")],
)  # fmt: skip
def test_an_unread_body_never_becomes_a_request(
    server: LocalServer, method: str, target: str, host: str
) -> None:
    smuggled = b"GET /v0/datasources HTTP/1.1\r\nHost: localhost\r\n\r\n"
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {server.admin_token}\r\nContent-Length: {len(smuggled)}\r\n\r\n"
    ).encode() + smuggled
    out = _raw(server, request, idle=2)
    assert _responses(out) == 1, out[:500]
