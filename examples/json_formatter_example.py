"""python-json-logger formatters on ``TinybirdLoggingHandler``, and the ``tb_logs`` preset.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/json_formatter_example.py
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
    print("examples/json_formatter_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)


def main() -> int:
    handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "json-example")
    # The preset: its lines are tb_logs rows, so the handler ships them as they are.
    handler.setFormatter(
        tblog.TinybirdJsonFormatter(app_name="json-example", static_fields={"team": "a"})
    )
    # The same preset on stdout prints the very rows that are shipped.
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(tblog.TinybirdJsonFormatter(app_name="json-example"))
    log = logging.getLogger("json_example")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.addHandler(stdout)
    with tblog.trace(), tblog.bound(user="u-1"):
        log.info("order placed", extra={"order_id": 7, "total": 19.5})
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    handler.close()
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
