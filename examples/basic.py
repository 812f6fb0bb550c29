"""The smallest useful set-up: TinybirdLoggingHandler on the root logger.

Run against `tblog local` (it prints the two variables to export) or real Tinybird:
    TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/basic.py
"""

from __future__ import annotations

import logging
import os
import sys

import tblog

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/basic.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)


def main() -> int:
    handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "basic-example", environment="dev")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)

    log = logging.getLogger("example")
    with tblog.trace(), tblog.bound(user_id="u-42"):
        log.info("user signed in", extra={"plan": "pro"})
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
