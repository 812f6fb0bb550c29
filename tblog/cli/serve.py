"""``tblog local`` (the Tinybird-compatible server on chDB) and ``tblog demo``.

A data dir serves one server at a time: a second ``tblog local`` on it fails in one line
with exit status 2, as does one whose saved tokens cannot be read.  The admin token is
the one saved in the data dir (a new one on the first run) unless ``--token`` is given.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from tblog._closing import Serving
from tblog._version import __version__
from tblog.cli.output import err
from tblog.local.datadir import DataDirInUseError
from tblog.local.tokens import TokenFileError

__all__ = ["add_demo", "add_local", "serve_until_stopped"]


#: The server's limits: (option, type, default, LocalServer keyword, help).  A 0 given for
#: ``max_server_memory`` or ``timeout`` is passed on as None (no limit of tblog's own).
_LIMITS: tuple[tuple[str, type[float], float, str, str], ...] = (
    ("--query-timeout", float, 10.0, "query_timeout",
     "seconds one /v0/sql query may run (10)"),
    ("--query-max-memory", int, 2 * 1024**3, "query_max_memory",
     "bytes of memory one /v0/sql query may use (2 GiB)"),
    ("--query-max-rows", int, 1_000_000, "query_max_rows",
     "rows one /v0/sql answer may hold; more is an error (1000000)"),
    ("--query-max-bytes", int, 256 * 1024**2, "query_max_bytes",
     "bytes one /v0/sql answer may hold; more is an error (256 MiB)"),
    ("--max-server-memory", int, 0, "max_server_memory",
     "bytes the embedded ClickHouse may use in all (0: half of this machine's memory)"),
    ("--max-body-bytes", int, 10 * 1024**2, "max_request_bytes",
     "bytes one request body may hold, as sent (10 MiB; more is a 413)"),
    ("--max-line-bytes", int, 10 * 1024**2, "max_line_bytes",
     "bytes one NDJSON row may hold; a longer one is quarantined (10 MiB)"),
    ("--max-decoded-bytes", int, 128 * 1024**2, "max_decoded_bytes",
     "bytes one /v0/events body may hold once gunzipped (128 MiB; 413)"),
    ("--timeout", float, 30.0, "timeout",
     "seconds a client has to send a request; then it is dropped (30)"),
    ("--max-connections", int, 32, "max_connections",
     "connections served at once; more get a quick 503 (32)"),
)  # fmt: skip
_NONE_WHEN_ZERO = ("max_server_memory", "timeout")
#: A data dir that cannot be served (tblog.local.datadir and .tokens define them).
_DATA_DIR_ERRORS = (DataDirInUseError, TokenFileError)


def _dest(flag: str) -> str:
    """The attribute argparse stores the value of ``flag`` under."""
    return flag[2:].replace("-", "_")


def _needs_chdb(command: str, exc: ImportError) -> int:
    """Say that ``tblog command`` needs the local extra; the exit status (2)."""
    err(f"{command} needs chDB: pip install 'tblog[local]' ({exc})")
    return 2


def add_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("local", help="run a Tinybird-compatible API on embedded ClickHouse")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=7181, help="port (7181; 0 picks a free one)")
    p.add_argument(
        "--data-dir", default=".tblog-local",
        help="where the data and the tokens live (one tblog local at a time)",
    )  # fmt: skip
    p.add_argument("--datasources", help="folder of .datasource files (tblog's by default)")
    p.add_argument(
        "--token",
        help="admin token to accept (default: the one saved in --data-dir, else a new one)",
    )
    p.add_argument("--rate-limit", type=int, help="answer 429 above N event requests/s")
    for flag, kind, default, _keyword, text in _LIMITS:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides loopback and --host (repeatable; "
        "'*' for any); others get 421, against DNS rebinding",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser Origin allowed to call the API, with CORS (repeatable); "
        "requests from other origins get 403",
    )
    p.set_defaults(func=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    try:
        from tblog.local.server import LocalServer  # noqa: PLC0415 - needs the local extra
    except ImportError as exc:
        return _needs_chdb("local", exc)
    limits = {keyword: getattr(args, _dest(flag)) for flag, _t, _d, keyword, _h in _LIMITS}
    for keyword in _NONE_WHEN_ZERO:
        limits[keyword] = limits[keyword] or None
    try:
        server = LocalServer(
            args.data_dir,
            host=args.host,
            port=args.port,
            datasources=args.datasources,
            admin_token=args.token,
            allowed_hosts=args.allowed_host,
            allowed_origins=args.allowed_origin,
            rate_limit=args.rate_limit,
            **limits,
        )
    except ImportError as exc:  # chDB is imported when the store opens
        return _needs_chdb("local", exc)
    except _DATA_DIR_ERRORS as exc:  # another server holds it; its tokens file is broken
        err(str(exc))
        return 2
    except OSError as exc:
        err(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    print(f"tblog local {__version__}: serving {server.url}", flush=True)
    for name, error in server.load_errors:
        err(f"skipped {name}: {error}")
    print(f"  data dir:    {Path(args.data_dir).resolve()}")
    print(f"  datasources: {', '.join(sorted(server.store.datasources))}")
    print(f"  admin token: {server.admin_token}")
    print(f"  web view:    {server.url}/ (give it a read token, or the admin token)")
    print(f"  try: export TB_HOST={server.url} TB_TOKEN={server.admin_token}", flush=True)
    return serve_until_stopped(server, "tblog local")


def serve_until_stopped(server: Serving, name: str) -> int:
    """Serve on this thread until Ctrl-C or SIGTERM, then close the server (exit status 0)."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"\n{name}: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0


# -- demo -----------------------------------------------------------------------------


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="ship a realistic burst of logs to a local server")
    p.add_argument("--events", type=int, default=20_000, help="log records to ship (20000)")
    p.add_argument("--threads", type=int, default=4, help="threads logging at once (4)")
    p.add_argument("--keep", help="keep the data in this folder instead of a temporary one")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from tblog.cli.demo import run_demo  # noqa: PLC0415 - needs the local extra
    except ImportError as exc:
        return _needs_chdb("demo", exc)
    try:
        if args.keep:
            return run_demo(args.events, args.threads, args.keep)
        with tempfile.TemporaryDirectory(prefix="tblog-demo-") as tmp:
            return run_demo(args.events, args.threads, tmp)
    except ImportError as exc:  # chDB is imported when the local server opens its store
        return _needs_chdb("demo", exc)
    except _DATA_DIR_ERRORS as exc:  # --keep DIR that a tblog local serves
        err(str(exc))
        return 2
