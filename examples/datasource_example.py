"""Tinybird SDK-style ingestion: ``Datasource``, ``AsyncDatasource`` and ``API``.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/datasource_example.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timezone

import tblog
from tblog.datasource import APIError

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/datasource_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)


# A datasource that `tblog local` serves (it loads tblog's .datasource files) and that you
# create in Tinybird from tblog/datasources/events.datasource (`tblog datasource events`).
# A datasource the server does not have is a 404: its rows are dropped, counted in stats().
DATASOURCE = "events"


def order(n: int, source: str) -> dict[str, object]:
    """One row of the events datasource: an order, as a user event."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "event_id": str(uuid.uuid4()),
        "user_id": "datasource-example",
        "event": "order placed",
        "properties": json.dumps({"order_id": n, "source": source}),
    }


def delivered(ds: tblog.Datasource | tblog.AsyncDatasource, rows: int, how: str) -> bool:
    """Say what became of the rows: sent, or dropped (and why)."""
    stats = ds.stats()
    if stats["sent"] == rows:
        return True
    print(f"{how}: {stats['sent']} of {rows} rows sent, dropped: {stats['dropped']}")
    return False


async def ingest_async() -> bool:
    async with tblog.AsyncDatasource(DATASOURCE, TOKEN, api_url=API_URL) as ds:
        for i in range(3):
            await ds << order(100 + i, "async")
    return delivered(ds, 3, "AsyncDatasource")


def main() -> int:
    with tblog.Datasource(DATASOURCE, TOKEN, api_url=API_URL) as ds:
        for i in range(5):
            ds << order(i, "sync")
    sync_ok = delivered(ds, 5, "Datasource")
    async_ok = asyncio.run(ingest_async())
    # Any Tinybird endpoint through API: here the Events API itself.
    body = "\n".join(json.dumps(order(1000 + i, "api")) for i in range(2))
    try:
        with tblog.API(TOKEN, API_URL) as api:
            answer = api.post(f"events?name={DATASOURCE}&wait=true", data=body).json()
    except APIError as exc:  # its message names the method and path, never the token
        print(f"API: {exc}")
        answer = {}
    print("api answer:", answer)
    ok = sync_ok and async_ok and answer.get("successful_rows") == 2
    print("delivered:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
