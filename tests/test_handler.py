"""TinybirdLoggingHandler end to end against the loopback Events API."""

from __future__ import annotations

import gzip
import json
import logging
import sys
import threading
import uuid
from typing import Any

import pytest

import tblog
from tblog._event import encode as _encode
from tests.eventsapi import EventsAPI


def test_records_arrive_with_the_fixed_schema(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(environment="prod")
    logger.addHandler(handler)
    with tblog.trace("t-1", "s-1"), tblog.bound(user="u1"):
        logger.info("hello %s", "world", extra={"order": 42, "nested": {"a": [1, 2]}})
    assert handler.flush(5)

    [row] = events_api.rows()
    assert row["message"] == "hello world"
    assert row["level"] == "INFO" and row["level_no"] == 20
    assert row["logger"] == logger.name
    assert row["app_name"] == "tests" and row["environment"] == "prod"
    assert (row["trace_id"], row["span_id"]) == ("t-1", "s-1")
    assert row["extra"] == {"user": "u1", "order": 42, "nested": {"a": [1, 2]}}
    assert row["func_name"] == "test_records_arrive_with_the_fixed_schema"
    assert row["timestamp"].endswith("Z") and len(row["timestamp"]) == 27
    assert uuid.UUID(row["event_id"]).version == 4
    for key in ("hostname", "process_id", "process_name", "thread_id", "thread_name",
                "module", "lineno", "pathname"):  # fmt: skip
        assert row[key] not in ("", 0, None), key
    assert "exception" not in row
    assert events_api.quarantine["tb_logs"] == []


def test_requests_are_gzipped_ndjson_with_bearer_token(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(batch_size=3)
    logger.addHandler(handler)
    for i in range(7):
        logger.warning("n=%d", i)
    assert handler.flush(5)
    assert [r["message"] for r in events_api.rows()] == [f"n={i}" for i in range(7)]
    req = events_api.requests[0]
    assert req.path == "/v0/events" and req.params == {"name": "tb_logs"}
    assert req.headers["Content-Type"] == "application/x-ndjson"
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Authorization"] == f"Bearer {events_api.token}"
    assert events_api.token not in json.dumps(req.params)
    lines = gzip.decompress(req.body).splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    stats = handler.stats()
    assert stats["enqueued"] == 7 and stats["sent"] == 7 and stats["batches"] == 3
    assert stats["successful_rows"] == 7 and stats["dropped_total"] == 0
    assert stats["queue_depth"] == 0 and stats["bytes_sent"] > 0


def test_stats_count_the_events_the_sender_is_encoding(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # Taken from the buffer, not in a batch yet: still in queue_depth (it counted none).
    handler = make_handler(batch_size=10)
    channel = handler._channel
    encoding, go = threading.Event(), threading.Event()
    encode_batch = channel.encode_batch

    def held(items: Any) -> Any:
        encoding.set()
        go.wait(10)
        return encode_batch(items)

    channel.encode_batch = held
    logger.addHandler(handler)
    for i in range(10):  # a batch's worth wakes the sender
        logger.info("n=%d", i)
    assert encoding.wait(10)
    stats = handler.stats()
    go.set()
    assert (stats["queue_depth"], stats["sent"], stats["dropped_total"]) == (10, 0, 0)
    assert handler.flush(5) and len(events_api.rows()) == 10
    stats = handler.stats()
    assert (stats["queue_depth"], stats["sent"], stats["dropped_total"]) == (0, 10, 0)


@pytest.mark.parametrize("backend", ["zlib", "isal"])
def test_both_gzip_backends_make_standard_gzip(backend: str, monkeypatch: Any) -> None:
    if backend == "isal":
        pytest.importorskip("isal")
        monkeypatch.setenv("TBLOG_GZIP", "")
    else:
        monkeypatch.setenv("TBLOG_GZIP", "zlib")
    module = _encode._isal()
    assert (module is None) == (backend == "zlib")
    monkeypatch.setattr(_encode, "_fast_gzip", module)
    body = b"\n".join(b'{"n":%d,"message":"same text again"}' % i for i in range(5000)) + b"\n"
    packed = _encode.gzip_bytes(body)
    assert gzip.decompress(packed) == body  # what any Events API server reads
    assert len(packed) * 10 < len(body)


def test_exception_is_structured(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler())
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("failed")
    assert tblog.flush(5)
    [row] = events_api.rows()
    assert row["level"] == "ERROR"
    exc = row["exception"]
    assert exc["type"] == "ValueError" and exc["message"] == "bad value"
    assert exc["stacktrace"].startswith("Traceback") and "raise ValueError" in exc["stacktrace"]


def test_wait_and_plain_body_options(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(wait=True, gzip=False, ds_name="other_logs")
    logger.addHandler(handler)
    logger.info("x")
    assert handler.flush(5)
    req = events_api.requests[0]
    assert req.params == {"name": "other_logs", "wait": "true"} and req.status == 200
    assert "Content-Encoding" not in req.headers
    assert json.loads(req.body)["message"] == "x"


def test_static_fields_go_into_extra_and_never_override(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    logger.addHandler(make_handler(static_fields={"region": "eu", "order": 0}))
    logger.info("x", extra={"order": 7})
    assert tblog.flush(5)
    [row] = events_api.rows()
    assert row["extra"] == {"region": "eu", "order": 7}


def test_plain_formatter_fills_formatted_message(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    logger.addHandler(handler)
    logger.error("a %s", "b")

    class Upper(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return super().format(record).upper()

    handler.setFormatter(Upper("%(message)s"))
    logger.error("c %s", "d")
    assert handler.flush(5)
    rows = events_api.rows()
    assert rows[0]["formatted_message"] == f"ERROR:{logger.name}:a b"
    assert rows[1]["formatted_message"] == "C D"


def test_flush_returns_false_when_records_were_dropped(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    events_api.fail_next(1, status=400, body={"error": "bad schema"})
    logger.info("lost")
    assert handler.flush(5) is False
    stats = handler.stats()
    assert stats["dropped"] == {"http_400": 1}
    assert "bad schema" in stats["last_error"] and events_api.token not in stats["last_error"]
    logger.info("kept")
    assert handler.flush(5) is True


def test_token_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "p.super-secret-token-abcdefghijkl"
    handler = tblog.TinybirdLoggingHandler("http://127.0.0.1:9", secret, "app")
    try:
        assert secret not in repr(handler)
        assert secret not in repr(handler._channel)
        assert secret not in json.dumps(handler.stats())
    finally:
        handler.close()
    with pytest.raises(ValueError) as info:
        tblog.TinybirdLoggingHandler(f"ftp://x/{secret}", secret, "app")
    assert secret not in str(info.value)


def test_missing_token_names_the_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="TB_WRITE_TOKEN, TB_TOKEN, TINYBIRD_TOKEN"):
        tblog.TinybirdLoggingHandler("http://127.0.0.1:9", None, "app")


def test_environment_fallbacks(
    monkeypatch: pytest.MonkeyPatch, events_api: EventsAPI, logger: logging.Logger
) -> None:
    monkeypatch.setenv("TB_HOST", "http://127.0.0.1:1")
    monkeypatch.setenv("TB_API_URL", events_api.url)
    monkeypatch.setenv("TINYBIRD_TOKEN", "p.wrong-token-xxxxxxxxxxxxxxxx")
    monkeypatch.setenv("TB_TOKEN", events_api.token)
    handler = tblog.TinybirdLoggingHandler(app_name="env")
    try:
        assert handler.api_url == events_api.url
        logger.addHandler(handler)
        logger.info("via env")
        assert handler.flush(5)
        assert events_api.rows()[0]["app_name"] == "env"
    finally:
        handler.close()
    monkeypatch.delenv("TB_API_URL")
    monkeypatch.delenv("TB_HOST")
    handler = tblog.TinybirdLoggingHandler(app_name="env")
    assert handler.api_url == "https://api.tinybird.co"
    handler.close()


def test_sdk_code_order_is_accepted_with_one_warning(events_api: EventsAPI) -> None:
    with pytest.warns(UserWarning, match="look like \\(token, api_url\\)") as caught:
        handler = tblog.TinybirdLoggingHandler(events_api.token, events_api.url, "sdk")
    try:
        assert handler.api_url == events_api.url
        assert all(events_api.token not in str(w.message) for w in caught)
        assert caught[0].filename == __file__  # the warning points at the caller's line
    finally:
        handler.close()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be > 0"),
        ("flush_interval", "1", "flush_interval must be a number"),
        ("drop_policy", "random", "drop_policy must be one of"),
        ("gzip", "yes", "gzip must be true or false"),
        ("schema", "v2", "schema must be one of"),
        ("max_batch_bytes", 20 * 1024 * 1024, "at most"),
        ("ds_name", "bad-name", "ds_name must be a Tinybird datasource name"),
    ],
)
def test_bad_options_get_clear_errors(option: str, value: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        tblog.TinybirdLoggingHandler("http://127.0.0.1:9", "p.token-xxxxxxxxxxxxxxxx", "a",
                                     **{option: value})  # fmt: skip


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        tblog.TinybirdLoggingHandler("http://x", "p.t", "a", "ds", 10)  # type: ignore[misc]


def test_tinybird_sdk_schema_field_names(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(schema="tinybird-python-sdk", ds_name="sdk_logs")
    logger.addHandler(handler)
    with tblog.trace("t-sdk", "s-sdk"):
        try:
            raise OSError("disk")
        except OSError:
            logger.error("failed %s", "x", extra={"k": 1}, exc_info=True)
    assert handler.flush(5)
    [row] = events_api.rows("sdk_logs")
    expected = {
        "name", "level", "levelname", "pathname", "filename", "module", "lineno", "funcName",
        "created", "asctime", "msecs", "relativeCreated", "thread", "threadName", "process",
        "processName", "message", "exc_info", "args", "extra", "formatted_message", "app_name",
    }  # fmt: skip
    assert set(row) == expected
    assert row["level"] == 40 and row["levelname"] == "ERROR" and row["name"] == logger.name
    assert row["exc_info"]["type"] == "<class 'OSError'>" and row["exc_info"]["value"] == "disk"
    assert row["args"] == ["x"]
    # as the SDK's: the record's other public attributes too (tests/test_sdk_parity.py)
    sdk_extra = {"msg": "failed %s", "levelno": 40, "exc_text": None, "stack_info": None, "k": 1}
    if sys.version_info >= (3, 12):
        sdk_extra["taskName"] = None
    assert row["extra"] == {**sdk_extra, "trace_id": "t-sdk", "span_id": "s-sdk"}
    assert row["formatted_message"].startswith("failed x\nTraceback")
    assert row["app_name"] == "tests"


def test_ten_handlers_share_one_sender_thread(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    import threading

    handlers = [make_handler(ds_name=f"ds_{i}") for i in range(10)]
    for handler in handlers:
        logger.addHandler(handler)
    logger.info("to all ten")
    assert tblog.flush(5)
    assert [t.name for t in threading.enumerate()].count("tblog-sender") == 1
    assert all(len(events_api.rows(f"ds_{i}")) == 1 for i in range(10))


def test_a_batch_closes_at_the_byte_cap(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler(max_batch_bytes=20_000, max_event_bytes=4096, gzip=False)
    logger.addHandler(handler)
    for i in range(20):
        logger.info("%d %s", i, "m" * 2000)
    assert handler.flush(5)
    assert len(events_api.rows()) == 20
    sizes = [len(r.body) for r in events_api.requests]
    assert len(sizes) >= 2 and max(sizes) <= 20_000


def test_records_of_many_shapes_keep_their_own_extras(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("a", extra={"x": 1})
    logger.info("b", extra={"y": 2, "_private": 3})
    logger.info("c")
    logger.info("d", extra={"x": 4})
    # a record built without LogRecord.__init__'s attributes still becomes a valid event
    bare = logging.makeLogRecord({"msg": "e", "name": logger.name, "custom": 5})
    for attr in ("processName", "threadName", "funcName"):
        delattr(bare, attr)
    handler.handle(bare)
    assert handler.flush(5)
    rows = {r["message"]: r for r in events_api.rows()}
    assert {m: r["extra"] for m, r in rows.items()} == {
        "a": {"x": 1}, "b": {"y": 2}, "c": {}, "d": {"x": 4}, "e": {"custom": 5},
    }  # fmt: skip
    assert rows["e"]["process_name"] == "" and rows["e"]["func_name"] == ""
    assert len({r["event_id"] for r in rows.values()}) == 5
    assert events_api.quarantine["tb_logs"] == []


def test_a_netrc_entry_never_replaces_the_token(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger, tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # requests would send these as Basic auth
    handler = make_handler()
    logger.addHandler(handler)
    logger.info("with a netrc around")
    assert handler.flush(10)
    assert events_api.requests[-1].headers["Authorization"] == f"Bearer {events_api.token}"
    assert [r["message"] for r in events_api.rows()] == ["with a netrc around"]


def test_the_proxy_comes_from_the_environment(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", events_api.url)  # the loopback server plays the proxy
    host = f"http://logs-{uuid.uuid4().hex[:8]}.invalid"  # resolvable only through the proxy
    handler = make_handler(api_url=host, max_retries=0)
    logger.addHandler(handler)
    logger.info("through the proxy")
    assert handler.flush(10)
    assert [r["message"] for r in events_api.rows()] == ["through the proxy"]
    assert events_api.requests[-1].headers["Host"] == host.removeprefix("http://")


def test_the_buffer_accounting_returns_to_zero_after_concurrent_puts(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # Producers put without the channel's lock: every byte they add, the sender subtracts.
    handler = make_handler(batch_size=64)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))  # a plain formatter
    logger.addHandler(handler)
    per_thread, threads = 300, 8

    def work(t: int) -> None:
        for i in range(per_thread):
            if i % 50 == 0:
                try:
                    raise ValueError(f"boom {t}")
                except ValueError:
                    logger.exception("failed %d", i)
            else:
                logger.info("thread %d says %d", t, i, extra={"k": i, "big": "x" * (i % 7) * 100})

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert handler.flush(30)
    stats = handler.stats()
    assert stats["enqueued"] == stats["sent"] == per_thread * threads
    assert stats["queue_bytes"] == 0 and stats["queue_depth"] == 0
    assert len(events_api.rows()) == per_thread * threads


class _Counter:
    """A %-argument whose text changes after the logging call."""

    def __init__(self) -> None:
        self.n = 0

    def __str__(self) -> str:
        return f"count={self.n}"


class _Label(str):
    """A str subclass whose formatting runs the application's code."""

    def __str__(self) -> str:
        return "label!"


def test_messages_read_as_at_the_logging_call(
    events_api: EventsAPI, make_handler: Any, logger: logging.Logger
) -> None:
    # One argument of a plain type is merged on the sender thread; anything else at the call.
    handler = make_handler()
    logger.addHandler(handler)
    counter = _Counter()
    logger.info("object %s", counter)
    counter.n = 99  # changed after the call: the event keeps what the call saw
    logger.info("int %d, float %.2f", 7, 2.5)
    logger.info("one int %05d", 42)
    logger.info("one str %r", "it's")
    logger.info("subclass %s", _Label("x"))
    logger.info("no args, %s kept literally")
    logger.info("bad %d", "not a number")  # merged on the sender thread: it fails there
    logger.info("bad %d %d", "x", 1)  # merged at the call: it fails there
    logger.info("mapping %(a)s", {"a": 1})
    assert handler.flush(5)
    got = [r["message"] for r in events_api.rows()]
    assert got[:6] == [
        "object count=0",
        "int 7, float 2.50",
        "one int 00042",
        'one str "it\'s"',
        "subclass label!",
        "no args, %s kept literally",
    ]
    failed = "[tblog: message formatting failed: TypeError: %d format: a real number is required"
    assert got[6] == f"bad %d {failed}, not str; args=('not a number',)]"
    assert got[7] == f"bad %d %d {failed}, not str; args=('x', 1)]"
    assert got[8] == "mapping 1"
