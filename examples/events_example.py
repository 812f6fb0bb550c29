"""Event tracking (Trubrics-style): user events and LLM prompt/generation pairs.

Run:  TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=<append token> python examples/events_example.py
"""

from __future__ import annotations

import os

from tblog.events import Tracker

API_URL = os.environ.get("TB_API_URL", "http://127.0.0.1:7181")
TOKEN = os.environ.get("TB_TOKEN", "p.local-example-token")


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
