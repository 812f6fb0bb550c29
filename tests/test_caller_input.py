"""What the caller hands over, however odd, becomes a valid event or a clear error.

Non-string ``extra=`` keys, constructors that refuse their options, exceptions that reach
the listener through a standard ``QueueHandler`` (folded into the message by ``prepare``),
and what ``extra=`` values ship when they change after the call.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tblog
from tests.eventsapi import EventsAPI


def test_a_non_string_extra_key_ships_as_its_text(
    make_handler: Any, logger: logging.Logger, events_api: EventsAPI
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("odd keys", extra={5: "five", (1, 2): "pair", "ok": 1})  # type: ignore[dict-item]
    assert handler.flush(5)
    [row] = events_api.rows()
    assert row["extra"] == {"5": "five", "(1, 2)": "pair", "ok": 1}
    assert handler.stats()["dropped_total"] == 0


def test_a_non_string_key_inside_an_extra_value_ships_as_its_text(
    make_handler: Any, logger: logging.Logger, events_api: EventsAPI
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("nested", extra={"ctx": {1: "one", None: "none"}})
    assert handler.flush(5)
    [row] = events_api.rows()
    assert row["extra"] == {"ctx": {"1": "one", "null": "none"}}  # as json.dumps names None


@pytest.mark.parametrize("queued", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {"token": None},  # no token anywhere
        {"flush_interval": "1s"},
        {"batch_size": 0},
    ],
)
def test_a_constructor_that_refuses_leaves_nothing_behind_for_shutdown(
    options: dict[str, Any], queued: bool
) -> None:
    # logging.shutdown() flushes every handler still alive.  An uncaught constructor error
    # keeps the half-built handler alive (in the traceback) until then: its flush raised
    # AttributeError, which stopped the flush of the handlers registered before it.
    script = textwrap.dedent(
        f"""
        import logging, os, queue
        for var in ("TB_API_URL", "TB_HOST", "TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN"):
            os.environ.pop(var, None)

        class Marker(logging.Handler):
            def flush(self):
                print("flushed", flush=True)

        logging.getLogger().addHandler(Marker())
        import tblog
        options = {options!r}
        options.setdefault("token", "t")
        if {queued!r}:
            tblog.TinybirdLoggingQueueHandler(
                queue.Queue(), "http://127.0.0.1:9", app_name="a", **options
            )
        else:
            tblog.TinybirdLoggingHandler(api_url="http://127.0.0.1:9", app_name="a", **options)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["flushed"]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(("ValueError: ", "TypeError: ")), done.stderr
    assert "AttributeError" not in done.stderr and "Error in atexit" not in done.stderr


def _boom() -> None:
    raise ValueError("boom 42")


def test_an_exception_through_a_standard_queue_handler_keeps_its_structure(
    make_handler: Any, events_api: EventsAPI
) -> None:
    # The 3.12 dictConfig form: logging.handlers.QueueHandler -> TinybirdQueueListener.
    # QueueHandler.prepare() folds the traceback into the message and drops exc_info.
    q: queue.Queue[Any] = queue.Queue()
    listener = tblog.TinybirdQueueListener(q, make_handler())
    qh = logging.handlers.QueueHandler(q)
    log = logging.getLogger("queue.exc.test")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(qh)
    try:
        try:
            _boom()
        except ValueError:
            log.exception("checkout failed for %s", "order-7")
        log.info("no exception here")
        listener.stop()
    finally:
        log.removeHandler(qh)
    assert tblog.flush(5)
    failed, plain = events_api.rows()
    assert failed["message"] == "checkout failed for order-7"
    assert failed["exception"]["type"] == "ValueError"
    assert failed["exception"]["message"] == "boom 42"
    stack = failed["exception"]["stacktrace"]
    assert stack.startswith("Traceback (most recent call last):")
    assert "_boom" in stack and stack.rstrip().endswith("ValueError: boom 42")
    assert plain["message"] == "no exception here" and not plain.get("exception")


def test_extra_values_are_read_when_the_event_is_encoded(
    make_handler: Any, logger: logging.Logger, events_api: EventsAPI
) -> None:
    # The documented contract (README, "extra= values"): scalars and strings are fixed at the
    # call; a mutable container is read when the sender encodes the event, as the standard
    # QueueHandler does.  Pass a copy to pin its value.
    handler = make_handler()
    logger.addHandler(handler)
    cart = {"items": 1}
    logger.info("pinned", extra={"cart": dict(cart), "n": 1})
    logger.info("live", extra={"cart": cart})
    cart["items"] = 2
    assert handler.flush(5)
    pinned, live = events_api.rows()
    assert pinned["extra"] == {"cart": {"items": 1}, "n": 1}
    assert live["extra"] == {"cart": {"items": 2}}


def _readme_blocks() -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)


def test_the_readme_first_snippet_ships_as_pasted(events_api: EventsAPI) -> None:
    # Pasted as it stands (only the endpoint and the token are this test's), no close():
    # the record is delivered at exit, and the process prints nothing.
    # (the README's first snippet with the URL and token given explicitly)
    first = next(b for b in _readme_blocks() if '"https://api.tinybird.co", "p.eyJ..."' in b)
    code = first.replace("https://api.tinybird.co", events_api.url).replace(
        "p.eyJ...", events_api.token
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    [row] = events_api.rows()
    assert row["message"] == "added 3 items" and row["logger"] == "cart"
    assert row["extra"]["cart_id"] == "c-9" and row["extra"]["user_id"] == "u-42"
    assert len(row["trace_id"]) == 32
