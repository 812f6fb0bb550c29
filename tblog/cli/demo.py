"""``tblog demo``: a local server, a realistic burst of logs through the handler, a summary.

Starts ``tblog local`` in-process on a free port over ``data_dir``, logs from several
threads through ``TinybirdLoggingHandler`` (traces, bound fields, ``extra=``, an
exception), flushes, queries the rows back through the SQL API and prints what
arrived.  The exit code is 1 when any event was lost or quarantined.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import tblog
from tblog.cli.http import ApiClient
from tblog.local.server import LocalServer
from tblog.local.store import sql_string

__all__ = ["run_demo"]

_ROUTES = (
    ("GET", "/api/orders"), ("POST", "/api/orders"), ("GET", "/api/users/{id}"),
    ("GET", "/api/search"), ("POST", "/api/checkout"), ("GET", "/healthz"),
)  # fmt: skip
_TENANTS = ("acme", "globex", "initech", "umbrella")


class PaymentDeclinedError(RuntimeError):
    """The demo's one failing checkout."""


def _worker(log: logging.Logger, quota: int, seed: int, fail: bool) -> None:
    rng = random.Random(seed)
    done = 0
    tblog.bind(worker=threading.current_thread().name)
    while done < quota:
        method, route = rng.choice(_ROUTES)
        tenant = rng.choice(_TENANTS)
        with tblog.trace() as span, tblog.bound(tenant_id=tenant, route=route):
            duration = round(rng.lognormvariate(3.0, 0.8), 2)
            log.info("%s %s started", method, route, extra={"method": method})
            log.debug("cache lookup", extra={"hit": rng.random() < 0.8})
            done += 2
            if fail:
                fail = False
                try:
                    raise PaymentDeclinedError(f"card declined for tenant {tenant}")
                except PaymentDeclinedError:
                    log.exception("checkout failed", extra={"duration_ms": duration})
                done += 1
                continue
            if duration > 60:
                log.warning("slow request", extra={"duration_ms": duration, "trace": span.trace_id})
                done += 1
            status = 200 if rng.random() > 0.02 else 503
            log.info("%s %s -> %d", method, route, status,
                     extra={"status": status, "duration_ms": duration})  # fmt: skip
            done += 1


def _print_rows(title: str, result: dict[str, Any]) -> None:
    from tblog.cli.output import print_table  # noqa: PLC0415 - imports tblog.query

    print(f"\n{title}")
    print_table(result, width=48)


def run_demo(events: int, threads: int, data_dir: str) -> int:
    """Run the demo; 0 when every event arrived typed, 1 otherwise."""
    server = LocalServer(data_dir, port=0).start()
    handler = tblog.TinybirdLoggingHandler(
        api_url=server.url, token=server.admin_token, app_name="tblog-demo",
        environment="demo", batch_size=1000,
    )  # fmt: skip
    log = logging.getLogger("tblog_demo.shop")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)
    try:
        print(f"tblog demo: local server at {server.url} (chDB, data in {data_dir})")
        print(f"logging ~{events} records from {threads} threads through TinybirdLoggingHandler…")
        started = time.perf_counter()
        per_thread = max(1, events // max(1, threads))
        workers = [
            threading.Thread(target=_worker, args=(log, per_thread, i, i == 0), name=f"worker-{i}")
            for i in range(max(1, threads))
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        logged = time.perf_counter() - started
        delivered = handler.flush(timeout=120)
        elapsed = time.perf_counter() - started
        stats = handler.stats()
        client = ApiClient(server.url, server.admin_token)
        try:
            arrived = int(client.sql("SELECT count() AS n FROM tb_logs")["data"][0]["n"])
            quarantined = int(
                client.sql("SELECT count() AS n FROM tb_logs_quarantine")["data"][0]["n"]
            )
            sent = stats["enqueued"]
            print(f"\nsent {sent} events, {arrived} arrived, {quarantined} quarantined, "
                  f"{stats['dropped_total']} dropped, in {stats['batches']} batches")  # fmt: skip
            print(f"logging took {logged:.2f}s on the app threads; delivered in {elapsed:.2f}s "
                  f"= {sent / elapsed:,.0f} events/s end to end")  # fmt: skip
            _print_rows("counts per level:", client.sql(
                "SELECT level, count() AS events FROM tb_logs GROUP BY level, level_no "
                "ORDER BY level_no"))  # fmt: skip
            _print_rows("a few rows:", client.sql(
                "SELECT toString(timestamp) AS ts, level, logger, message, "
                "JSONExtractString(extra, 'tenant_id') AS tenant FROM tb_logs "
                "ORDER BY timestamp DESC LIMIT 5"))  # fmt: skip
            _print_rows("the error, with its exception:", client.sql(
                "SELECT exception_type, exception_message, trace_id FROM tb_logs "
                "WHERE exception_type != '' LIMIT 1"))  # fmt: skip
            slowest = client.sql(
                "SELECT trace_id, max(JSONExtractFloat(extra, 'duration_ms')) AS ms "
                "FROM tb_logs WHERE trace_id != '' GROUP BY trace_id ORDER BY ms DESC LIMIT 1"
            )["data"]
            if slowest:
                trace_id = str(slowest[0]["trace_id"])
                _print_rows(f"the slowest trace ({slowest[0]['ms']} ms):", client.sql(
                    "SELECT toString(timestamp) AS ts, level, message, "  # noqa: S608
                    "JSONExtractString(extra, 'route') AS route FROM tb_logs "
                    f"WHERE trace_id = {sql_string(trace_id)} ORDER BY timestamp"))  # fmt: skip
        finally:
            client.close()
        ok = delivered and arrived == sent and quarantined == 0 and stats["dropped_total"] == 0
        print("\nOK: every event arrived, typed." if ok else "\nFAILED: events were lost.")
        return 0 if ok else 1
    finally:
        log.removeHandler(handler)
        handler.close()
        server.close()
