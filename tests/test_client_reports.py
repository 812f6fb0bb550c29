"""Drop reports (issue 18.4): drops counted in stats() reach ``tblog_client_reports``.

Against the loopback Events API (which validates rows against the shipped
``tblog_client_reports.datasource``), a real process exit, and ``tblog local``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tblog
from tblog._delivery import reports
from tblog._delivery.reports import DATASOURCE
from tests.eventsapi import EventsAPI, Fault, Request

ROOT = Path(__file__).resolve().parent.parent


def _reports(api: EventsAPI) -> list[dict[str, Any]]:
    assert api.quarantine[DATASOURCE] == []  # every row fits the shipped schema
    return api.rows(DATASOURCE)


def _by_reason(api: EventsAPI, datasource: str = "tb_logs") -> dict[str, int]:
    out: dict[str, int] = {}
    for row in _reports(api):
        if row["datasource"] == datasource:
            out[row["reason"]] = out.get(row["reason"], 0) + row["count"]
    return out


_ahead = [0.0]


def _tick_due() -> None:
    """Make every periodic report due now (the sender's tick, with a clock past the interval)."""
    _ahead[0] += 10_000
    reports.reporter.tick(time.monotonic() + _ahead[0])


def test_a_refused_batch_is_reported_at_close(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(app_name="reporting", environment="staging", warn_stderr=False)
    logger.addHandler(handler)
    events_api.fail_next(1, status=400, body={"error": "bad"})
    for i in range(3):
        logger.info("r%d", i)
    assert not handler.flush(5)
    assert handler.stats()["dropped"] == {"http_400": 3}
    assert _reports(events_api) == []  # nothing before the interval or close()
    handler.close()

    [row] = _reports(events_api)
    assert (row["datasource"], row["reason"], row["count"]) == ("tb_logs", "http_400", 3)
    assert row["app_name"] == "reporting" and row["environment"] == "staging"
    assert row["process_id"] == os.getpid()
    assert row["tblog_version"] == tblog.__version__
    assert row["hostname"]
    assert row["window_start"] <= row["window_end"] == row["timestamp"]
    assert "Authorization" not in str(row) and events_api.token not in str(row)


def test_periodic_reports_carry_deltas_and_nothing_when_nothing_dropped(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(keep_trace_on_error=True, trace_hold_max=1, warn_stderr=False)
    logger.addHandler(handler)
    with tblog.trace("a" * 32):
        for _ in range(4):  # 3 discarded (per-trace cap 1), 1 held
            logger.info("x")
    _tick_due()
    out = reports.reporter.out_channel(handler._channel)
    assert out is not None and out.flush(5)
    assert _by_reason(events_api) == {"trace_discarded": 3}

    _tick_due()  # nothing new: no row, no request
    requests_before = len(events_api.requests)
    assert out.flush(5)
    assert len(events_api.requests) == requests_before
    assert len(_reports(events_api)) == 1

    with tblog.trace("b" * 32):
        logger.info("y")
        logger.info("z")  # one more discarded
    _tick_due()
    assert out.flush(5)
    rows = _reports(events_api)
    assert [(r["reason"], r["count"]) for r in rows] == [
        ("trace_discarded", 3),
        ("trace_discarded", 1),
    ]
    assert rows[1]["window_start"] >= rows[0]["window_end"]
    handler.close()  # the 2 still held are discarded at close, and reported
    assert _by_reason(events_api) == {"trace_discarded": 6}
    assert handler.stats()["dropped"] == {"trace_discarded": 6}


def test_interval_zero_turns_reports_off(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(client_reports_interval=0, warn_stderr=False)
    logger.addHandler(handler)
    assert not reports.reporter.watching(handler._channel)
    events_api.fail_next(1, status=400)
    logger.info("lost")
    handler.flush(5)
    _tick_due()
    handler.close()
    assert handler.stats()["dropped"] == {"http_400": 1}
    assert _reports(events_api) == []


def test_when_the_report_itself_is_refused_the_next_report_says_so_once(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    refused = {"n": 0}

    def fault(req: Request) -> Fault | None:
        if req.params.get("name") == DATASOURCE and refused["n"] == 0:
            refused["n"] += 1
            return Fault(status=400)
        return None

    events_api.fault = fault
    handler = make_handler(warn_stderr=False)
    logger.addHandler(handler)
    events_api.fail_next(1, status=400)
    logger.info("lost")
    assert not handler.flush(5)
    _tick_due()  # the report of http_400 x1: refused, so the report channel dropped one row
    out = reports.reporter.out_channel(handler._channel)
    assert out is not None
    assert not out.flush(5)
    assert out.stats()["dropped"] == {"http_400": 1}
    assert _reports(events_api) == []
    for _ in range(3):  # the next report tells the report channel's own loss, and stops there
        _tick_due()
        out.flush(5)
    rows = _reports(events_api)
    assert [(r["datasource"], r["reason"], r["count"]) for r in rows] == [
        (DATASOURCE, "http_400", 1)
    ]
    handler.close()


def test_a_destination_that_refuses_the_token_gets_no_report(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(warn_stderr=False)
    logger.addHandler(handler)
    events_api.fail_next(1, status=403, body={"error": "no APPEND scope"})
    logger.info("refused")
    assert not handler.flush(5)
    handler.close()
    assert handler.stats()["dropped"] == {"http_403": 1}
    assert [r.params["name"] for r in events_api.requests] == ["tb_logs"]  # no report sent


def test_closing_inside_logging_lock_does_not_wait_but_reports(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(warn_stderr=False)
    logger.addHandler(handler)
    events_api.fail_next(1, status=400)
    logger.info("lost")
    handler.flush(5)
    with logging._lock:  # type: ignore[attr-defined]  # as dictConfig re-configuration does
        handler.close()
    out = reports.reporter.out_channel(handler._channel)
    assert out is not None and out.flush(5)
    assert _by_reason(events_api) == {"http_400": 1}


_CHILD = textwrap.dedent(
    """
    import logging, sys
    import tblog
    url, token = sys.argv[1], sys.argv[2]
    handler = tblog.TinybirdLoggingHandler(
        url, token, "exiting", keep_trace_on_error=True, flush_interval=3600.0,
        warn_stderr=False,
    )
    log = logging.getLogger("child")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("refused by the server")
    with tblog.trace("c" * 32):
        log.info("held, never errors")
        log.info("held too")
    # no close(), no flush(): the end of the process ships the last report
    """
)


@pytest.mark.slow
def test_the_last_report_is_shipped_at_process_exit(events_api: EventsAPI) -> None:
    events_api.fail_next(1, status=400)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, events_api.url, events_api.token],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _by_reason(events_api) == {"http_400": 1, "trace_discarded": 2}
    assert {r["app_name"] for r in _reports(events_api)} == {"exiting"}
    assert {r["process_id"] for r in _reports(events_api)} != {os.getpid()}


def _child_process(url: str, token: str) -> None:
    handler = tblog.TinybirdLoggingHandler(
        url, token, "mp-child", keep_trace_on_error=True, flush_interval=3600.0,
        warn_stderr=False,
    )  # fmt: skip
    log = logging.getLogger("reports.mp.child")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    with tblog.trace("e" * 32):
        log.info("held, never errors")
    # the child ends with os._exit: no atexit, no logging.shutdown; only tblog's exit pass


@pytest.mark.slow
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="POSIX")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_multiprocessing_child_ships_its_last_report(events_api: EventsAPI) -> None:
    child = multiprocessing.get_context("fork").Process(
        target=_child_process, args=(events_api.url, events_api.token)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    rows = _reports(events_api)
    assert [(r["app_name"], r["reason"], r["count"]) for r in rows] == [
        ("mp-child", "trace_discarded", 1)
    ]
    assert rows[0]["process_id"] == child.pid


def test_bad_interval_is_refused(events_api: EventsAPI) -> None:
    with pytest.raises(ValueError, match="client_reports_interval"):
        tblog.TinybirdLoggingHandler(
            events_api.url, events_api.token, "t", client_reports_interval=-1
        )


# -- tblog local ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("chdb")
    from tests.localserver import serve

    yield from serve(tmp_path_factory.mktemp("reports-local"))


def test_tblog_local_has_the_datasource_and_takes_reports(local: Any) -> None:
    from tests.localserver import scalar

    assert DATASOURCE in local.store.datasources
    handler = tblog.TinybirdLoggingHandler(
        local.url, local.admin_token, "local-reports", keep_trace_on_error=True,
        warn_stderr=False, wait=True,
    )  # fmt: skip
    log = logging.getLogger("reports.local")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        with tblog.trace("d" * 32):
            log.info("held and discarded at close")
    finally:
        log.removeHandler(handler)
        handler.close()
    q = (
        f"SELECT sum(count) FROM {DATASOURCE} WHERE app_name = 'local-reports' "
        "AND reason = 'trace_discarded' AND datasource = 'tb_logs'"
    )
    assert int(scalar(local, q)) == 1
