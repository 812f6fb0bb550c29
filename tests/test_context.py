"""Trace context and bound fields: per thread, per asyncio task, restored on exit."""

from __future__ import annotations

import asyncio
import threading

import pytest

import tblog


def test_trace_generates_and_restores() -> None:
    assert tblog.get_trace_id() == ""
    with tblog.trace() as outer:
        assert len(outer.trace_id) == 32 and tblog.get_trace_id() == outer.trace_id
        assert len(tblog.get_span_id()) == 16
        with tblog.trace("inner", "span"):
            assert (tblog.get_trace_id(), tblog.get_span_id()) == ("inner", "span")
        assert tblog.get_trace_id() == outer.trace_id
    assert tblog.get_trace_id() == "" and tblog.get_span_id() == ""


def test_trace_restores_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), tblog.trace("t"):
        raise RuntimeError
    assert tblog.get_trace_id() == ""


def test_trace_as_decorator_gives_each_call_its_own_id() -> None:
    seen: list[str] = []

    @tblog.trace()
    def work() -> None:
        seen.append(tblog.get_trace_id())

    work()
    work()
    assert len(set(seen)) == 2 and all(seen)

    @tblog.trace("fixed")
    async def awork() -> str:
        await asyncio.sleep(0)
        return tblog.get_trace_id()

    assert asyncio.run(awork()) == "fixed"
    assert tblog.get_trace_id() == ""


def test_set_trace_id_and_clear() -> None:
    tblog.set_trace_id("abc")
    try:
        assert tblog.get_trace_id() == "abc"
    finally:
        tblog.set_trace_id(None)
    assert tblog.get_trace_id() == ""
    with pytest.raises(TypeError):
        tblog.set_trace_id(123)  # type: ignore[arg-type]


def test_bind_unbind_bound() -> None:
    tblog.bind(a=1, b=2)
    try:
        with tblog.bound(b=3, c=4) as fields:
            assert dict(fields) == {"a": 1, "b": 3, "c": 4}
        assert dict(tblog.get_bound()) == {"a": 1, "b": 2}
        tblog.unbind("a", "missing")
        assert dict(tblog.get_bound()) == {"b": 2}
    finally:
        tblog.unbind("a", "b")
    assert dict(tblog.get_bound()) == {}


def test_bound_fields_are_an_immutable_snapshot() -> None:
    with tblog.bound(x=1):
        snap = tblog.get_bound()
        tblog.bind(y=2)
        assert dict(snap) == {"x": 1}
        with pytest.raises(TypeError):
            snap["z"] = 3  # type: ignore[index]


def test_threads_do_not_share_context() -> None:
    barrier = threading.Barrier(8)
    results: dict[int, tuple[str, str]] = {}

    def worker(i: int) -> None:
        with tblog.trace(f"t{i}"), tblog.bound(worker=i):
            barrier.wait()
            results[i] = (tblog.get_trace_id(), str(tblog.get_bound()["worker"]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: (f"t{i}", str(i)) for i in range(8)}


def test_asyncio_tasks_do_not_share_context() -> None:
    async def task(i: int) -> tuple[str, int]:
        with tblog.trace(f"task{i}"), tblog.bound(i=i):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return tblog.get_trace_id(), tblog.get_bound()["i"]

    async def main() -> list[tuple[str, int]]:
        return await asyncio.gather(*(task(i) for i in range(20)))

    assert asyncio.run(main()) == [(f"task{i}", i) for i in range(20)]
