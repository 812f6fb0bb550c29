"""FastAPI with ``TinybirdASGIMiddleware``: request events and a trace id per request.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/fastapi_example.py
Add ``--serve`` to serve with uvicorn (if installed) on http://127.0.0.1:8000.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import httpx
from fastapi import FastAPI

import tblog
from tblog.integrations.asgi import TinybirdASGIMiddleware

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/fastapi_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)

handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "fastapi-example")
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("fastapi_example")

app = FastAPI()
app.add_middleware(TinybirdASGIMiddleware, skip_paths=["/health"])


@app.get("/users/{user_id}")
async def user(user_id: int) -> dict[str, int]:
    log.info("loading user %d", user_id)  # carries the request's trace id
    return {"user_id": user_id}


@app.get("/health")
async def health() -> str:
    return "ok"


async def requests() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        responses = await asyncio.gather(*(client.get(f"/users/{i}") for i in range(3)))
        for resp in responses:
            print(resp.status_code, "x-request-id:", resp.headers["x-request-id"])


def main() -> int:
    if "--serve" in sys.argv:
        import uvicorn  # type: ignore[import-not-found]  # noqa: PLC0415

        uvicorn.run(app, host="127.0.0.1", port=8000)
        return 0
    asyncio.run(requests())
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
