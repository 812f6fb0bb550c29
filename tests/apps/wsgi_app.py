"""A WSGI app for the server tests (uWSGI, gunicorn): each request logs one record.

Configured by the environment: ``TBLOG_TEST_URL`` and ``TBLOG_TEST_TOKEN`` (the loopback
Events API).  It logs a ``boot`` record when imported (in the master, with uWSGI's default or
gunicorn's ``--preload``) and, per request, a record whose ``req`` field is the request's
``?req=`` value (``TBLOG_TEST_FLUSH_AT_IMPORT=1``: the import ends with ``tblog.flush``,
as a uWSGI master needs).  ``/flush`` answers with the result of ``tblog.flush(5)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import tblog

log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(
    tblog.TinybirdLoggingHandler(
        api_url=os.environ["TBLOG_TEST_URL"],
        token=os.environ["TBLOG_TEST_TOKEN"],
        app_name="servers",
        flush_interval=0.05,
    )
)
log.info("boot", extra={"who": "boot", "pid": os.getpid()})
if os.environ.get("TBLOG_TEST_FLUSH_AT_IMPORT"):
    tblog.flush(5)  # a uWSGI master runs no exit hook: deliver what it logged, as documented


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = environ.get("QUERY_STRING", "")
    if environ.get("PATH_INFO") == "/flush":
        body = str(tblog.flush(5)).encode()
    else:
        req = query.partition("req=")[2]
        log.info("request", extra={"who": "request", "req": req, "pid": os.getpid()})
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
