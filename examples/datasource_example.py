"""Tinybird SDK-style ingestion: ``Datasource``, ``AsyncDatasource`` and ``API``.

Run:  TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=<append token> python examples/datasource_example.py
"""

from __future__ import annotations

import asyncio
import json
import os

import tblog

API_URL = os.environ.get("TB_API_URL", "http://127.0.0.1:7181")
TOKEN = os.environ.get("TB_TOKEN", "p.local-example-token")


async def ingest_async() -> bool:
    async with tblog.AsyncDatasource("orders", TOKEN, api_url=API_URL) as ds:
        for i in range(3):
            await ds << {"order_id": 100 + i, "source": "async"}
    return ds.stats()["sent"] == 3


def main() -> int:
    with tblog.Datasource("orders", TOKEN, api_url=API_URL) as ds:
        for i in range(5):
            ds << {"order_id": i, "source": "sync"}
    sync_ok = ds.stats()["sent"] == 5
    async_ok = asyncio.run(ingest_async())
    # Any Tinybird endpoint through API: here the Events API itself.
    with tblog.API(TOKEN, API_URL) as api:
        body = "\n".join(json.dumps({"order_id": 1000 + i, "source": "api"}) for i in range(2))
        answer = api.post("events?name=orders&wait=true", data=body).json()
    print("api answer:", answer)
    delivered = sync_ok and async_ok and answer.get("successful_rows") == 2
    print("delivered:", delivered)
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
