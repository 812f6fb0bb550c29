"""Is ``tblog local`` the bottleneck of ``tblog demo``?  Its ingest rate beside the handler's.

``measure(events)`` starts a local server (real chDB, temporary data dir) and times:

* ``server``: the server alone, fed pre-encoded gzip NDJSON batches of 500 rows (the
  handler's default batch) over keep-alive HTTP, as fast as one client can post;
* ``handler``: ``TinybirdLoggingHandler`` end to end into the same server (log calls
  from one thread, then ``flush()``), which includes the server's time.

* ``tail``: ``tblog tail --since 1h --once --json`` (a subprocess, as a user runs it)
  reading back the handler's rows: the rows per second it prints through a backlog.

When ``server`` is well above ``handler``, the server is not what limits the demo.
Run alone with ``python -m benchmarks.local_server [EVENTS]``; the benchmarks runner
can call ``measure`` and print the result beside its own numbers.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import requests

import tblog
from tblog.local.server import LocalServer

__all__ = ["measure"]

_ROW = {
    "timestamp": "2026-11-22T23:58:27.123456Z", "level": "INFO", "level_no": 20,
    "logger": "bench", "message": "GET /api/orders -> 200", "app_name": "bench",
    "environment": "bench", "hostname": "host", "process_id": 1234,
    "process_name": "MainProcess", "thread_id": 140000000000, "thread_name": "MainThread",
    "module": "bench", "func_name": "run", "lineno": 42, "pathname": "/app/bench.py",
    "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
    "event_id": "5f0e7c8a-1b2c-4d5e-8f90-123456789abc",
    "extra": {"tenant_id": "acme", "route": "/api/orders", "duration_ms": 12.5},
}  # fmt: skip
_BATCH = 500


def measure(events: int = 20_000) -> dict[str, Any]:
    """Rows per second of the server alone and of the handler into it."""
    with tempfile.TemporaryDirectory(prefix="tblog-bench-") as tmp:
        server = LocalServer(tmp, port=0).start()
        try:
            body = gzip.compress(("\n".join([json.dumps(_ROW)] * _BATCH)).encode(), 1)
            headers = {
                "Authorization": f"Bearer {server.admin_token}",
                "Content-Encoding": "gzip",
                "Content-Type": "application/x-ndjson",
            }
            batches = max(1, events // _BATCH)
            with requests.Session() as session:
                started = time.perf_counter()
                for _ in range(batches):
                    r = session.post(f"{server.url}/v0/events?name=tb_logs", data=body,
                                     headers=headers, timeout=60)  # fmt: skip
                    r.raise_for_status()
                server_rate = batches * _BATCH / (time.perf_counter() - started)
            handler = tblog.TinybirdLoggingHandler(
                server.url, server.admin_token, "bench", max_buffer_bytes=2**31
            )
            log = logging.getLogger("benchmarks.local_server")
            log.propagate = False
            log.setLevel(logging.INFO)
            log.addHandler(handler)
            try:
                started = time.perf_counter()
                for i in range(events):
                    log.info("GET /api/orders -> %d", 200, extra={"i": i})
                handler.flush(timeout=300)
                handler_rate = events / (time.perf_counter() - started)
                delivered = handler.stats()["sent"]
            finally:
                log.removeHandler(handler)
                handler.close()
            env = {**os.environ, "TB_HOST": server.url, "TB_TOKEN": server.admin_token}
            started = time.perf_counter()
            tail = subprocess.run(
                [sys.executable, "-m", "tblog", "tail", "--since", "1h", "--once", "--json"],
                env=env, capture_output=True, timeout=600, check=True,
            )  # fmt: skip
            tail_seconds = time.perf_counter() - started
            tail_rows = tail.stdout.count(b"\n")
        finally:
            server.close()
    return {
        "events": events,
        "server_rows_per_s": round(server_rate),
        "handler_rows_per_s": round(handler_rate),
        "handler_delivered": delivered,
        "tail_rows": tail_rows,
        "tail_rows_per_s": round(tail_rows / tail_seconds),
    }


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
    print(f"tblog local ingest (server alone): {result['server_rows_per_s']:>9,} rows/s")
    print(f"TinybirdLoggingHandler -> local:   {result['handler_rows_per_s']:>9,} rows/s "
          f"({result['handler_delivered']}/{result['events']} delivered)")  # fmt: skip
    print(f"tblog tail --once through them:    {result['tail_rows_per_s']:>9,} rows/s "
          f"({result['tail_rows']} rows, interpreter start included)")  # fmt: skip
