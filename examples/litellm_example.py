"""LiteLLM: every completion becomes one row of the ``litellm`` datasource.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/litellm_example.py
(needs ``pip install 'tblog[litellm]'``; ``mock_response`` answers without calling a provider)
"""

from __future__ import annotations

import asyncio
import os
import sys

import litellm

from tblog.litellm import TinybirdLitellmHandler

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/litellm_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)
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
