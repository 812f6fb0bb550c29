"""Flask with ``TinybirdFlask``: one event per request, the request's trace id on every line.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/flask_example.py
Add ``--serve`` to serve on http://127.0.0.1:5000 instead of making two test requests.
"""

from __future__ import annotations

import logging
import os
import sys

from flask import Flask

import tblog
from tblog.integrations.flask import TinybirdFlask

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/flask_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)

handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "flask-example")
logging.getLogger().addHandler(handler)  # the app's lines and the request events
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("flask_example")

app = Flask(__name__)
TinybirdFlask(app, skip_paths=["/health"], log_requests=False)


@app.get("/orders/<int:order_id>")
def order(order_id: int) -> dict[str, int]:
    log.info("loading order %d", order_id)  # carries the request's trace id
    return {"order_id": order_id}


@app.get("/health")
def health() -> str:
    return "ok"


def main() -> int:
    if "--serve" in sys.argv:
        app.run(host="127.0.0.1", port=5000)
        return 0
    client = app.test_client()
    with client.get("/orders/1") as resp:
        print(resp.status_code, "X-Request-ID:", resp.headers["X-Request-ID"])
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with client.get("/orders/2", headers={"traceparent": traceparent}) as resp:
        print(resp.status_code, "X-Request-ID:", resp.headers["X-Request-ID"])
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
