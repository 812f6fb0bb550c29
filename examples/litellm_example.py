"""LiteLLM: every completion becomes one row of the ``litellm`` datasource.

Run:  TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=<append token> python examples/litellm_example.py
(needs ``pip install 'tblog[litellm]'``; ``mock_response`` answers without calling a provider)
"""

from __future__ import annotations

import asyncio
import os

import litellm

from tblog.litellm import TinybirdLitellmHandler

API_URL = os.environ.get("TB_API_URL", "http://127.0.0.1:7181")
TOKEN = os.environ.get("TB_TOKEN", "p.local-example-token")
MESSAGES = [{"role": "user", "content": "Hi! Say hello back."}]


async def streamed() -> None:
    stream = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="Hello, streamed!", stream=True
    )
    async for _chunk in stream:
        pass


def main() -> int:
    handler = TinybirdLitellmHandler(api_url=API_URL, tinybird_token=TOKEN)
    litellm.callbacks = [handler]
    response = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="Hello!", user="example-user"
    )
    print("answer:", response.choices[0].message.content)
    asyncio.run(streamed())
    litellm.callbacks = []
    delivered = handler.close(10) and handler.stats()["sent"] == 2
    print("delivered:", delivered, handler.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
