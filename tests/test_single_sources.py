"""One source of truth, held by tests: the snapshot size, the ``tb_logs`` row, option defaults.

* The size a producer hands ``Channel.put`` on the caller's thread is what the sender later
  subtracts (``channel.measure`` of the same item), on every path: the handler's inline fast
  path and its general ``snapshot()``, the queue handler's listener, the structlog processor.
  A drift would let ``max_buffer_bytes`` creep away from what is buffered.
* Every producer of ``tb_logs`` rows writes the columns of ``datasources/tb_logs.datasource``
  and nothing else, and the handler's fast path (``EventBuilder.encode_batch``) writes the same
  row as its general path.
* The handlers' and the processor's option defaults are ``Options``'s.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import queue
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonjsonlogger.json import JsonFormatter

import tblog
from tblog._config import Options
from tblog._event import tb_logs
from tblog._event.snapshot import snapshot_size
from tblog.structlog import TinybirdProcessor

URL = "http://127.0.0.1:9"  # nothing is sent: every put is recorded, not buffered
TOKEN = "p.single-sources-token-0123456789"
TB_LOGS = Path(tblog.__file__).parent / "datasources" / "tb_logs.datasource"

Recorded = list[tuple[int, int]]


def _recorder(channel: Any) -> tuple[Recorded, Callable[..., bool]]:
    """A stand-in for ``channel.put``: records (size given, size measured) of each item."""
    seen: Recorded = []

    def put(item: Any, size: int, pid_hint: int | None = None) -> bool:
        seen.append((size, channel.measure(item)))
        return True

    return seen, put


class _Loud:
    def __str__(self) -> str:
        return "loud object"


class _Custom(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "custom: " + super().format(record)


_ARGS = st.one_of(
    st.just(()),
    st.tuples(st.text(max_size=40)),
    st.tuples(st.integers()),
    st.tuples(st.floats(allow_nan=False)),
    st.tuples(st.booleans()),
    st.tuples(st.just(_Loud())),
    st.tuples(st.text(max_size=10), st.integers()),
    st.just(({"k": "v"},)),
)
_EXTRA = st.dictionaries(
    st.sampled_from(["user", "request_id", "attempt", "_private", "payload", "tags"]),
    st.one_of(st.text(max_size=30), st.integers(), st.lists(st.integers(), max_size=3)),
    max_size=4,
)
_FORMATTERS: dict[str, Callable[[], logging.Formatter | None]] = {
    "none": lambda: None,
    "plain": lambda: logging.Formatter("%(levelname)s %(message)s"),
    "custom": lambda: _Custom("%(message)s"),
    "json": lambda: JsonFormatter("%(message)s"),
}


def _render(logger: Any, method_name: str, event_dict: Any) -> str:
    return str(event_dict)


def _structlog_logger(processor: TinybirdProcessor) -> Any:
    """A structlog logger whose chain is ``processor``, then a renderer."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[processor, _render],
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )


def _message_for(args: tuple[Any, ...]) -> str:
    return "event " + " ".join(["%s"] * len(args)) if args else "a message with no argument"


@pytest.fixture
def recorded_handler() -> Iterator[tuple[tblog.TinybirdLoggingHandler, Recorded]]:
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "single", warn_stderr=False)
    seen, put = _recorder(handler._channel)
    handler._put = put  # type: ignore[method-assign]
    yield handler, seen
    handler.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    args=_ARGS,
    extra=_EXTRA,
    formatter=st.sampled_from(sorted(_FORMATTERS)),
    with_exc=st.booleans(),
    with_stack=st.booleans(),
)
def test_the_handler_puts_the_size_the_sender_measures(
    recorded_handler: tuple[tblog.TinybirdLoggingHandler, Recorded],
    args: tuple[Any, ...],
    extra: dict[str, Any],
    formatter: str,
    with_exc: bool,
    with_stack: bool,
) -> None:
    handler, seen = recorded_handler
    handler.setFormatter(_FORMATTERS[formatter]())  # type: ignore[arg-type]
    log = logging.getLogger("tests.single_sources.handler")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        seen.clear()
        if with_exc:
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception(_message_for(args), *args, extra=extra, stack_info=with_stack)
        else:
            log.warning(_message_for(args), *args, extra=extra, stack_info=with_stack)
    finally:
        log.removeHandler(handler)
    assert len(seen) == 1
    given_size, measured = seen[0]
    assert given_size == measured


@pytest.mark.parametrize("schema", ["tblog", "tinybird-python-sdk"])
def test_both_schemas_put_the_size_the_sender_measures(schema: str) -> None:
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "single", schema=schema, warn_stderr=False)
    seen, put = _recorder(handler._channel)
    handler._put = put  # type: ignore[method-assign]
    log = logging.getLogger(f"tests.single_sources.{schema}")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("user %s in %s", "ann", "eu", extra={"tenant": "t1"})
        log.warning("one %d", 42)
        log.warning("plain")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert len(seen) == 3
    assert all(given_size == measured for given_size, measured in seen), seen


def test_the_queue_handler_puts_the_size_the_sender_measures() -> None:
    q: queue.Queue[Any] = queue.Queue()
    qh = tblog.TinybirdLoggingQueueHandler(q, URL, TOKEN, "single", warn_stderr=False)
    channel = qh.handler._channel
    seen, put = _recorder(channel)
    channel.put = put  # type: ignore[method-assign]
    log = logging.getLogger("tests.single_sources.queue")
    log.propagate = False
    log.addHandler(qh)
    try:
        log.warning("through the queue %s", "x", extra={"tenant": "t1"})
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("failed %d", 3)
        assert qh.flush(5)
    finally:
        log.removeHandler(qh)
        qh.close()
    assert len(seen) == 2
    assert all(given_size == measured for given_size, measured in seen), seen


def test_the_structlog_processor_puts_the_size_the_sender_measures() -> None:
    processor = TinybirdProcessor(URL, TOKEN, "single", warn_stderr=False)
    seen, put = _recorder(processor._channel)
    processor._channel.put = put  # type: ignore[method-assign]
    log = _structlog_logger(processor)
    log.info("plain", user=42)
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        log.exception("failed", attempt=2)
    processor.close()
    assert len(seen) == 2
    assert all(given_size == measured for given_size, measured in seen), seen


def test_snapshot_size_is_the_measure_of_the_handler_channel() -> None:
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "single", warn_stderr=False)
    try:
        assert handler._channel.measure is snapshot_size
    finally:
        handler.close()


# -- the tb_logs row -------------------------------------------------------------------


def _datasource_fields() -> set[str]:
    """The top-level JSON fields ``tb_logs.datasource``'s jsonpaths read."""
    paths = re.findall(r"`json:\$\.([A-Za-z_]+)", TB_LOGS.read_text())
    return set(paths)


def test_the_row_module_names_exactly_the_columns_of_the_datasource() -> None:
    declared = set(tb_logs.HEAD_FIELDS) | set(tb_logs.TAIL_FIELDS) | set(tb_logs.OPTIONAL_FIELDS)
    assert declared == _datasource_fields()
    assert len(declared) == len(tb_logs.HEAD_FIELDS + tb_logs.TAIL_FIELDS + tb_logs.OPTIONAL_FIELDS)


def _log_through(handler: logging.Handler, emit: Callable[[logging.Logger], None]) -> None:
    """Run ``emit`` on a logger whose only handler is ``handler``."""
    log = logging.getLogger("tests.single_sources.rows")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)


def _emit_all(log: logging.Logger) -> None:
    log.info("plain row %s", "a", extra={"tenant": "t1"})
    log.warning("with stack", stack_info=True)
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("with exception")


def _check_row(row: dict[str, Any]) -> None:
    keys = set(row)
    required = set(tb_logs.HEAD_FIELDS) | set(tb_logs.TAIL_FIELDS)
    assert required <= keys, required - keys
    assert keys <= required | set(tb_logs.OPTIONAL_FIELDS), keys - required


def test_every_producer_writes_the_columns_of_tb_logs_and_nothing_else() -> None:
    rows: list[dict[str, Any]] = []
    # the handler, both paths: its builder on snapshots taken as emit takes them
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "single", warn_stderr=False)
    items: list[Any] = []
    handler._put = lambda item, size, pid=None: items.append(item) or True  # type: ignore[method-assign]
    _log_through(handler, _emit_all)
    builder = handler._builder  # the EventBuilder behind the channel
    rows += [builder.build(item) for item in items]
    chunks, count = builder.encode_batch(items)
    assert count == len(items)
    rows += [json.loads(line) for chunk in chunks for line in chunk.split(b"\n")]
    handler.close()
    # TinybirdJsonFormatter
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(tblog.TinybirdJsonFormatter(app_name="single"))
    _log_through(stream, _emit_all)
    rows += [json.loads(line) for line in out.getvalue().splitlines()]
    # the structlog processor
    processor = TinybirdProcessor(URL, TOKEN, "single", warn_stderr=False)
    snaps: list[Any] = []
    processor._channel.put = lambda item, size, pid=None: snaps.append(item) or True  # type: ignore[method-assign]
    log = _structlog_logger(processor)
    log.info("structlog row", user=1)
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("structlog exception")
    rows += [processor.build(snap) for snap in snaps]
    processor.close()
    assert len(rows) == 3 + 3 + 3 + 2
    for row in rows:
        _check_row(row)


@settings(max_examples=100, deadline=None)
@given(args=_ARGS, extra=_EXTRA, level=st.sampled_from([10, 20, 30, 40, 50]))
def test_the_fast_path_writes_the_row_the_general_path_writes(
    args: tuple[Any, ...], extra: dict[str, Any], level: int
) -> None:
    handler = tblog.TinybirdLoggingHandler(
        URL, TOKEN, "single", static_fields={"region": "eu"}, warn_stderr=False
    )
    items: list[Any] = []
    handler._put = lambda item, size, pid=None: items.append(item) or True  # type: ignore[method-assign]
    log = logging.getLogger("tests.single_sources.fast")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    with tblog.trace("trace-1"), tblog.bound(user_id=7):
        log.log(level, _message_for(args), *args, extra=extra)
    log.removeHandler(handler)
    builder = handler._builder
    handler.close()
    chunks, count = builder.encode_batch(items)
    assert count == 1
    fast = json.loads(chunks[0])
    general = json.loads(builder._encode_one(items[0]))
    assert fast.pop("event_id") != general.pop("event_id")
    assert fast == general


# -- option defaults -------------------------------------------------------------------


def _options_defaults() -> dict[str, Any]:
    defaults = {}
    for f in dataclasses.fields(Options):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
    return defaults


def test_the_handler_defaults_are_the_options_defaults() -> None:
    options = _options_defaults()
    params = inspect.signature(tblog.TinybirdLoggingHandler.__init__).parameters
    shared = [name for name in params if name in options]
    assert len(shared) >= 20, shared
    for name in shared:
        default = params[name].default
        if name in ("redact_keys", "redact_patterns") and default is None:
            continue  # None: the built-in lists, which Options holds as ()
        assert default == options[name], name


def test_the_processor_and_queue_handler_take_the_same_options() -> None:
    # Both pass **options through to the same Options: built with none, they hold its defaults.
    processor = TinybirdProcessor(URL, TOKEN, "single", warn_stderr=False)
    q: queue.Queue[Any] = queue.Queue()
    qh = tblog.TinybirdLoggingQueueHandler(q, URL, TOKEN, "single", warn_stderr=False)
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "single", warn_stderr=False)
    try:
        expected = dataclasses.replace(Options(), warn_stderr=False)
        for producer in (processor._channel, qh.handler._channel, handler._channel):
            got = producer.options
            for name in _options_defaults():
                if name in ("redact_keys", "redact_patterns", "static_fields"):
                    continue
                assert getattr(got, name) == getattr(expected, name), name
    finally:
        processor.close()
        qh.close()
        handler.close()
