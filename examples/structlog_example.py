"""structlog to Tinybird with ``tblog.structlog.TinybirdProcessor``.

Run:  TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=<append token> python examples/structlog_example.py
"""

from __future__ import annotations

import os

import structlog

import tblog
from tblog.structlog import TinybirdProcessor

API_URL = os.environ.get("TB_API_URL", "http://127.0.0.1:7181")
TOKEN = os.environ.get("TB_TOKEN", "p.local-example-token")


def main() -> int:
    tinybird = TinybirdProcessor(API_URL, TOKEN, "structlog-example", environment="dev")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tinybird,  # before the renderer: it ships the event dict and passes it on
            structlog.processors.JSONRenderer(),
        ]
    )
    log = structlog.get_logger("shop")
    structlog.contextvars.bind_contextvars(request_id="req-1")
    with tblog.trace():
        log.info("cart created", cart_id=42, items=3)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("checkout failed", cart_id=42)
    delivered = tinybird.flush(10)
    print("delivered:", delivered, tinybird.stats())
    tinybird.close()
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
