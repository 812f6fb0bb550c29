"""The smallest useful set-up: TinybirdLoggingHandler on the root logger.

Run against `tblog local` (started with `tblog local`) or real Tinybird:
    TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=... python examples/basic.py
"""

from __future__ import annotations

import logging
import os

import tblog


def main() -> None:
    handler = tblog.TinybirdLoggingHandler(
        os.environ.get("TB_API_URL", "http://127.0.0.1:7181"),
        None,  # from $TB_WRITE_TOKEN / $TB_TOKEN / $TINYBIRD_TOKEN
        "basic-example",
        environment="dev",
    )
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
    print("delivered:", handler.flush(10), handler.stats())


if __name__ == "__main__":
    main()
