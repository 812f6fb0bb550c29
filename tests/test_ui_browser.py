"""The web view (tblog.ui) in real headless Chromium, driven by Playwright, over a real
``tblog local`` (real chDB) fed by the real logging handler: load, filter, follow new rows
(each once, late ones included), open a trace, charts with their empty intervals, log text
shown as text, ``tblog ui`` against another origin, and a screenshot checked as a PNG.

Chromium is Debian's (``chromium`` on PATH, or ``$TBLOG_CHROMIUM``; ``make chromium``
installs it); Playwright only drives it (no ``playwright install``).
``TBLOG_UI_SCREENSHOT=docs/ui.png`` also saves the README's screenshot.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import tblog
import tblog.llm
from tests.cliutil import clean_env
from tests.localserver import serve, sql

try:  # both come with the test extra: missing, the suite must say so, not skip
    import chdb  # noqa: F401
    import playwright.sync_api as playwright_api
except ImportError as exc:  # pragma: no cover - an incomplete test venv
    pytest.fail(f"{exc.name} is missing: pip install -e '.[test]'", pytrace=False)

from tblog.local.server import LocalServer

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("TBLOG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 800}
WAIT = 30.0  # seconds any condition in the page may take


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def read_token(server: LocalServer) -> str:
    return server.create_token("ui reader", ["DATASOURCES:READ:tb_logs", "DATASOURCES:READ:traces"])


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no {CHROMIUM}: run `make chromium` (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies, no storage) and its page; page errors fail."""
    context = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(WAIT * 1000)
    try:
        yield opened
    finally:
        context.close()
    assert errors == []


class Shipper:
    """A logger of its own app, shipping through the real handler to the local server."""

    def __init__(self, server: LocalServer) -> None:
        self.app = f"shop-{uuid.uuid4().hex[:6]}"
        self.handler = tblog.TinybirdLoggingHandler(server.url, server.admin_token, self.app)
        self.handler.setLevel(logging.DEBUG)
        self._loggers: list[logging.Logger] = []

    def logger(self, name: str) -> logging.Logger:
        log = logging.getLogger(f"shop.{name}")  # this app's handler until close()
        log.setLevel(logging.DEBUG)
        log.propagate = False
        if self.handler not in log.handlers:
            log.addHandler(self.handler)
            self._loggers.append(log)
        return log

    def at(self, name: str, level: int, message: str, created: float) -> None:
        """A record logged as if at ``created`` (epoch seconds)."""
        log = logging.getLogger(f"shop.{name}")
        record = log.makeRecord(log.name, level, __file__, 1, message, (), None)
        record.created = created
        record.msecs = (created % 1) * 1000
        self.handler.handle(record)

    def flush(self) -> None:
        assert self.handler.flush(timeout=30)
        stats = self.handler.stats()
        assert stats["dropped_total"] == 0 and stats["sent"] == stats["enqueued"], stats

    def close(self) -> None:
        for log in self._loggers:
            log.removeHandler(self.handler)
        self.handler.close()


@pytest.fixture
def ship(server: LocalServer) -> Iterator[Shipper]:
    shipper = Shipper(server)
    try:
        yield shipper
    finally:
        shipper.close()


def wait_for(page: Any, expression: str, what: str) -> Any:
    """Poll ``expression`` (evaluated in the page) until it is truthy; its value."""
    deadline = time.monotonic() + WAIT
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            status = page.evaluate("document.getElementById('status').textContent")
            raise AssertionError(f"timed out waiting for {what}: {expression} ({status!r})")
        page.wait_for_timeout(50)


def done(page: Any, what: str) -> int:
    return int(page.evaluate(f"window.tblogUI.done.{what}"))


def connect(page: Any, url: str, token: str) -> None:
    """Open the page of ``url`` and give it ``token`` as a user does."""
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("#connect-btn")
    wait_for(page, "window.tblogUI.done.live > 0", "the first load")


def apply_filters(page: Any, **values: str) -> None:
    """Fill the filter bar (app, level, logger, text, trace) and wait for the new load."""
    before = done(page, "live")
    for name in ("app", "logger", "text", "trace"):
        page.fill(f"#f-{name}", values.get(name, ""))
    page.select_option("#f-level", values.get("level", ""))
    page.click("#apply")
    wait_for(page, f"window.tblogUI.done.live > {before}", "the filtered load")


def live_messages(page: Any) -> list[str]:
    texts: list[str] = page.locator("#logs tbody tr.log-row td.msg").all_text_contents()
    return texts


def polls_after(page: Any, count: int) -> None:
    """Wait until ``count`` more polls of the live view have finished."""
    target = done(page, "poll") + count
    wait_for(page, f"window.tblogUI.done.poll >= {target}", f"{count} polls")


# -- PNG ------------------------------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct pixel values of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        assert (
            zlib.crc32(kind + chunk)
            == struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        )
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colors: set[bytes] = set()
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + a) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + b) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 0xFF
        if y % 8 == 0:  # every 8th line is plenty to tell a drawn page from a blank one
            colors.update(bytes(row[x : x + 3]) for x in range(0, stride, bpp))
        prev = row
    return width, height, colors


# -- the page as served ---------------------------------------------------------------


def test_the_page_is_served_with_a_policy_that_runs_no_inline_script(server: LocalServer) -> None:
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "connect-src 'self';" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert '<script src="/ui/app.js"' in page.text
    script = requests.get(server.url + "/ui/app.js", timeout=10)
    assert script.headers["Content-Type"].startswith("text/javascript")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "localStorage", "setTimeout(\"", "srcdoc"):  # fmt: skip
        assert sink not in script.text, sink
    assert requests.get(server.url + "/ui/app.css", timeout=10).status_code == 200
    assert requests.get(server.url + "/ui/config", timeout=10).json() == {}
    assert requests.get(server.url + "/ui/nothing", timeout=10).status_code == 404
    # a browser's preflight for another origin the server allows names that origin
    server.allowed_origins.add("http://127.0.0.1:1")
    try:
        preflight = requests.options(server.url + "/v0/sql", timeout=10, headers={
            "Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})  # fmt: skip
    finally:
        server.allowed_origins.discard("http://127.0.0.1:1")
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:1"
    # the page needs no token, but the API still does
    assert (
        requests.get(server.url + "/v0/sql", params={"q": "SELECT 1"}, timeout=10).status_code
        == 403
    )


def test_connect_pressed_before_the_config_arrives_connects_and_never_reloads(
    server: LocalServer, read_token: str, page: Any, ship: Shipper
) -> None:
    # the page fetches /ui/config when its DOM is ready and goto() returns at "load", which
    # can come first: a press in that gap must connect, not submit the form natively (which
    # lost the press and the token; seen once in CI as "enter a read token")
    ship.logger("early").info("pressed early")
    ship.flush()
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    page.route("**/ui/config", hold)
    page.goto(server.url + "/")
    wait_for_held = time.monotonic() + WAIT
    while not held:
        assert time.monotonic() < wait_for_held, "the page never asked for /ui/config"
        page.wait_for_timeout(20)
    page.fill("#token", read_token)
    page.click("#connect-btn", no_wait_after=True)  # a native submit is what is under test
    page.wait_for_timeout(200)  # room for one to happen before the config is let through
    assert len(held) == 1
    held[0].continue_()
    page.unroute("**/ui/config")
    wait_for(page, "window.tblogUI.done.live > 0", "the first load")
    apply_filters(page, app=ship.app)
    assert live_messages(page) == ["pressed early"]
    assert page.input_value("#token") == ""


# -- live tail ------------------------------------------------------------------------


def test_live_view_filters_and_follows_new_rows_once(
    server: LocalServer, read_token: str, page: Any, ship: Shipper
) -> None:
    now = time.time()
    ship.at("api", logging.INFO, "GET /orders 200", now - 5)
    ship.at("api", logging.ERROR, "GET /orders 500 needle", now - 4)
    ship.at("db", logging.WARNING, "slow query NEEDLE", now - 3)
    ship.at("db", logging.DEBUG, "pool size 4", now - 2)
    other = Shipper(server)
    try:
        other.at("api", logging.ERROR, "another app's needle", now - 1)
        other.flush()
    finally:
        other.close()
    ship.flush()

    connect(page, server.url, read_token)
    apply_filters(page, app=ship.app)
    assert live_messages(page) == [
        "pool size 4", "slow query NEEDLE", "GET /orders 500 needle", "GET /orders 200",
    ]  # fmt: skip
    apply_filters(page, app=ship.app, level="ERROR")
    assert live_messages(page) == ["GET /orders 500 needle"]
    apply_filters(page, app=ship.app, level="min:30")
    assert live_messages(page) == ["slow query NEEDLE", "GET /orders 500 needle"]
    apply_filters(page, app=ship.app, text="needle")  # case-insensitive, as tblog query -q
    assert live_messages(page) == ["slow query NEEDLE", "GET /orders 500 needle"]
    apply_filters(page, app=ship.app, logger="shop.db")
    assert live_messages(page) == ["pool size 4", "slow query NEEDLE"]
    apply_filters(page, text="needle")
    assert "another app's needle" in live_messages(page)

    # follow: a new row shows up once, however many polls read it (the look-back re-reads)
    apply_filters(page, app=ship.app)
    polls_after(page, 1)
    fresh = time.time()
    ship.at("api", logging.CRITICAL, "fresh row", fresh)
    ship.flush()
    wait_for(page, "[...document.querySelectorAll('#logs td.msg')].some(td => "
                   "td.textContent === 'fresh row')", "the new row")  # fmt: skip
    polls_after(page, 3)
    assert live_messages(page).count("fresh row") == 1
    assert live_messages(page)[0] == "fresh row"
    # a row that arrives late (its time is before the newest shown) is not lost, and lands
    # in time order
    ship.at("api", logging.INFO, "late row", fresh - 0.5)
    ship.flush()
    wait_for(page, "[...document.querySelectorAll('#logs td.msg')].some(td => "
                   "td.textContent === 'late row')", "the late row")  # fmt: skip
    polls_after(page, 3)
    messages = live_messages(page)
    assert messages.count("late row") == 1 and messages.count("fresh row") == 1
    assert messages.index("fresh row") < messages.index("late row") < messages.index("pool size 4")
    # a row the filter does not take never shows
    other = Shipper(server)
    try:
        other.at("api", logging.INFO, "other app, new", time.time())
        other.flush()
    finally:
        other.close()
    polls_after(page, 3)
    assert "other app, new" not in live_messages(page)
    # the token never reaches a URL or lasting storage
    assert read_token not in page.url
    assert page.evaluate("window.localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    assert page.input_value("#token") == ""


def test_live_view_follows_a_burst_page_by_page_and_keeps_the_newest(
    server: LocalServer, read_token: str, page: Any, ship: Shipper
) -> None:
    connect(page, server.url, read_token)
    apply_filters(page, app=ship.app)
    assert live_messages(page) == []
    polls_after(page, 1)
    received = page.evaluate("window.tblogUI.done.rows")
    start = time.time()
    for i in range(1234):  # more than two pages of the tail's queries (500 rows)
        ship.at("worker", logging.INFO, f"job {i}", start + i / 1000)
    ship.flush()
    wait_for(page, f"window.tblogUI.done.rows >= {received + 1234}", "the burst")
    polls_after(page, 2)
    assert page.evaluate("window.tblogUI.done.rows") == received + 1234  # each row once
    shown = live_messages(page)
    assert shown == [f"job {i}" for i in range(1233, 233, -1)]  # the newest 1000, in order


# -- trace view -----------------------------------------------------------------------


def test_trace_view_orders_rows_with_durations_and_llm_calls(
    server: LocalServer, read_token: str, page: Any, ship: Shipper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    tenant_token = server.create_token("acme traces", ["DATASOURCES:APPEND:traces"],
                                       row_filter="tenant_id = 'acme'")  # fmt: skip
    recorder = tblog.llm.TraceRecorder({"acme": tenant_token}, api_url=server.url)
    ticks = iter([100.0, 100.05, 100.25])  # enter, first chunk, exit: 250 ms, 50 ms to first
    monkeypatch.setattr(tblog.llm, "_clock", lambda: next(ticks))
    try:
        with tblog.trace() as current:
            trace_id = current.trace_id
            # the log rows a second either side of the call (its time has milliseconds only)
            ship.at("agent", logging.INFO, "question received", time.time() - 1)
            with recorder.span("what is 2+2?", tenant_id="acme", model="gpt-4o") as span:
                span.chunk("4")
                span.set_response(tokens_prompt=12, tokens_completion=3)
            ship.at("agent", logging.WARNING, "answer sent", time.time() + 1)
        assert recorder.flush(timeout=30)
    finally:
        recorder.close()
    ship.flush()

    connect(page, server.url, read_token)
    apply_filters(page, app=ship.app)
    before = done(page, "trace")
    page.locator(f"#logs button.trace-link[data-trace-id='{trace_id}']").first.click()
    wait_for(page, f"window.tblogUI.done.trace > {before}", "the trace")
    assert not page.locator("#tab-trace").is_hidden()
    assert page.input_value("#trace-id") == trace_id
    rows = page.locator("#trace tbody tr")
    assert rows.count() == 3
    kinds = [rows.nth(i).get_attribute("data-kind") for i in range(3)]
    assert kinds == ["log", "llm", "log"]
    messages = page.locator("#trace tbody td.msg").all_text_contents()
    assert messages == ["shop.agent: question received", "what is 2+2?",
                        "shop.agent: answer sent"]  # fmt: skip
    # durations are those of the stored times (microseconds), from the start and between rows
    times = sorted(
        int(row["us"])
        for table in ("tb_logs", "traces")
        for row in sql(server, "SELECT toUnixTimestamp64Micro(timestamp) AS us FROM "
                               f"{table} WHERE trace_id = '{trace_id}'").json()["data"]
    )  # fmt: skip
    assert len(times) == 3
    offsets = [int(v) for v in page.locator("#trace td.offset").evaluate_all(
        "cells => cells.map(c => c.dataset.us)")]  # fmt: skip
    deltas = [int(v) for v in page.locator("#trace td.delta").evaluate_all(
        "cells => cells.map(c => c.dataset.us)")]  # fmt: skip
    assert offsets == [t - times[0] for t in times]
    assert deltas == [0, times[1] - times[0], times[2] - times[1]]
    shown = page.locator("#trace td.delta").all_text_contents()
    assert shown[0] == "+0.000 ms"
    for text, us in zip(shown, deltas, strict=True):
        value = float(text[1:].split()[0]) * (1000 if text.endswith(" ms") else 1_000_000)
        assert abs(value - us) <= max(us * 0.001, 1), (text, us)
    assert page.locator("#trace td.tokens").all_text_contents() == ["15 (12 in, 3 out)"]
    assert page.locator("#trace td.latency").all_text_contents() == ["250 ms (first byte 50 ms)"]
    assert page.locator("#trace td.model").all_text_contents() == ["gpt-4o"]
    assert "2 log rows, 1 LLM calls" in page.inner_text("#trace-summary")
    assert "15 tokens" in page.inner_text("#trace-summary")


# -- charts ---------------------------------------------------------------------------


def test_charts_show_every_interval_of_the_range_empty_ones_included(
    server: LocalServer, read_token: str, page: Any, ship: Shipper
) -> None:
    base = (int(time.time()) // 300) * 300 - 3600  # a 5-minute boundary, an hour ago
    ship.at("api", logging.INFO, "a", base + 10)
    ship.at("api", logging.ERROR, "b", base + 20)
    ship.at("api", logging.INFO, "c", base + 21)
    ship.at("db", logging.WARNING, "d", base + 185)
    ship.at("db", logging.CRITICAL, "e", base + 299.5)
    ship.at("db", logging.INFO, "outside the range", base + 300)
    ship.flush()

    connect(page, server.url, read_token)
    apply_filters(page, app=ship.app)
    page.click("nav button[data-tab=charts]")
    wait_for(page, "window.tblogUI.done.charts > 0", "the default charts")
    page.select_option("#c-range", "custom")
    iso = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base))
    page.fill("#c-from", iso)
    page.fill("#c-to", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + 300)))
    page.select_option("#c-step", "30")
    before = done(page, "charts")
    page.click("#draw")
    wait_for(page, f"window.tblogUI.done.charts > {before}", "the charts")

    buckets = page.locator("#chart-levels g.bucket")
    assert buckets.count() == 10  # 5 minutes of 30 s, the 7 empty ones included
    totals = buckets.evaluate_all("gs => gs.map(g => Number(g.dataset.total))")
    assert totals == [3, 0, 0, 0, 0, 0, 1, 0, 0, 1]
    starts = buckets.evaluate_all("gs => gs.map(g => Number(g.dataset.start))")
    assert starts == [(base + 30 * i) * 1_000_000 for i in range(10)]
    first = buckets.nth(0).locator("rect")
    assert first.evaluate_all("rs => rs.map(r => [r.dataset.level, r.dataset.n])") == [
        ["INFO", "2"], ["ERROR", "1"],
    ]  # fmt: skip
    assert buckets.nth(1).locator("rect").count() == 0
    rates = page.locator("#chart-errors circle.rate-point").evaluate_all(
        "cs => cs.map(c => c.dataset.rate)"
    )
    assert rates == ["0.3333", *["0.0000"] * 5, "0.0000", "0.0000", "0.0000", "1.0000"]
    summary = page.inner_text("#chart-summary")
    assert summary.startswith("5 events, 2 errors (40.0%) in 10 intervals of 30 s"), summary
    tops = page.locator("#top-loggers g.top text.label").all_text_contents()
    assert tops == ["shop.api", "shop.db"]
    assert page.locator("#top-loggers g.top").evaluate_all(
        "gs => gs.map(g => Number(g.dataset.n))"
    ) == [3, 2]
    assert page.locator("#top-apps g.top text.label").all_text_contents() == [ship.app]


# -- hostile log text -----------------------------------------------------------------


def test_log_text_is_shown_as_text_and_runs_nothing(
    server: LocalServer, read_token: str, browser: Any, ship: Shipper
) -> None:
    # bypass_csp: the page's own escaping is under test, not the CSP that backs it up
    context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(WAIT * 1000)
    try:
        attack = '<img src=x onerror="window.__xss=1">'
        svg_attack = "<svg onload=window.__xss=2>"
        with tblog.trace() as current:
            trace_id = current.trace_id
            ship.logger(svg_attack).error(attack)
        ship.flush()
        connect(page, server.url, read_token)
        apply_filters(page, app=ship.app)
        assert live_messages(page) == [attack]
        before = done(page, "trace")
        page.locator("#logs button.trace-link").first.click()
        wait_for(page, f"window.tblogUI.done.trace > {before}", "the trace")
        assert page.locator("#trace td.msg").all_text_contents() == [f"shop.{svg_attack}: {attack}"]
        assert trace_id
        page.click("nav button[data-tab=charts]")
        wait_for(page, "window.tblogUI.done.charts > 0", "the charts")
        assert page.locator("#top-loggers text.label").all_text_contents() == [
            f"shop.{svg_attack}"[:25] + "…"
        ]
        page.click("nav button[data-tab=live]")
        page.locator("#logs tr.log-row").first.click()  # the details row
        assert attack in page.inner_text("#logs tr.details")
        assert page.locator("img").count() == 0
        assert page.locator("svg svg").count() == 0
        assert page.evaluate("window.__xss") is None
    finally:
        context.close()


# -- tblog ui: the page for another origin's API --------------------------------------


def _start_ui(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tblog", "ui", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    line = proc.stdout.readline() if ready else ""
    m = re.search(r"open (http://127\.0\.0\.1:\d+)/", line)
    if not m:
        proc.kill()
        raise AssertionError(f"tblog ui did not start: {line!r} {_stop(proc)!r}")
    return proc, m.group(1)


def _stop(proc: subprocess.Popen[str]) -> str:
    """Stop ``tblog ui``; what it printed after its first line (its output is small: the
    pipes hold it, and reading them through their buffers keeps what readline took in)."""
    proc.terminate()
    proc.wait(timeout=WAIT)
    assert proc.stdout is not None and proc.stderr is not None
    with proc.stdout, proc.stderr:
        return proc.stdout.read() + proc.stderr.read()


def test_tblog_ui_reads_another_origin_with_the_token_given_once(
    server: LocalServer, read_token: str, page: Any, ship: Shipper
) -> None:
    ship.at("api", logging.INFO, "seen through tblog ui", time.time())
    ship.flush()
    proc, url = _start_ui("--host", server.url, "--token", read_token)
    server.allowed_origins.add(url)  # as `tblog local --allowed-origin URL`
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(url + "/")  # no token typed: the server hands it to this page
        wait_for(page, "window.tblogUI.done.live > 0", "the first load")
        apply_filters(page, app=ship.app)
        assert live_messages(page) == ["seen through tblog ui"]
        assert any(u.startswith(server.url + "/v0/sql?") for u in requested)
        assert not any(read_token in u for u in requested)
        assert page.evaluate("window.localStorage.length") == 0
        # once handed out, the token is not given again
        again = requests.get(url + "/ui/config", timeout=10).json()
        assert again == {"api": server.url, "logs": "tb_logs", "traces": "traces"}
        # a reload keeps it in this tab's session only
        page.reload()
        wait_for(page, "window.tblogUI.done.live > 0", "the load after a reload")
        # the page's policy lets it call that API only
        csp = requests.get(url + "/", timeout=10).headers["Content-Security-Policy"]
        assert f"connect-src 'self' {server.url};" in csp
        # DNS rebinding and other origins are refused
        assert (
            requests.get(url + "/", headers={"Host": "evil.example"}, timeout=10).status_code == 421
        )
        other = requests.get(
            url + "/ui/config", headers={"Origin": "http://evil.example"}, timeout=10
        )
        assert other.status_code == 403
    finally:
        server.allowed_origins.discard(url)
        output = _stop(proc)
    assert read_token not in output


def test_tblog_ui_without_a_token_asks_for_one(server: LocalServer, page: Any) -> None:
    proc, url = _start_ui("--host", "https://api.tinybird.co")
    try:
        assert requests.get(url + "/ui/config", timeout=10).json() == {
            "api": "https://api.tinybird.co",
            "logs": "tb_logs",
            "traces": "traces",
        }
        page.goto(url + "/")
        wait_for(page, "document.getElementById('status').textContent.includes('token')",
                 "the token prompt")  # fmt: skip
        assert page.locator("#status.error").count() == 1
        assert page.inner_text("#api-label") == "https://api.tinybird.co"
    finally:
        output = _stop(proc)
    assert "the page asks for one" in output


# -- screenshot -----------------------------------------------------------------------


def test_screenshot_is_a_drawn_png_of_the_viewport(
    server: LocalServer, read_token: str, page: Any, ship: Shipper, tmp_path: Path
) -> None:
    now = time.time()
    work = [  # (logger, level, message): an hour of a small shop's logs
        ("http", logging.INFO, "GET /api/orders/{n} 200 in {ms} ms"),
        ("http", logging.INFO, "POST /api/cart 201 in {ms} ms"),
        ("db", logging.DEBUG, "pool: 4 busy, 12 idle"),
        ("cache", logging.DEBUG, "miss for user:{n}"),
        ("http", logging.INFO, "GET /api/products?page={n} 200 in {ms} ms"),
        ("worker", logging.INFO, "sent receipt for order {n}"),
        ("db", logging.WARNING, "slow query on orders: {ms}0 ms"),
        ("http", logging.INFO, "GET /health 200 in 1 ms"),
        ("payments", logging.INFO, "authorized order {n}"),
        ("payments", logging.ERROR, "card declined for order {n}"),
    ]
    for i in range(240):
        name, level, text = work[(i * 7) % len(work)]
        created = now - 3500 + i * 14 + (i % 3)
        if i % 40 == 39:  # a burst of errors, now and then
            name, level, text = "payments", logging.ERROR, "gateway timeout for order {n}"
        with tblog.trace():
            ship.at(name, level, text.format(n=1000 + i, ms=5 + i * 37 % 90), created)
    with tblog.trace():
        ship.at("http", logging.INFO, "POST /api/checkout 200 in 412 ms", now - 1)
        try:
            raise TimeoutError("payment gateway did not answer in 10 s")
        except TimeoutError:
            ship.logger("payments").exception("checkout failed for order 1240")
    ship.flush()
    connect(page, server.url, read_token)
    apply_filters(page, app=ship.app)
    page.click("nav button[data-tab=charts]")
    wait_for(page, "window.tblogUI.done.charts > 0", "the charts")
    path = tmp_path / "ui.png"
    page.screenshot(path=str(path))
    width, height, colors = png_pixels(path.read_bytes())
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(colors) > 20  # bars, text and lines, not a blank page
    level_colors = {b"\xd9\x45\x3b", b"\x3b\x82\xc4"}  # ERROR and INFO bars (app.css)
    assert level_colors <= colors
    saved = os.environ.get("TBLOG_UI_SCREENSHOT")
    if saved:  # the README's picture: the live view over the same rows
        page.click("nav button[data-tab=live]")
        page.screenshot(path=saved)
        page.click("nav button[data-tab=charts]")
        page.screenshot(path=saved.replace(".png", "-charts.png"))
