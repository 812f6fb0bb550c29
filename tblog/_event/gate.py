"""Sampling, rate limiting and dedup of records, decided on the caller's thread (``Gate``).

A handler (or the structlog processor) configured with ``sample=`` or ``dedup_limit=`` asks
its ``Gate`` about every record before it takes the snapshot:

* **Sampling** (``sample={"app.db": {"DEBUG": 0.1}}``): the rate of a (logger, level) is the
  one given for that level under the longest logger prefix that names the level (``""`` is
  every logger); resolved once per (logger name, level number) and cached.  A level no prefix
  names is never sampled, so ERROR and above are kept unless a rate is given for them.  A
  record kept at a rate below 1 carries it (``RATE_KEY``, the ``sample_rate`` column), so
  ``sum(1 / sample_rate)`` estimates the true count; a record dropped is counted
  (``sampled``).  No lock: a dict lookup and ``random.random()``.
* **Rate limit and dedup** (``dedup_limit=N``, ``dedup_window=seconds``): records with the
  same (logger, message template before %-formatting, level) beyond the first N of a window
  are not shipped but counted (``collapsed``); when the window is over (seen on the next
  record of that key, on any record once a window has passed, at ``drain()``, which
  ``flush()`` and ``close()`` call, and when the key is evicted from the bounded table) one
  summary record is shipped for them: ``"repeated K times: <template>"``, same logger and
  level, with ``repeat_count``, ``first_ts`` and ``last_ts`` as fields.  Nothing is
  suppressed without its summary.  This path takes a lock.

The gate never raises into ``emit`` on its own account: it runs inside ``emit``'s ``try``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from tblog import _diag
from tblog._event.snapshot import CTX_ATTR
from tblog._event.tb_logs import iso_utc

#: The private snapshot key of a record kept by sampling at a rate below 1 (its rate).
RATE_KEY = "_tblog_rate"
#: Keys of the dedup table at most (least recently seen evicted, with its summary).
MAX_KEYS = 1000
_RATE_CACHE_MAX = 4096
_NO_CONTEXT: tuple[str, str, Mapping[str, Any]] = ("", "", {})

#: (logger prefix, {level number: rate}), longest prefix first.
Rules = tuple[tuple[str, Mapping[int, float]], ...]


def rules_of(sample: Mapping[str, Mapping[int, float]]) -> Rules:
    """``sample`` (validated by ``tblog._config``) ordered for ``rate_of``."""
    return tuple(sorted(sample.items(), key=lambda item: len(item[0]), reverse=True))


def rate_of(rules: Rules, name: str, levelno: int) -> float:
    """The sampling rate of records of logger ``name`` at ``levelno`` (1.0: all kept)."""
    for prefix, levels in rules:
        if levelno in levels and (
            not prefix or name == prefix or (name.startswith(prefix) and name[len(prefix)] == ".")
        ):
            return levels[levelno]
    return 1.0


class _Run:
    """One dedup key's window: how many records it saw, and what it held back."""

    __slots__ = ("count", "first", "func", "held", "last", "lineno", "pathname", "rate", "start")

    def __init__(self, start: float) -> None:
        self.start = start  # the gate's clock when the window began
        self.count = 1  # records of the window (shipped and held back)
        self.held = 0  # held back since the last summary
        self.first = self.last = 0.0  # record.created of the first and last held back
        self.pathname, self.lineno, self.func = "", 0, ""
        self.rate = 1.0


_Pending = tuple[tuple[str, str, int], _Run]


class Gate:
    """What one producer ships of the records it is given (see the module docstring).

    ``admit(record)`` is 0.0 for a record not to ship, else the sampling rate it ships
    with (1.0: not sampled; the producer writes a lower one into its own copy under
    ``RATE_KEY``).  ``ship(record)`` ships a summary record (it must not come back through
    ``admit``);
    ``rand`` and ``clock`` are injectable for tests (``random.random``, ``time.monotonic``).
    """

    def __init__(
        self,
        *,
        sample: Mapping[str, Mapping[int, float]],
        dedup_limit: int,
        dedup_window: float,
        ship: Callable[[logging.LogRecord], None],
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.rules = rules_of(sample)
        self.limit = dedup_limit if dedup_window > 0 else 0
        self.window = float(dedup_window)
        self.max_keys = max_keys
        self._ship = ship
        self._rand = rand
        self._clock = clock
        self._rates: dict[tuple[str, int], float] = {}
        self._sampled = itertools.count()  # next() is atomic: no lock on the sampling path
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict[tuple[str, str, int], _Run] = collections.OrderedDict()
        self._next_sweep = 0.0
        self.collapsed = 0  # records held back (under the lock)
        self.summaries = 0  # summary records shipped
        #: ``record`` (or a copy carrying its sampling rate) to ship, or None: not shipped.
        self.admit: Callable[[logging.LogRecord], float] = (
            self._admit if self.limit else self._sampling_only()
        )
        _gates.add(self)

    @property
    def sampled(self) -> int:
        """Records sampling did not keep."""
        return int(repr(self._sampled)[6:-1])  # "count(N)": the next value is the count

    # -- the caller's thread -----------------------------------------------------------

    def rate(self, name: str, levelno: int) -> float:
        """The sampling rate of (``name``, ``levelno``), cached."""
        key = (name, levelno)
        rate = self._rates.get(key)
        if rate is None:
            rate = rate_of(self.rules, name, levelno)
            if len(self._rates) >= _RATE_CACHE_MAX:
                self._rates.clear()
            self._rates[key] = rate
        return rate

    def keep(self, rate: float) -> bool:
        """Whether a record of sampling rate ``rate`` < 1 is kept (counted when not)."""
        if self._rand() < rate:
            return True
        next(self._sampled)
        return False

    def _sampling_only(self) -> Callable[[logging.LogRecord], float]:
        """``admit`` when only sampling is configured: a closure, no attribute lookups."""
        rates, resolve, keep = self._rates, self.rate, self.keep

        def admit(record: logging.LogRecord) -> float:
            rate = rates.get((record.name, record.levelno))
            if rate is None:
                rate = resolve(record.name, record.levelno)
            if rate >= 1.0:
                return 1.0
            return rate if keep(rate) else 0.0

        return admit

    def _admit(self, record: logging.LogRecord) -> float:
        rate = 1.0
        if self.rules:
            rate = self.rate(record.name, record.levelno)
            if rate < 1.0 and not self.keep(rate):
                return 0.0
        msg = record.msg
        if self.limit and type(msg) is str:
            r = record
            site = (r.levelno, r.created, r.pathname, r.lineno, r.funcName)
            if not self.held(r.name, msg, *site, rate):
                return 0.0
        return rate

    def held(  # noqa: PLR0917 - a record's fields, without building an object for them
        self,
        name: str,
        template: str,
        levelno: int,
        created: float,
        pathname: str,
        lineno: int,
        func: str | None,
        rate: float,
    ) -> bool:
        """Count a record of key (``name``, ``template``, ``levelno``); False: hold it back.

        ``created`` is the record's time; the call site and ``rate`` (its sampling rate) go
        into the summary of the records held back.
        """
        key = (name, template, levelno)
        now = self._clock()
        due: list[_Pending] = []
        ship = True
        with self._lock:
            runs = self._runs
            run = runs.get(key)
            if run is None:
                run = runs[key] = _Run(now)
                if len(runs) > self.max_keys:
                    old_key, old = runs.popitem(last=False)
                    if old.held:
                        due.append((old_key, old))
            else:
                runs.move_to_end(key)
                if now - run.start >= self.window:  # the window is over: a new one begins
                    if run.held:
                        due.append((key, run))
                    run = runs[key] = _Run(now)
                else:
                    run.count += 1
                    if run.count > self.limit:
                        ship = False
                        if not run.held:
                            run.first = created
                            run.pathname, run.lineno = pathname, lineno
                            run.func, run.rate = func or "", rate
                        run.held += 1
                        run.last = created
                        self.collapsed += 1
            if now >= self._next_sweep:
                self._next_sweep = now + self.window
                due += self._expired(now, key)
        for item in due:
            self._summarize(*item)
        return ship

    def _expired(self, now: float, skip: tuple[str, str, int]) -> list[_Pending]:
        """Forget the keys whose window is over; those that held records back are due a
        summary (under the lock).  A key's next record begins a window of its own."""
        over = [k for k, r in self._runs.items() if k != skip and now - r.start >= self.window]
        due: list[_Pending] = []
        for key in over:
            run = self._runs.pop(key)
            if run.held:
                due.append((key, run))
        return due

    # -- summaries ---------------------------------------------------------------------

    def drain(self) -> None:
        """Ship a summary for every key that holds records back now (flush, close, exit).

        The windows go on: records of a key still over its limit are held back again, and
        summarized again.
        """
        due: list[_Pending] = []
        with self._lock:
            for key, run in self._runs.items():
                if run.held:
                    due.append((key, _copy_run(run)))
                    run.held = 0
        for item in due:
            self._summarize(*item)

    def _summarize(self, key: tuple[str, str, int], run: _Run) -> None:
        name, template, levelno = key
        record = logging.LogRecord(
            name, levelno, run.pathname, run.lineno,
            f"repeated {run.held} {'time' if run.held == 1 else 'times'}: {template}",
            None, None, run.func,
        )  # fmt: skip
        record.created = run.last
        record.msecs = (run.last - int(run.last)) * 1000
        attrs = record.__dict__
        attrs["repeat_count"] = run.held
        attrs["first_ts"] = iso_utc(run.first)
        attrs["last_ts"] = iso_utc(run.last)
        attrs["dedup_window"] = self.window
        attrs[CTX_ATTR] = _NO_CONTEXT  # not the trace of whichever thread ships it
        if run.rate < 1.0:
            attrs[RATE_KEY] = run.rate
        self.summaries += 1
        self._ship(record)


def _copy_run(run: _Run) -> _Run:
    copy = _Run(run.start)
    for slot in _Run.__slots__:
        setattr(copy, slot, getattr(run, slot))
    return copy


_gates: weakref.WeakSet[Gate] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child starts with free locks and no held-back records of its parent's (the
    parent summarizes those): otherwise both would."""
    for gate in list(_gates):
        gate._lock = threading.Lock()
        gate._runs = collections.OrderedDict()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def counters(gate: Gate | None) -> dict[str, int]:
    """A producer's ``stats()`` keys of sampling and dedup (zeros without a gate)."""
    if gate is None:
        return {"sampled": 0, "collapsed": 0, "summaries": 0}
    # summaries: the "repeated K times" events shipped
    return {"sampled": gate.sampled, "collapsed": gate.collapsed, "summaries": gate.summaries}


def drain_quietly(gate: Gate | None) -> None:
    """``gate.drain()`` before a flush or a close, which go on whatever it raises."""
    if gate is not None:
        try:
            gate.drain()
        except Exception:  # noqa: BLE001 - flush and close go on
            _diag.diag(logging.ERROR, "gate-drain", "tblog: a dedup summary was lost")


def drain_all(seconds: float = 0.0) -> None:
    """Every live gate's summaries, before the exit delivery (``tblog._delivery.lifecycle``)."""
    for gate in list(_gates):
        try:
            gate.drain()
        except Exception:  # noqa: BLE001, S112 - one gate must not keep the others from it
            continue
