"""Any WSGI app with ``TinybirdWSGIMiddleware`` (served by the standard library's wsgiref).

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/wsgi_example.py
Add ``--serve`` to serve on http://127.0.0.1:8080 instead of making two requests.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import tblog
from tblog.integrations.wsgi import TinybirdWSGIMiddleware

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/wsgi_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)

handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "wsgi-example")
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("wsgi_example")


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    log.info("saying hello to %s", environ.get("PATH_INFO"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


app = TinybirdWSGIMiddleware(hello, log_requests=True)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> int:
    port = 8080 if "--serve" in sys.argv else 0
    server = make_server("127.0.0.1", port, app, handler_class=QuietHandler)
    if port:
        server.serve_forever()
        return 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for name in ("ada", "grace"):
            url = f"http://127.0.0.1:{server.server_port}/{name}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                print(resp.status, "X-Request-ID:", resp.headers["X-Request-ID"])
    finally:
        server.shutdown()
        server.server_close()
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
