"""Fleet simulation: many tblog senders against one endpoint limited to 100 requests/s.

Each simulated process is a real ``tblog._delivery.sender.Sender`` (its own thread, connection pool
and pacing state) with one channel, fed at a steady rate.  The loopback server enforces
Tinybird's per-datasource limit with fixed one-second windows: it answers 429 with
``Retry-After`` once a window's budget is spent, and sends ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` on every answer, as Tinybird does.
The run is repeated with pacing switched off, to show what pacing is worth.

``python -m benchmarks.fleet [--senders 200] [--seconds 30]`` prints the figures; the share
of 429s is given over the whole run and over its steady state (after the first third).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

from benchmarks.sink import JSONHandler
from tblog._config import Options
from tblog._delivery import breaker as _breaker
from tblog._delivery import policy as _policy
from tblog._delivery.batch import line_size
from tblog._delivery.channel import Channel
from tblog._delivery.sender import Sender
from tblog._event.encode import dumps

TOKEN = "p.fleet-token-0123456789abcdef"


class LimitedAPI:
    """An Events API that accepts at most ``limit`` requests per one-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.window = math.floor(time.time())
        self.used = 0
        self.requests = 0
        self.limited = 0
        self.per_second: dict[int, list[int]] = {}  # window -> [requests, 429s]
        self.event_ids: list[str] = []
        self.latencies: list[float] = []
        api = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server names it so
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, answer = api.handle(self.headers.get("Content-Encoding"), body)
                self._answer(status, answer, headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 512
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def handle(self, encoding: str | None, body: bytes) -> tuple[int, dict[str, str], Any]:
        now = time.time()
        with self.lock:
            self.requests += 1
            window = math.floor(now)
            tally = self.per_second.setdefault(window, [0, 0])
            tally[0] += 1
            if window != self.window:
                self.window, self.used = window, 0
            reset = str(max(1, math.ceil(self.window + 1 - now)))
            if self.used >= self.limit:
                self.limited += 1
                tally[1] += 1
                headers = {
                    "Retry-After": reset, "X-RateLimit-Limit": str(self.limit),
                    "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset,
                }  # fmt: skip
                return 429, headers, {"error": "too many requests"}
            self.used += 1
            remaining = self.limit - self.used
        raw = gzip.decompress(body) if encoding == "gzip" else body
        rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
        with self.lock:
            for row in rows:
                self.event_ids.append(row["id"])
                self.latencies.append(now - row["t"])
        headers = {
            "X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": reset,
        }  # fmt: skip
        return 202, headers, {"successful_rows": len(rows), "quarantined_rows": 0}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def _pacing(enabled: bool) -> Iterator[None]:
    """``enabled=False``: no X-RateLimit holds and a fixed flush interval (a naive client)."""
    observe, adapt = _breaker.Pacer.observe, _policy.adapt_interval
    if not enabled:
        _breaker.Pacer.observe = lambda self, key, now, remaining, reset: False  # type: ignore[method-assign]
        _policy.adapt_interval = lambda interval, base, result: interval
    try:
        yield
    finally:
        _breaker.Pacer.observe = observe  # type: ignore[method-assign]
        _policy.adapt_interval = adapt


def run(
    senders: int = 200,
    limit_rps: int = 100,
    seconds: float = 10.0,
    rate: float = 20.0,
    *,
    pacing: bool = True,
) -> dict[str, float]:
    """``senders`` processes each logging ``rate`` events/s for ``seconds``; the figures."""
    api = LimitedAPI(limit_rps)
    options = Options(flush_interval=1.0, batch_size=500, shutdown_timeout=30.0)
    fleet: list[tuple[Sender, Channel]] = []
    with _pacing(pacing):
        for i in range(senders):
            sender = Sender()
            channel = Channel(
                sender, api_url=api.url, token=TOKEN, datasource="fleet", options=options,
                encode=dumps, label=f"sim-{i}",
            )  # fmt: skip
            fleet.append((sender, channel))
        logged = 0
        start = time.monotonic()
        tick = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            for n in range(tick, due):
                for i, (_, channel) in enumerate(fleet):
                    row = {"id": f"{i}-{n}", "t": time.time()}
                    channel.put(row, line_size(row))
                    logged += 1
            tick = due
            time.sleep(max(0.0, (tick / rate) - (time.monotonic() - start)))
        flushed_at = time.monotonic()
        for sender, _ in fleet:
            sender.flush(max(1.0, 60 - (time.monotonic() - flushed_at)))
        for sender, _ in fleet:
            sender.shutdown(0.5)
    api.close()
    ids = api.event_ids
    lat = sorted(api.latencies) or [0.0]
    windows = sorted(api.per_second)
    steady = windows[len(windows) // 3 : -3] or windows  # after the warm-up, before the end
    steady_requests = sum(api.per_second[w][0] for w in steady)
    steady_limited = sum(api.per_second[w][1] for w in steady)
    return {
        "senders": senders,
        "limit_rps": limit_rps,
        "seconds": seconds,
        "requests": api.requests,
        "requests_per_s": api.requests / max(seconds, 1e-9),
        "rate_limited": api.limited,
        "rate_limited_share": api.limited / max(1, api.requests),
        "steady_rate_limited_share": steady_limited / max(1, steady_requests),
        "logged": logged,
        "delivered": len(set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "lost": logged - len(set(ids)),
        "p50_latency_s": statistics.median(lat),
        "p99_latency_s": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def report(senders: int, seconds: float) -> str:
    rows = [
        ("tblog (pacing, adaptive batching)", run(senders, seconds=seconds, pacing=True)),
        ("naive (fixed 1 s batches)", run(senders, seconds=seconds, pacing=False)),
    ]
    lines = [
        f"### Fleet: {senders} senders, one datasource limited to 100 requests/s, "
        f"{seconds:g} s at 20 events/s each",
        "",
        "| client | requests | 429s | share 429 (all / steady) | logged | delivered "
        "| duplicates | lost | p50 / p99 latency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['requests']:,.0f} | {r['rate_limited']:,.0f} "
            f"| {r['rate_limited_share']:.1%} / {r['steady_rate_limited_share']:.1%} "
            f"| {r['logged']:,.0f} | {r['delivered']:,.0f} "
            f"| {r['duplicates']:,.0f} | {r['lost']:,.0f} "
            f"| {r['p50_latency_s']:.2f} s / {r['p99_latency_s']:.2f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet")
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(report(args.senders, args.seconds))


if __name__ == "__main__":
    main()
