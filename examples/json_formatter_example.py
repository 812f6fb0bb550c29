"""python-json-logger formatters on ``TinybirdLoggingHandler``, and the ``tb_logs`` preset.

Run:  TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/json_formatter_example.py
"""

from __future__ import annotations

import logging
import os
import sys

import tblog

API_URL = os.environ.get("TB_API_URL", "http://127.0.0.1:7181")
TOKEN = os.environ.get("TB_TOKEN", "p.local-example-token")


def main() -> int:
    handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "json-example")
    # The preset: its lines are tb_logs rows, so the handler ships them as they are.
    handler.setFormatter(tblog.TinybirdJsonFormatter("json-example", static_fields={"team": "a"}))
    # The same preset on stdout prints the very rows that are shipped.
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(tblog.TinybirdJsonFormatter("json-example"))
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
