"""The compiled steps (``tblog._speedups``) are the Python steps, faster: same snapshots, same
bytes.

``TinybirdLoggingHandler.emit`` and ``EventBuilder.encode_batch`` each keep their pure-Python
reference; these tests run both on the same input and hold them equal: the snapshot and its
size, and every NDJSON byte of a batch (event ids drawn from one reset counter), over generated
records with hostile text, every kind of extra value, bound and static fields, the redactor on
and off, sampling, exceptions, odd times and lines over the size limit.  The module is built by
``pip install -e .`` (``hatch_build.py``); ``TBLOG_PURE_PYTHON=1`` turns it off, which the last
test checks in a child process.  ``make test`` also runs the event tests with it off.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tblog
from tblog._event import build as build_module
from tblog._event import tb_logs
from tblog._event.build import EventBuilder
from tblog._event.compiled import SPEEDUPS
from tblog._event.gate import RATE_KEY
from tblog._event.redact import Redactor
from tblog._event.snapshot import CTX_ATTR, FMT_KEY, ExcInfo, snapshot, snapshot_size

from .eventsapi import EventsAPI

PURE = os.environ.get("TBLOG_PURE_PYTHON", "").strip() not in ("", "0")
needs_module = pytest.mark.skipif(SPEEDUPS is None, reason="tblog._speedups is turned off")
URL = "http://127.0.0.1:9"  # nothing is sent: puts are recorded
TOKEN = "p.speedups-token-0123456789abcdef"


def test_the_install_built_the_module() -> None:
    """``pip install -e .`` compiles it (the Makefile's venvs); only TBLOG_PURE_PYTHON hides it."""
    if PURE:
        assert SPEEDUPS is None
    else:
        assert SPEEDUPS is not None, "tblog._speedups was not built: see hatch_build.py"


# -- the sender's loop ---------------------------------------------------------------------


@pytest.fixture
def own_ids(monkeypatch: pytest.MonkeyPatch) -> tb_logs._EventIds:
    """Event ids of this test's own (other tests' sender threads draw from the shared ones)."""
    mine = tb_logs._EventIds()
    monkeypatch.setattr(tb_logs, "ids", mine)
    monkeypatch.setattr(build_module, "ids", mine)
    return mine


def _both(builder: EventBuilder, snaps: list[Any], ids: tb_logs._EventIds) -> list[Any]:
    """``encode_batch`` of ``snaps`` by the Python loop, then by the compiled one, each from
    empty caches and the same first event id (or the exception each raised)."""
    results = []
    for compiled in (False, True):
        builder.compiled = compiled
        builder._heads.clear()
        builder._head_bytes.clear()
        builder._extras.clear()
        ids.counter = itertools.count(0xFFFFFFF0)  # crosses a block of 256 ids at once
        try:
            results.append(builder.encode_batch(list(snaps)))
        except Exception as exc:  # the same failure on both paths
            results.append(type(exc))
    return results


def _builder(redact: bool, static: dict[str, Any], limit: int = 1 << 20) -> EventBuilder:
    return EventBuilder(
        app_name="app",
        environment="test",
        schema="tblog",
        static_fields=static,
        max_event_bytes=limit,
        redactor=Redactor() if redact else None,
    )


class _Text:
    def __str__(self) -> str:
        return "text of an object"


_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            'quote " backslash \\ slash / nul \x00 \x1f \x7f',
            "line\nbreak\r\ttab\b\f",
            "é ü 漢字 😀 \u2028 \u2029",
            "lone \ud800 surrogate",
            "password=hunter22 and token=abcdefgh12345678",
            "card 4111 1111 1111 1111",
            "%s %d %(x)s",
            "x" * 2000,
        ]
    ),
)
_SCALAR = st.one_of(
    _TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_VALUE = st.one_of(
    _SCALAR,
    st.lists(_SCALAR, max_size=3),
    st.dictionaries(st.text(max_size=5), _SCALAR, max_size=3),
    st.sampled_from(
        [b"bytes \xff", dt.datetime(2026, 1, 2, 3, 4, 5), _Text(), {1: "int key"}, (1, "two")]
    ),
)
_KEY = st.one_of(
    st.sampled_from(
        ["request_id", "attempt", "user", "password", "api_key", "a b", "é", "x\ny", 'q"k']
    ),
    st.text(min_size=1, max_size=6),
)
_ARGS = st.one_of(
    st.none(),
    st.just(()),
    st.tuples(_SCALAR),
    st.tuples(st.integers(), _TEXT),
    st.just(({"x": 1},)),
)


@st.composite
def _records(draw: st.DrawFn) -> dict[str, Any]:
    msg = draw(st.one_of(_TEXT, st.sampled_from(["user %s logged in", "n=%d", "%s"])))
    args = draw(_ARGS)
    if args is not None and len(args) == 1 and isinstance(args[0], dict):
        msg = "x=%(x)s"
    record = logging.LogRecord(
        draw(st.sampled_from(["app", "app.db", "ü"])),
        draw(st.sampled_from([10, 20, 30, 40, 50, 25])),
        draw(st.sampled_from(["/srv/app.py", "/srv/ü.py"])),
        draw(st.sampled_from([1, 7, 300, 99999])),
        msg,
        args,
        None,
    )
    if draw(st.booleans()):
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
    for key, value in draw(st.dictionaries(_KEY, _VALUE, max_size=4)).items():
        if key not in record.__dict__:
            record.__dict__[key] = value
    record.created = draw(
        st.one_of(
            st.floats(min_value=0, max_value=4e9),
            st.sampled_from([1.7e9 + 0.0000005, 0.0, 1e12, -1.5, 1e20, float("nan")]),
        )
    )
    snap, _ = snapshot(record, 0, None)
    bound = draw(st.sampled_from([{}, {}, {"tenant": "t1"}, {"password": "p4ssw0rd!"}]))
    trace = draw(
        st.sampled_from([("", ""), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")])
    )
    snap["exc_text"] = (*trace, bound)
    if draw(st.integers(0, 9)) == 0:
        snap[RATE_KEY] = 0.5
    if draw(st.integers(0, 19)) == 0:
        snap[FMT_KEY] = "formatted"
    return snap


@needs_module
@settings(
    max_examples=300,
    deadline=None,
    # the fixture only swaps in a private id source; each example resets its counter
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    snaps=st.lists(_records(), min_size=1, max_size=12),
    redact=st.booleans(),
    static=st.sampled_from([{}, {"service": "api", "password": "hunter22"}]),
    limit=st.sampled_from([1 << 20, 700]),
    repeat=st.integers(1, 3),
)
def test_the_compiled_loop_writes_the_bytes_and_sizes_of_the_python_steps(
    snaps: list[dict[str, Any]],
    redact: bool,
    static: dict[str, Any],
    limit: int,
    repeat: int,
    own_ids: tb_logs._EventIds,
) -> None:
    builder = _builder(redact, static, limit)
    # what the channel subtracts for the snapshots it takes
    sizes = SPEEDUPS.snapshot_sizes(snaps, ExcInfo, snapshot_size)
    assert sizes == sum(map(snapshot_size, snaps))
    # repeats: consecutive records of one call site share a head and an extra key list
    python, compiled = _both(builder, [s for s in snaps for _ in range(repeat)], own_ids)
    native, reference = _lines(compiled), _lines(python)
    if native != reference and not isinstance(native, type) and not isinstance(reference, type):
        pairs = zip(native[0], reference[0], strict=False)
        first = next(((a, b) for a, b in pairs if a != b), None)
        assert first is None  # the first that differs
    assert native == reference
    assert compiled == python  # and the same chunks


def _lines(result: Any) -> Any:
    """A batch's lines one by one (a readable difference), or the exception's type."""
    if isinstance(result, type):
        return result
    chunks, count = result
    return [line for chunk in chunks for line in chunk.split(b"\n")], count


@needs_module
@pytest.mark.parametrize("static", [{}, {"service": "api"}])
def test_secrets_are_redacted_on_both_paths(
    static: dict[str, Any], own_ids: tb_logs._EventIds
) -> None:
    """What the redactor must see (a secret's name, a long text, a flagged message, bound
    fields) reaches it from the compiled loop too, and comes out the same."""
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("plain", {"password": "QZX1"}, {}),
        ("plain", {"api_key": 770077, "n": 1}, {}),
        ("plain", {"note": "Bearer QZX3QZX3QZX3QZX3"}, {}),
        ("login password=QZX4QZX4", {}, {}),
        ("plain", {}, {"token": "QZX5"}),
        ("plain", {"ok": "short"}, {}),
    ]
    snaps = []
    for msg, extra, bound in cases:
        record = logging.LogRecord("app", 20, "/srv/app.py", 3, msg, None, None)
        record.__dict__.update(extra)
        snap = snapshot(record, 0, None)[0]
        snap["exc_text"] = ("", "", bound)
        snaps.append(snap)
    python, compiled = _both(_builder(True, static), snaps, own_ids)
    assert compiled == python
    text = b"".join(compiled[0])
    for secret in (b"QZX", b"770077"):
        assert secret not in text, secret
    assert b'"ok":"short"' in text


@needs_module
def test_a_common_batch_takes_no_python_step_per_event(own_ids: tb_logs._EventIds) -> None:
    """The benchmark's record goes through the compiled loop without calling back (and the
    bytes are the Python loop's)."""
    builder = _builder(True, {})
    log = [
        logging.LogRecord("app", 20, "/srv/app.py", 7, "user %s logged in", (42,), None)
        for _ in range(100)
    ]
    snaps = []
    for i, record in enumerate(log):
        record.__dict__.update({"request_id": "r-1234", "attempt": i, "ratio": i / 7})
        snaps.append(snapshot(record, 0, None)[0])
    calls = []
    real = builder._encode_one

    def counted(snap: Any) -> bytes | None:
        calls.append(snap)
        return real(snap)

    builder._encode_one = counted  # type: ignore[method-assign]
    python, compiled = _both(builder, snaps, own_ids)
    assert compiled == python
    assert calls == snaps[:0], "the Python loop's own path only, never the general one"


# -- the caller's snapshot -----------------------------------------------------------------


Seen = list[tuple[Any, int]]


@pytest.fixture
def recorded() -> Iterator[tuple[tblog.TinybirdLoggingHandler, Seen]]:
    """A handler whose puts are recorded (snapshot, size), not buffered."""
    handler = tblog.TinybirdLoggingHandler(URL, TOKEN, "app", warn_stderr=False)
    seen: Seen = []

    def put(item: Any, size: int, pid_hint: int | None = None) -> bool:
        seen.append((item, size))
        return True

    handler._put = put  # type: ignore[method-assign]
    yield handler, seen
    handler.close()


@needs_module
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    msg=_TEXT,
    args=_ARGS,
    extra=st.dictionaries(_KEY, _VALUE, max_size=3),
    ctx=st.sampled_from([None, ("t" * 32, "s" * 16, {"k": 1})]),
    exc=st.booleans(),
)
def test_the_compiled_snapshot_is_the_python_snapshot(
    msg: str,
    args: Any,
    extra: dict[str, Any],
    ctx: Any,
    exc: bool,
    recorded: tuple[tblog.TinybirdLoggingHandler, Seen],
) -> None:
    handler, seen = recorded
    seen.clear()
    if exc:  # the general snapshot, on both paths
        try:
            raise KeyError("boom")
        except KeyError:
            exc_info = sys.exc_info()
    if args is not None and len(args) == 1 and isinstance(args[0], dict):
        msg = "x=%(x)s"
    record = logging.LogRecord("app", 20, "/srv/app.py", 3, msg, args, exc_info if exc else None)
    for key, value in extra.items():
        record.__dict__.setdefault(key, value)
    if ctx is not None:
        record.__dict__[CTX_ATTR] = ctx
    before = dict(record.__dict__)
    for compiled in (None, SPEEDUPS.snapshot):
        handler._compiled = compiled
        handler.emit(record)
    (python, python_size), (native, native_size) = seen
    assert native == python and native_size == python_size
    assert native_size == handler._channel.measure(native)
    assert native is not python and record.__dict__ == before  # copies; the record untouched


@needs_module
def test_a_buffered_snapshot_is_not_walked_by_the_garbage_collector(
    recorded: tuple[tblog.TinybirdLoggingHandler, Seen],
) -> None:
    handler, seen = recorded
    record = logging.LogRecord("app", 20, "/srv/app.py", 3, "n=%s", (1,), None)
    record.__dict__["items"] = [1, 2]  # a container inside: still no cycle through it
    for compiled in (None, SPEEDUPS.snapshot):
        handler._compiled = compiled
        handler.emit(record)
    (python, _), (native, _) = seen
    assert gc.is_tracked(python) and not gc.is_tracked(native)
    assert native["items"] is record.__dict__["items"]


# -- without it -----------------------------------------------------------------------------


@pytest.mark.slow
def test_tblog_pure_python_turns_it_off_and_events_still_arrive() -> None:
    child = (
        "import logging, sys, tblog\n"
        "from tblog._event.compiled import SPEEDUPS\n"
        "assert SPEEDUPS is None, SPEEDUPS\n"
        "h = tblog.TinybirdLoggingHandler(sys.argv[1], sys.argv[2], 'pure')\n"
        "log = logging.getLogger('pure'); log.addHandler(h); log.setLevel(logging.INFO)\n"
        "for i in range(500): log.info('user %s logged in', i, extra={'attempt': i})\n"
        "assert h.flush(10), h.stats()\n"
        "h.close()\n"
    )
    api = EventsAPI(token=TOKEN)
    try:
        env = {**os.environ, "TBLOG_PURE_PYTHON": "1"}
        proc = subprocess.run(
            [sys.executable, "-c", child, api.url, TOKEN],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        rows = api.rows()
    finally:
        api.close()
    assert sorted(r["extra"]["attempt"] for r in rows) == list(range(500))
    assert {r["message"] for r in rows} == {f"user {i} logged in" for i in range(500)}
