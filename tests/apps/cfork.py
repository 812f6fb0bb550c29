"""Forks the way uWSGI does without ``--py-call-osafterfork``: a C-level ``fork()`` that runs
none of Python's at-fork hooks, after the sender thread ran in the parent.

``python cfork.py URL TOKEN CHILDREN N``: the parent logs N records (``who=parent-pre``),
flushes, forks CHILDREN children with ``fork(2)`` called directly; each child logs N records
on a thread with the ident of the parent's sender thread (reused, or made to look so; see
``busy_threads``) and N on another new thread, flushes and exits (with ``race`` as a fifth
argument, it first logs N records on each of 8 threads started at once).  The parent logs N
more, waits for its children and flushes.  Exit status 0 when every flush returned True.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import sys
import threading

import tblog
import tblog.handlers
from tblog._delivery.sender import get_sender

url, token, children, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
racing = sys.argv[5:] == ["race"]
RACERS = 8
log = logging.getLogger("cfork")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(tblog.TinybirdLoggingHandler(api_url=url, token=token, app_name="cfork"))


def burst(who: str) -> None:
    for i in range(n):
        log.info("record", extra={"who": who, "i": i, "tid": tblog.new_trace_id()})


burst("parent-pre")
assert tblog.flush(timeout=10)
ident = get_sender().thread_ident
assert ident is not None
sender_ident: int = ident
real_get_ident = tblog.handlers._get_ident


def reused_burst(who: str) -> None:
    """Log as a thread with the ident of the parent's sender thread: this one, when the ident
    was reused, or else as if it were (alive, it keeps the child's sender from that ident)."""
    if threading.get_ident() != sender_ident:
        # Made to look so only while no live thread of this child has that ident: the child's
        # own sender thread may get it (glibc reuses the parent's thread stacks), and then no
        # other thread can have it.
        def looks_reused() -> int:
            child_sender = get_sender().thread_ident
            return real_get_ident() if child_sender == sender_ident else sender_ident

        tblog.handlers._get_ident = looks_reused
    try:
        burst(who)
    finally:
        tblog.handlers._get_ident = real_get_ident


def race(gate: threading.Barrier, who: str) -> None:
    gate.wait()
    burst(who)


libc_fork = ctypes.PyDLL(None).fork  # PyDLL: the GIL stays held across the call
pids = []
for c in range(children):
    pid = libc_fork()
    if pid == 0:
        status = 3
        faulthandler.dump_traceback_later(8, exit=True)  # a hung child fails, loudly
        try:
            if racing:  # the first records of the child come from many threads at once
                gate = threading.Barrier(RACERS)
                racers = [
                    threading.Thread(target=race, args=(gate, f"child{c}-racer{k}"))
                    for k in range(RACERS)
                ]
                for t in racers:
                    t.start()
                for t in racers:
                    t.join()
            t = threading.Thread(target=reused_burst, args=(f"child{c}-reused",))
            t.start()  # first: glibc often gives it the ident of the parent's sender thread
            t.join()
            t = threading.Thread(target=burst, args=(f"child{c}-thread",))
            t.start()
            t.join()
            status = 0 if tblog.flush(timeout=10) else 4
        finally:
            os._exit(status)
    pids.append(pid)
burst("parent-post")
bad = 0
for pid in pids:
    _, st = os.waitpid(pid, 0)
    bad += os.waitstatus_to_exitcode(st) != 0
ok = tblog.flush(timeout=10)
sys.exit(0 if ok and not bad else 1)
