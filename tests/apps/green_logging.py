"""Many greenlets log through tblog under gevent or eventlet monkey-patching, then flush.

``python green_logging.py URL TOKEN LIB ORDER N``: LIB is ``gevent`` or ``eventlet``;
ORDER ``before`` imports tblog and builds the handler before monkey-patching (what
``gunicorn --preload -k gevent`` does), ``running`` also starts the sender thread before
(it logs record N), ``after`` patches first.  Prints the flush result
and the handler's stats as JSON.
"""

from __future__ import annotations

import json
import logging
import sys

url, token, lib, order, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


def patch() -> None:
    if lib == "gevent":
        from gevent import monkey

        monkey.patch_all()
    else:
        import eventlet

        eventlet.monkey_patch()


if order == "after":
    patch()

import tblog  # noqa: E402

log = logging.getLogger("green")
log.setLevel(logging.INFO)
log.propagate = False
handler = tblog.TinybirdLoggingHandler(
    api_url=url, token=token, app_name="green", flush_interval=0.05
)
log.addHandler(handler)
if order == "running":  # the sender thread runs, an OS thread, when patching happens
    log.info("record", extra={"i": n})
    assert tblog.flush(timeout=10)
if order in ("before", "running"):
    patch()

GREENLETS = 50


def work(g: int) -> None:
    for i in range(g, n, GREENLETS):
        log.info("record", extra={"i": i})
        if i % 7 == 0:
            sleep(0)


if lib == "gevent":
    import gevent

    sleep = gevent.sleep
    gevent.joinall([gevent.spawn(work, g) for g in range(GREENLETS)])
else:
    import eventlet

    sleep = eventlet.sleep
    pool = eventlet.GreenPool()
    for g in range(GREENLETS):
        pool.spawn(work, g)
    pool.waitall()
ok = tblog.flush(timeout=10)
print(json.dumps({"flushed": ok, "stats": handler.stats()}), flush=True)
