"""Event tracking (Trubrics-style): user events and LLM prompt/generation pairs.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/events_example.py
"""

from __future__ import annotations

import os
import sys

from tblog.events import Tracker

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/events_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)


def main() -> int:
    tracker = Tracker(API_URL, TOKEN, flush_interval=10, flush_batch_size=20)
    tracker.track("user-42", "Sign up", properties={"plan": "pro", "country": "ES"})
    tracker.track_llm(
        user_id="user-42",
        prompt="What's the weather in Madrid?",
        generation="Sunny, 24 degrees.",
        assistant_id="gpt-4o-mini",
        properties={"support_tier": "gold"},
        latency=1.2,
        thread_id="thread-1",
    )
    delivered = tracker.close(10)
    print("delivered:", delivered, tracker.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
