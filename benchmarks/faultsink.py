"""A fault-injecting Events API on 127.0.0.1 for ``benchmarks.faults``, run in its own process.

``POST /v0/events?name=DS`` takes an NDJSON body (gzip or not) and, when the datasource is
healthy, records each row's ``event_id`` and answers ``202 {"successful_rows": n}``.  Each
datasource can be switched into one fault at a time (``PUT /_fault?name=DS`` with a JSON
``Fault``):

* ``status``: answer ``status`` with ``headers`` (a 503 burst, a 429 storm, a 403 refusal);
* ``reset``: read the request, then reset the TCP connection (RST, no answer);
* ``slow``: read the request, wait ``delay`` seconds, then answer ``status``;
* ``too_large``: answer 413 to bodies above ``max_bytes`` (uncompressed), accept the rest;
* ``black_hole``: read the request and never answer; the connection is held until the
  client gives up and closes it (also when the fault has cleared meanwhile).

A refused, reset, late or unanswered request never stores its rows, so a row that arrives
twice can only come from the client sending a delivered batch again.  ``GET /_stats?name=DS``
returns the rows stored, the distinct event ids among them and the answers given, by kind.

Why a process of its own: the report times every ``logger.info`` call on the caller's thread;
a server in the same interpreter would take the GIL to parse and decompress each request and
its work would show up as the caller's latency.  ``FaultSink`` starts it and drives it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from benchmarks.sink import JSONHandler

MODES = ("healthy", "status", "reset", "slow", "too_large", "black_hole")
HOLD_LIMIT = 120.0  # a black hole lets go of a connection after this long at the latest


@dataclass
class Fault:
    """How the server treats the requests of one datasource."""

    mode: str = "healthy"
    status: int = 503  # the answer of "status" and "slow"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # "slow": seconds before the answer
    max_bytes: int = 0  # "too_large": uncompressed bodies above this get 413


@dataclass
class _Datasource:
    fault: Fault = field(default_factory=Fault)
    rows: int = 0
    event_ids: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)


class _State:
    """Every datasource's fault and tallies, behind one lock (handlers run on many threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.datasources: dict[str, _Datasource] = {}

    def get(self, name: str) -> _Datasource:
        with self.lock:
            return self.datasources.setdefault(name, _Datasource())

    def set_fault(self, name: str, fault: Fault) -> None:
        if fault.mode not in MODES:
            raise ValueError(f"unknown fault mode {fault.mode!r}")
        with self.lock:
            self.datasources.setdefault(name, _Datasource()).fault = fault

    def answered(self, ds: _Datasource, how: str) -> None:
        with self.lock:
            ds.answers[how] += 1

    def store(self, ds: _Datasource, ids: list[str]) -> None:
        with self.lock:
            ds.rows += len(ids)
            ds.event_ids.update(ids)


def _event_ids(body: bytes) -> list[str]:
    return [str(json.loads(line).get("event_id")) for line in body.splitlines() if line.strip()]


def make_server(port: int = 0) -> ThreadingHTTPServer:
    state = _State()

    class Handler(JSONHandler):
        def _query(self) -> tuple[str, str]:
            url = urlsplit(self.path)
            return url.path, parse_qs(url.query).get("name", [""])[-1]

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:  # noqa: N802 - http.server names it so
            path, name = self._query()
            if path != "/_stats":
                self._answer(404, {"error": "not found"}, {})
                return
            ds = state.get(name)
            with state.lock:
                body = {"rows": ds.rows, "unique": len(ds.event_ids), "answers": dict(ds.answers)}
            self._answer(200, body, {})

        def do_PUT(self) -> None:  # noqa: N802
            path, name = self._query()
            if path != "/_fault":
                self._answer(404, {"error": "not found"}, {})
                return
            state.set_fault(name, Fault(**json.loads(self._body())))
            self._answer(200, {"ok": True}, {})

        def do_POST(self) -> None:  # noqa: N802
            path, name = self._query()
            body = self._body()
            if path != "/v0/events" or not name:
                self._answer(404, {"error": "not found"}, {})
                return
            ds = state.get(name)
            fault = ds.fault
            if fault.mode == "reset":
                state.answered(ds, "reset")
                self._reset()
                return
            if fault.mode == "black_hole":
                state.answered(ds, "no answer")
                self._hold()
                return
            if fault.mode == "slow":
                state.answered(ds, f"late {fault.status}")
                time.sleep(fault.delay)
                with contextlib.suppress(OSError):  # the client has usually given up by now
                    self._answer(fault.status, {"error": "injected slow answer"}, fault.headers)
                return
            if fault.mode == "status":
                state.answered(ds, str(fault.status))
                self._answer(fault.status, {"error": "injected fault"}, fault.headers)
                return
            raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
            if fault.mode == "too_large" and len(raw) > fault.max_bytes:
                state.answered(ds, "413")
                self._answer(413, {"error": "request body too large"}, {})
                return
            ids = _event_ids(raw)
            state.store(ds, ids)  # stored before the answer: a client that has it sees the rows
            state.answered(ds, "202")
            self._answer(202, {"successful_rows": len(ids), "quarantined_rows": 0}, {})

        def _hold(self) -> None:
            """Never answer: keep the connection until the client closes it (or HOLD_LIMIT)."""
            self.close_connection = True
            sock = self.connection
            with contextlib.suppress(OSError):  # a timeout or a reset ends the hold too
                sock.settimeout(HOLD_LIMIT)
                while sock.recv(65536):  # whatever else the client sends is ignored
                    pass

        def _reset(self) -> None:
            """Close with SO_LINGER 0: the kernel sends RST instead of an orderly FIN."""
            self.close_connection = True
            sock = self.connection
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()  # the socket's file object holds the descriptor open
                sock.close()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


class FaultSink:
    """The server in a child process, and the calls that switch its faults and read its tallies."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.faultsink"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.control = requests.Session()

    def set_fault(self, name: str, fault: Fault | None = None) -> None:
        """Switch datasource ``name`` into ``fault`` (None: healthy again)."""
        payload = asdict(fault or Fault())
        answer = self.control.put(
            f"{self.url}/_fault", params={"name": name}, json=payload, timeout=10
        )
        answer.raise_for_status()

    def stats(self, name: str) -> dict[str, Any]:
        """``rows`` stored, ``unique`` event ids among them, ``answers`` by kind."""
        answer = self.control.get(f"{self.url}/_stats", params={"name": name}, timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def close(self) -> None:
        self.control.close()
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> FaultSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faultsink")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = make_server(args.port)
    print(server.server_port, flush=True)
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
