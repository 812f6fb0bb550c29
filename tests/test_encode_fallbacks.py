"""``tblog/_event/encode.py`` off its fast paths: without orjson, values orjson refuses, the
last resort of ``shrink_event``, cuts inside multi-byte characters, gzip without isal, and
``join_lines``' chunks."""

from __future__ import annotations

import copy
import gzip
import json
import math
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tblog._event import encode
from tblog._event.encode import (
    LINES_PER_CHUNK,
    MAX_DEPTH,
    TRUNCATION_MARK,
    dumps,
    gzip_bytes,
    gzip_lines,
    join_lines,
    jsonable,
    shrink_event,
    truncate_text,
)

MARK = TRUNCATION_MARK.encode()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class ArrayLike:
    """What numpy arrays and pandas objects look like to ``json_default``: a ``tolist``."""

    def tolist(self) -> list[Any]:
        return [1, 2.5, float("nan"), 2**70]


class BadKey:
    def __str__(self) -> str:
        return "bad key"

    def __hash__(self) -> int:
        return 7


def _circular() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["me"] = value
    return value


def _circular_list() -> list[Any]:
    value: list[Any] = [0]
    value.append(value)
    return value


def _nested(depth: int) -> list[Any]:
    outer: list[Any] = []
    cur = outer
    for _ in range(depth - 1):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return outer


def _depth(value: Any) -> int:
    n = 0
    while isinstance(value, list) and value:
        value, n = value[0], n + 1
    return n


@pytest.fixture(params=["orjson", "stdlib"])
def json_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with orjson, and as on an interpreter without it."""
    if request.param == "stdlib":
        monkeypatch.setattr(encode, "_orjson", None)
    else:
        assert encode._orjson is not None, "orjson is a dependency: the fast path must exist"
    return str(request.param)


# value -> the exact line, on either path
REFUSED_BY_ORJSON: list[tuple[str, Any, bytes]] = [
    (
        "non-str keys",
        {(1, 2): "tuple", 3: "int", None: "none", True: "bool", b"k\xff": "bytes", BadKey(): "o"},
        '{"(1, 2)":"tuple","3":"int","null":"none","true":"bool","k\ufffd":"bytes",'
        '"bad key":"o"}'.encode(),
    ),
    ("huge ints", [2**64, -(2**63) - 1, 2**64 - 1, -(2**63)],
     b'["18446744073709551616","-9223372036854775809",18446744073709551615,'
     b"-9223372036854775808]"),
    ("non-finite floats", [float("nan"), float("inf"), -float("inf"), 1.5],
     b"[null,null,null,1.5]"),
    ("lone surrogate", "a\ud800b\udfffc", '"a\ufffdb\ufffdc"'.encode()),
    ("surrogate key", {"k\udc80": "v"}, '{"k\ufffd":"v"}'.encode()),
    ("circular", _circular(), b'{"a":1,"me":"<circular reference>"}'),
    ("circular list", _circular_list(), b'[0,"<circular reference>"]'),
    ("unprintable", Unprintable(), b'"<unrepresentable Unprintable object>"'),
    ("unprintable in a dict", {"x": [Unprintable()]},
     b'{"x":["<unrepresentable Unprintable object>"]}'),
    ("array-like", ArrayLike(), b'[1,2.5,null,"1180591620717411303424"]'),
    ("bytes and sets", {"b": b"\x00\xff", "s": frozenset([1])},
     '{"b":"\\u0000\ufffd","s":[1]}'.encode()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "line"),
    [(v, line) for _, v, line in REFUSED_BY_ORJSON],
    ids=[name for name, _, _ in REFUSED_BY_ORJSON],
)
def test_what_orjson_refuses_still_becomes_one_valid_line(
    json_path: str, value: Any, line: bytes
) -> None:
    got = dumps(value)
    assert json.loads(got) == json.loads(line)
    assert b"\n" not in got
    got.decode("utf-8")  # strict: no surrogate made it through


def test_very_deep_nesting_is_cut_at_max_depth(json_path: str) -> None:
    # Deeper than orjson's own limit (254): it refuses, the sanitising pass cuts at MAX_DEPTH.
    cut = json.loads(dumps(_nested(300)))
    assert _depth(cut) == MAX_DEPTH
    inner = cut
    for _ in range(MAX_DEPTH):
        inner = inner[0]
    assert inner == "<max depth exceeded>"


def test_without_orjson_shallow_values_are_not_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "_orjson", None)
    assert json.loads(dumps(_nested(MAX_DEPTH))) == _nested(MAX_DEPTH)
    assert dumps({"k": "é", "n": None}) == '{"k":"é","n":null}'.encode()  # UTF-8, compact


def test_the_stdlib_path_is_taken_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = encode._dumps_std

    def spy(value: Any) -> bytes:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(encode, "_dumps_std", spy)
    dumps({"a": 1})
    assert calls == []  # orjson took it
    monkeypatch.setattr(encode, "_orjson", None)
    assert dumps({"a": 1}) == b'{"a":1}'
    assert calls == [{"a": 1}]


def test_the_last_resort_is_the_text_of_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # If the sanitised value still cannot be encoded, the value's text is the line.
    real = encode._dumps_std
    failed: list[Any] = []

    def once_refusing(value: Any) -> bytes:
        if not failed:
            failed.append(value)
            raise ValueError("refused")
        return real(value)

    monkeypatch.setattr(encode, "_orjson", None)
    monkeypatch.setattr(encode, "_dumps_std", once_refusing)
    assert dumps({"k": [1, 2]}) == b"\"{'k': [1, 2]}\""
    assert dumps(Unprintable()) == b'"<unrepresentable Unprintable object>"'


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=())),  # lone surrogates included
    st.binary(max_size=20),
)
_keys = st.one_of(st.text(), st.integers(), st.none(), st.booleans(), st.binary(max_size=5))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_keys, inner, max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_both_paths_agree_and_never_fail(value: Any) -> None:
    before = repr(value)
    fast = dumps(value)
    saved = encode._orjson
    encode._orjson = None  # (not monkeypatch: hypothesis runs this many times per fixture)
    try:
        slow = dumps(value)
    finally:
        encode._orjson = saved
    assert repr(value) == before  # not mutated
    assert b"\n" not in fast and b"\n" not in slow
    assert json.loads(fast) == json.loads(slow) == json.loads(json.dumps(jsonable(value)))
    fast.decode("utf-8")
    slow.decode("utf-8")


# -- truncate_text ------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "€", "😀", "\u0301"])  # 2, 3, 4 bytes; a combining mark
def test_truncate_text_never_splits_a_character(char: str) -> None:
    text = "ab" + char * 50
    size = len(text.encode())
    for max_bytes in range(len(MARK), size):
        cut = truncate_text(text, max_bytes)
        raw = cut.encode("utf-8")  # strict: a split character would have left a surrogate
        assert len(raw) <= max_bytes
        assert cut.endswith(TRUNCATION_MARK)
        kept = cut.removesuffix(TRUNCATION_MARK)
        assert text.startswith(kept) and "\ufffd" not in kept
        # as much as fits: one more character would not have
        assert len(raw) + len(text[len(kept)].encode()) > max_bytes
    assert truncate_text(text, size) == text


def test_truncate_text_below_the_mark_and_with_surrogates() -> None:
    assert truncate_text("x" * 100, 5) == TRUNCATION_MARK  # nothing of the text fits
    assert truncate_text("ok", 2) == "ok"
    # a lone surrogate counts as the "?" it is encoded as, and never reaches the output
    cut = truncate_text("\ud800" * 40, 20)
    assert cut == "?" * (20 - len(MARK)) + TRUNCATION_MARK


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_truncate_text_property(text: str, max_bytes: int) -> None:
    cut = truncate_text(text, max_bytes)
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        assert cut == text
        return
    out = cut.encode("utf-8")
    assert len(out) <= max(max_bytes, len(MARK))
    assert cut.endswith(TRUNCATION_MARK)
    assert raw.startswith(cut.removesuffix(TRUNCATION_MARK).encode("utf-8"))


# -- shrink_event --------------------------------------------------------------------------


def _event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "level": "ERROR",
        "logger": "app.module",
        "app_name": "app",
        "event_id": "0" * 32,
        "lineno": 42,
        "message": "m",
    }
    event.update(fields)
    return event


def test_shrink_event_cuts_the_largest_field_first() -> None:
    event = _event(message="m" * 5000, extra={"small": "s" * 100})
    original = copy.deepcopy(event)
    line = shrink_event(event, dumps(event), 2048)
    assert line is not None and len(line) <= 2048
    got = json.loads(line)
    assert got["truncated"] is True
    assert got["message"].endswith(TRUNCATION_MARK) and got["extra"] == {"small": "s" * 100}
    assert event == original  # the caller's event is not modified


def test_shrink_event_last_resort_keeps_the_identifying_fields() -> None:
    # Seventeen big extra values: sixteen rounds of cutting cannot make it fit, so only the
    # identifying fields, a short message and the exception's type are kept.
    extra = {f"field_{i:02d}": "x" * 400 for i in range(17)}
    event = _event(
        message="the message " * 200,
        exception={"type": "ValueError", "message": "boom", "stacktrace": "trace\n" * 500},
        extra=extra,
        tags=["a", "b"],
        custom="dropped: a str outside the kept fields",
    )
    original = copy.deepcopy(event)
    line = shrink_event(event, dumps(event), 1024)
    assert line is not None and len(line) <= 1024
    got = json.loads(line)
    assert set(got) == {
        "timestamp", "level", "logger", "app_name", "event_id", "lineno", "message",
        "exception", "truncated",
    }  # fmt: skip
    assert got["exception"] == {"type": "ValueError"}
    assert got["truncated"] is True and got["lineno"] == 42
    assert got["message"].startswith("the message") and got["message"].endswith(TRUNCATION_MARK)
    assert len(got["message"].encode()) <= 1024 // 4
    assert event == original


def test_shrink_event_gives_up_when_even_the_identifying_fields_do_not_fit() -> None:
    # Text fields are cut, but a field name is not, nor a number.
    event = _event(logger="l" * 3000, message="m" * 3000)
    event["n" * 2000] = 1
    assert shrink_event(event, dumps(event), 1024) is None


def test_shrink_event_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "_orjson", None)
    event = _event(message="é" * 3000, extra={"bad": "\ud800" * 10, "n": 2**70})
    line = shrink_event(event, dumps(event), 1500)
    assert line is not None and len(line) <= 1500
    got = json.loads(line.decode("utf-8"))
    assert got["message"].endswith(TRUNCATION_MARK) and set(got["message"][:-12]) == {"é"}


# -- gzip_lines, gzip_bytes ---------------------------------------------------------------


@pytest.fixture(params=["isal", "zlib"])
def gzip_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":
        monkeypatch.setattr(encode, "_fast_gzip", None)
    elif encode._fast_gzip is None:
        pytest.skip("python-isal (the speedups extra) is not installed")
    return str(request.param)


def test_gzip_lines_round_trip(gzip_backend: str) -> None:
    chunks = [b'{"a":1}\n{"a":2}', b"", "é€😀".encode(), bytes(range(256)) * 100]
    body = gzip_lines(chunks)
    assert body[:2] == b"\x1f\x8b"  # a gzip stream, as Content-Encoding: gzip says
    assert gzip.decompress(body) == b"".join(c + b"\n" for c in chunks)
    assert zlib.decompress(body, 31) == gzip.decompress(body)
    assert gzip.decompress(gzip_lines(chunks, b"")) == b"".join(chunks)
    assert gzip.decompress(gzip_lines([])) == b""
    assert gzip.decompress(gzip_bytes(b"payload")) == b"payload"


def test_zlib_is_used_when_isal_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[int] = []
    real = zlib.compressobj

    def spy(*args: Any) -> Any:
        used.append(args[0])
        return real(*args)

    monkeypatch.setattr(encode, "_fast_gzip", None)
    monkeypatch.setattr(zlib, "compressobj", spy)
    assert gzip.decompress(gzip_lines([b"x"], level=1)) == b"x\n"
    assert used == [1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.sampled_from([b"\n", b""]))
def test_gzip_lines_property(chunks: list[bytes], end: bytes) -> None:
    expected = b"".join(c + end for c in chunks)
    saved = encode._fast_gzip
    try:
        for backend in {saved, None}:
            encode._fast_gzip = backend
            assert gzip.decompress(gzip_lines(chunks, end)) == expected
    finally:
        encode._fast_gzip = saved


# -- join_lines ----------------------------------------------------------------------------


def test_join_lines_chunks_of_lines_per_chunk() -> None:
    lines: list[bytes | None] = [f'{{"i":{i}}}'.encode() for i in range(LINES_PER_CHUNK * 2 + 1)]
    lines.insert(5, None)
    chunks, count = join_lines(lines)
    assert count == LINES_PER_CHUNK * 2 + 1
    assert [c.count(b"\n") + 1 for c in chunks] == [LINES_PER_CHUNK, LINES_PER_CHUNK, 1]
    assert chunks[2] == b'{"i":64}'
    assert join_lines([]) == ([], 0)
    assert join_lines([None, None]) == ([], 0)


@given(
    st.lists(
        st.one_of(st.none(), st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b)),
        max_size=200,
    )
)
def test_join_lines_property(lines: list[bytes | None]) -> None:
    kept = [line for line in lines if line is not None]
    chunks, count = join_lines(lines)
    assert count == len(kept)
    assert len(chunks) == math.ceil(len(kept) / LINES_PER_CHUNK)
    assert all(c.count(b"\n") < LINES_PER_CHUNK for c in chunks)
    assert [line for c in chunks for line in c.split(b"\n")] == kept
    if kept:
        assert gzip.decompress(gzip_lines(chunks)) == b"\n".join(kept) + b"\n"
