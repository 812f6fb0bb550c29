"""structlog to Tinybird with ``tblog.structlog.TinybirdProcessor``.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/structlog_example.py
"""

from __future__ import annotations

import os
import sys

import structlog

import tblog
from tblog.structlog import TinybirdProcessor

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/structlog_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)


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
